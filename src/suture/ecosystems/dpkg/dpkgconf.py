"""dpkg settings the image carries that change where and whether payload paths are written.

- Diversions (`/var/lib/dpkg/diversions`, written by dpkg-divert): triples of lines, the
  diverted path, the path it is diverted to, and the package that owns the diversion (`:` for
  a local one). Every package except the owner writes the diverted path at the new place.
- Path filters (`path-exclude`, `path-include` in `/etc/dpkg/dpkg.cfg` and
  `/etc/dpkg/dpkg.cfg.d/*`), which slim images use to drop documentation. They follow
  `filter_should_skip` in dpkg 1.21's src/main/filters.c: the last matching glob wins, `*`
  also matches `/`, and an excluded directory or symlink is kept when an include pattern's
  literal prefix matches it. Checked with `dpkg --path-exclude`: skipped paths stay in the
  `.list` file but are not written, and a generated `.md5sums` leaves them out.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from suture.ecosystems.dpkg.mergedview import MergedView
from suture.image.fsview import FileType

DIVERSIONS_PATH = "/var/lib/dpkg/diversions"
DPKG_CFG_PATH = "/etc/dpkg/dpkg.cfg"
DPKG_CFG_DIR = "/etc/dpkg/dpkg.cfg.d"
# dpkg reads only configuration fragments whose names use these characters.
_VALID_FRAGMENT_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_OPTION_RE = re.compile(r"^(path-exclude|path-include)(?:\s*=\s*|\s+)(\S.*?)\s*$")


def read_diversions(view: MergedView) -> dict[str, tuple[str, str]]:
    """Return diverted path -> (divert-to path, owning package) from dpkg's diversions file."""
    data = view.read(DIVERSIONS_PATH)
    if not data:
        return {}
    lines = data.decode("utf-8", errors="replace").splitlines()
    diversions: dict[str, tuple[str, str]] = {}
    for index in range(0, len(lines) - 2, 3):
        diversions[lines[index]] = (lines[index + 1], lines[index + 2])
    return diversions


def divert(path: str, package: str, diversions: Mapping[str, tuple[str, str]]) -> str:
    """Return where `package` writes `path`: the diverted-to path unless it owns the diversion."""
    diversion = diversions.get(path)
    if diversion is None or diversion[1] == package:
        return path
    return diversion[0]



@dataclass(frozen=True)
class PathFilter:
    """One `path-include` (include true) or `path-exclude` glob."""

    include: bool
    pattern: str


def read_path_filters(view: MergedView) -> list[PathFilter]:
    """Return the image's dpkg path filters in the order dpkg applies them."""
    texts: list[bytes] = []
    main = view.read(DPKG_CFG_PATH)
    if main is not None:
        texts.append(main)
    for name in view.listdir(DPKG_CFG_DIR):
        if _VALID_FRAGMENT_RE.match(name):
            data = view.read(f"{DPKG_CFG_DIR}/{name}")
            if data is not None:
                texts.append(data)
    filters: list[PathFilter] = []
    for text in texts:
        for raw in text.decode("utf-8", errors="replace").splitlines():
            line = raw.strip()
            if line.startswith("--"):
                line = line[2:]
            match = _OPTION_RE.match(line)
            if match is not None:
                filters.append(PathFilter(match[1] == "path-include", match[2]))
    return filters


def should_skip(filters: Sequence[PathFilter], path: str, kind: FileType) -> bool:
    """Return whether dpkg would leave the payload entry at `path` unwritten."""
    skip = False
    for item in filters:
        if fnmatch.fnmatchcase(path, item.pattern):
            skip = not item.include
    if skip and kind in (FileType.DIRECTORY, FileType.SYMLINK):
        for item in filters:
            if not item.include:
                continue
            prefix = re.split(r"[*?\[\\]", item.pattern, maxsplit=1)[0].rstrip("/")
            if path[: len(prefix)] == prefix:
                return False
    return skip
