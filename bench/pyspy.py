"""Summarize py-spy's raw (folded) output: where the patching thread spends its time.

Each line of the folded format is `frame;frame;...;frame COUNT`. Only the samples of the
thread that runs the patch (stacks through `run_patch`) are counted. The table leaves out the
frames of the command line, click and threading wrappers, because they include everything.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_WRAPPERS = re.compile(
    r"^(<module> \(suture|main \(suture/cli|patch \(suture/cli|_run \(suture/cli|"
    r"Thread\.|Command\.|Group\.|Context\.|run_with_deadline|_run\.<locals>|"
    r"Event\.wait|Condition\.wait|run_patch \()"
)
_LINE = re.compile(r":\d+\)$")
# Functions named in the analysis of RESULTS.md, reported even when they are not in the top list.
SELECTED = (
    "_place_conffile", "MergedFileSystem._read_members", "Staging.add_file", "_unpack_payload",
    "GzipFile.write", "_decompress", "PackagesIndex.__init__", "MergedFileSystem.from_image",
    "copy_verified", "fetch_packages", "fetch_index",
)


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    inclusive: list[tuple[str, int]]
    own: list[tuple[str, int]]
    phases: list[tuple[str, int]]
    selected: list[tuple[str, int]]


def _function(frame: str) -> str:
    """`name (path:line)` becomes `name (path)`, so the lines of one function add up."""
    return _LINE.sub(")", frame.strip())


def _phase(frames: list[str]) -> str:
    """Name the step a sample belongs to: the two calls below `patch_platform` or `run_patch`."""
    names = [frame.split(" (")[0] for frame in frames]
    for parent in ("patch_platform", "run_patch"):
        if parent in names:
            start = names.index(parent) + 1
            return " > ".join(names[start:start + 2]) or parent
    return names[-1]


def summarize(folded: Path, anchor: str = "run_patch (", top: int = 18) -> ProfileSummary:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    selected: Counter[str] = Counter()
    samples = 0
    for line in folded.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or anchor not in stack:
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        start = next(i for i, frame in enumerate(frames) if frame.startswith(anchor))
        frames = frames[start:]
        samples += count
        for name in set(frames):
            if not _WRAPPERS.match(name):
                inclusive[name] += count
        own[frames[-1]] += count
        phases[_phase(frames)] += count
        names = {frame.split(" (")[0] for frame in frames}
        for name in SELECTED:
            if name in names:
                selected[name] += count
    return ProfileSummary(samples, inclusive.most_common(top), own.most_common(top // 2),
                          phases.most_common(12), [(n, selected[n]) for n in SELECTED])


def markdown(summary: ProfileSummary, interval_hz: int) -> str:
    if summary.samples == 0:
        return "(no samples of the patching thread)\n"
    lines = [
        f"{summary.samples} samples of the patching thread at {interval_hz} Hz "
        f"(~ {summary.samples / interval_hz:.1f} s, idle time included).",
        "",
        "| step | time | share |",
        "| --- | ---: | ---: |",
    ]
    for name, count in summary.phases:
        lines.append(f"| `{name}` | {count / interval_hz:.2f} s "
                     f"| {100 * count / summary.samples:.0f}% |")
    lines += ["", "| selected function | inclusive | share |", "| --- | ---: | ---: |"]
    for name, count in summary.selected:
        lines.append(f"| `{name}` | {count / interval_hz:.2f} s "
                     f"| {100 * count / summary.samples:.0f}% |")
    lines += ["", "| inclusive | share | function |", "| ---: | ---: | --- |"]
    for name, count in summary.inclusive:
        lines.append(f"| {count / interval_hz:.2f} s | {100 * count / summary.samples:.0f}% "
                     f"| `{name}` |")
    lines += ["", "| own time | share | function |", "| ---: | ---: | --- |"]
    for name, count in summary.own:
        lines.append(f"| {count / interval_hz:.2f} s | {100 * count / summary.samples:.0f}% "
                     f"| `{name}` |")
    return "\n".join(lines) + "\n"
