"""Summarize py-spy's raw (folded) output: where the patching thread spends its time.

Each line of the folded format is `frame;frame;...;frame COUNT`. Only the samples of the
thread that runs the patch (stacks through `run_patch`) are counted; frames of the command
line, click and threading wrappers are left out of the table because they include everything.
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


@dataclass(frozen=True)
class ProfileSummary:
    samples: int
    inclusive: list[tuple[str, int]]
    own: list[tuple[str, int]]


def _function(frame: str) -> str:
    """`name (path:line)` becomes `name (path)`, so the lines of one function add up."""
    return _LINE.sub(")", frame.strip())


def summarize(folded: Path, anchor: str = "run_patch (", top: int = 18) -> ProfileSummary:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
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
    return ProfileSummary(samples, inclusive.most_common(top), own.most_common(top // 2))


def markdown(summary: ProfileSummary, interval_hz: int) -> str:
    if summary.samples == 0:
        return "(no samples of the patching thread)\n"
    lines = [
        f"{summary.samples} samples of the patching thread at {interval_hz} Hz "
        f"(~ {summary.samples / interval_hz:.1f} s, idle time included).",
        "",
        "| inclusive | share | function |",
        "| ---: | ---: | --- |",
    ]
    for name, count in summary.inclusive:
        lines.append(f"| {count / interval_hz:.2f} s | {100 * count / summary.samples:.0f}% "
                     f"| `{name}` |")
    lines += ["", "| own time | share | function |", "| ---: | ---: | --- |"]
    for name, count in summary.own:
        lines.append(f"| {count / interval_hz:.2f} s | {100 * count / summary.samples:.0f}% "
                     f"| `{name}` |")
    return "\n".join(lines) + "\n"
