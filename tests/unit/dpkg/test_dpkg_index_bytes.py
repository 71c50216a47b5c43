"""PackagesIndex over bytes or a memory map returns the same candidates as over text."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

from suture.ecosystems.dpkg.index import PackagesIndex

PACKAGES = """\
Package: rocket
Version: 1.0
Architecture: amd64
Provides: launcher
Description: goes up \N{ROCKET}
 second line

Package: rocket
Version: 2.0
Architecture: amd64
Depends: libc6 (>= 2.36)
Provides: launcher (= 2.0), mail-transport-agent
SHA256: ABCDEF


Package: plain
Version: 3
Architecture: all
Description: caf\N{LATIN SMALL LETTER E WITH ACUTE}

Version: 9
Package: skipped
"""


def _snapshot(index: PackagesIndex) -> tuple[object, ...]:
    names = ("rocket", "plain", "skipped", "missing")
    return (
        len(index),
        [repr(candidate) for name in names for candidate in index.candidates(name)],
        index.providers("launcher"),
        index.providers("mail-transport-agent"),
    )


def test_index_bytes_matches_text() -> None:
    from_text = PackagesIndex(PACKAGES, base_url="http://repo", suite="s")
    from_bytes = PackagesIndex(PACKAGES.encode(), base_url="http://repo", suite="s")
    assert len(from_text) == 3
    assert _snapshot(from_bytes) == _snapshot(from_text)


def test_index_mmap_matches_text(tmp_path: Path) -> None:
    path = tmp_path / "Packages"
    path.write_bytes(PACKAGES.encode())
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0,
                                              access=mmap.ACCESS_READ) as mapped:
        from_map = PackagesIndex(mapped, base_url="http://repo", suite="s")
        snapshot = _snapshot(from_map)
    assert snapshot == _snapshot(PackagesIndex(PACKAGES, base_url="http://repo", suite="s"))


def test_index_decodes_non_ascii() -> None:
    index = PackagesIndex(PACKAGES.encode(), base_url="http://repo", suite="s")
    assert [c.version for c in index.candidates("rocket")] == ["1.0", "2.0"]
    assert index.candidates("rocket")[1].sha256 == "abcdef"
    assert index.providers("mail-transport-agent") == ["rocket"]


def test_index_from_saved_offsets() -> None:
    scanned = PackagesIndex(PACKAGES.encode(), base_url="http://repo", suite="s")
    saved = json.loads(json.dumps(scanned.offsets))
    reused = PackagesIndex(PACKAGES.encode(), base_url="http://repo", suite="s", offsets=saved)
    assert _snapshot(reused) == _snapshot(scanned)
