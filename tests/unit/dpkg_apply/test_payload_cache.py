"""DebFile's payload cache: same members and bytes as the .deb, checked before reuse."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import stat
import tarfile
from pathlib import Path
from typing import IO

import pytest
from applykit import build_deb, build_raw_deb, member

from suture.ecosystems.dpkg import debfile
from suture.ecosystems.dpkg.debfile import DebFile
from suture.errors import PackageError

FILES: dict[str, bytes | str] = {
    "/usr/bin/tool": bytes(range(256)) * 64,
    "/usr/share/doc/demo/README": "read me\n",
    "/etc/demo.conf": "setting = 1\n",
}


def _read_all(deb: DebFile) -> list[tuple[str, str, bytes | None]]:
    return [(m.path, m.type.value, f.read() if f is not None else None)
            for m, f in deb.iter_data()]


def _entries(cache: Path) -> list[Path]:
    """Return the files in the cache other than its key: entries and partial files."""
    if not cache.exists():
        return []
    return sorted(path for path in cache.iterdir() if path.name != ".key")


_DECOMPRESS = debfile._decompress


def _no_decompress(path: Path, member_name: str, raw: IO[bytes]) -> IO[bytes]:
    """Decompress control archives as usual, but fail for the payload."""
    if member_name.startswith("data.tar"):
        raise AssertionError(f"{path}: {member_name} was decompressed although it is cached")
    return _DECOMPRESS(path, member_name, raw)


def test_cached_read_matches_deb(tmp_path: Path) -> None:
    path = build_deb(tmp_path, "demo", "1.0", FILES, conffiles=("/etc/demo.conf",),
                     symlinks={"/usr/bin/alias": "tool"})
    expected = _read_all(DebFile(path))
    cache = tmp_path / "payloads"

    assert _read_all(DebFile(path, cache)) == expected
    assert _read_all(DebFile(path, cache)) == expected


def test_cache_entry_named_by_both_hashes(tmp_path: Path) -> None:
    path = build_deb(tmp_path, "demo", "1.0", FILES)
    cache = tmp_path / "payloads"
    _read_all(DebFile(path, cache))

    (entry,) = _entries(cache)
    key = (cache / ".key").read_bytes()
    deb_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    entry_sha256 = hashlib.sha256(entry.read_bytes()).hexdigest()
    tag = hmac.new(key, f"{deb_sha256}:{entry_sha256}".encode(), hashlib.sha256).hexdigest()
    assert len(key) == 32
    assert entry.name == f"{deb_sha256}-{tag}.tar.zst"
    assert stat.S_IMODE((cache / ".key").stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700


def test_second_read_skips_deb_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_deb(tmp_path, "demo", "1.0", FILES)
    cache = tmp_path / "payloads"
    expected = _read_all(DebFile(path, cache))
    monkeypatch.setattr(debfile, "_decompress", _no_decompress)

    assert _read_all(DebFile(path, cache)) == expected


def test_changed_cache_entry_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_deb(tmp_path, "demo", "1.0", FILES)
    cache = tmp_path / "payloads"
    expected = _read_all(DebFile(path, cache))
    (entry,) = _entries(cache)
    entry.write_bytes(entry.read_bytes()[:-1] + b"\0")

    assert _read_all(DebFile(path, cache)) == expected
    (replaced,) = _entries(cache)
    assert replaced.read_bytes() != b""
    # The rewritten entry is whole again, so a third read uses it.
    monkeypatch.setattr(debfile, "_decompress", _no_decompress)
    assert _read_all(DebFile(path, cache)) == expected


def test_stopped_read_leaves_nothing(tmp_path: Path) -> None:
    path = build_deb(tmp_path, "demo", "1.0", FILES)
    cache = tmp_path / "payloads"
    members = DebFile(path, cache).iter_data()
    next(members)
    members.close()

    assert _entries(cache) == []


def test_corrupt_payload_leaves_nothing(tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096
    members = [member("./", kind=tarfile.DIRTYPE), member("./usr/big", content)]
    path = build_raw_deb(tmp_path / "t.deb", members, truncate_data_to=2000)
    cache = tmp_path / "payloads"

    with pytest.raises(PackageError, match="truncated or corrupt"):
        _read_all(DebFile(path, cache))
    assert _entries(cache) == []


def test_unsafe_package_not_cached(tmp_path: Path) -> None:
    path = build_raw_deb(tmp_path / "s.deb", [
        member("./", kind=tarfile.DIRTYPE),
        member("./usr/link", kind=tarfile.SYMTYPE, linkname="../../../../tmp"),
        member("./usr/link/evil", b"payload"),
    ])
    cache = tmp_path / "payloads"

    for _attempt in range(2):
        with pytest.raises(PackageError, match="through the symlink /usr/link"):
            _read_all(DebFile(path, cache))
    assert _entries(cache) == []


def test_unusable_cache_is_skipped(tmp_path: Path) -> None:
    path = build_deb(tmp_path, "demo", "1.0", FILES)
    expected = _read_all(DebFile(path))
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be\n")

    assert _read_all(DebFile(path, blocker / "payloads")) == expected
    assert blocker.read_text() == "a file where the cache directory should be\n"


class _FullDiskWriter:
    """Stands in for zstd's stream writer on a full disk: every write fails."""

    def write(self, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    def flush(self, mode: int) -> None:
        raise AssertionError("flush after a failed write")


def test_failed_cache_write_keeps_payload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_deb(tmp_path, "demo", "1.0", FILES)
    expected = _read_all(DebFile(path))
    cache = tmp_path / "payloads"
    monkeypatch.setattr(debfile.zstandard.ZstdCompressor, "stream_writer",
                        lambda self, *args, **kwargs: _FullDiskWriter())

    assert _read_all(DebFile(path, cache)) == expected
    assert _entries(cache) == []


def test_entry_renamed_to_other_deb_rejected(tmp_path: Path) -> None:
    first = build_deb(tmp_path / "a", "demo", "1.0", {"/usr/a": "AAAA"})
    second = build_deb(tmp_path / "b", "demo", "1.0", {"/usr/a": "BBBB"})
    cache = tmp_path / "payloads"
    _read_all(DebFile(first, cache))
    (entry,) = _entries(cache)
    second_sha256 = hashlib.sha256(second.read_bytes()).hexdigest()
    tag = entry.name.split("-", 1)[1]
    forged = cache / f"{second_sha256}-{tag}"
    shutil.copyfile(entry, forged)

    contents = {m.path: f.read() for m, f in DebFile(second, cache).iter_data() if f}

    assert contents["/usr/a"] == b"BBBB"
    assert not forged.exists()


def test_trailing_data_reads_as_uncached(tmp_path: Path) -> None:
    members = [member("./", kind=tarfile.DIRTYPE), member("./usr/a", b"content\n")]
    path = build_raw_deb(tmp_path / "t.deb", members, data_suffix=b"GARBAGE!")
    expected = _read_all(DebFile(path))
    cache = tmp_path / "payloads"

    assert _read_all(DebFile(path, cache)) == expected
    assert _read_all(DebFile(path, cache)) == expected
    assert len(_entries(cache)) == 1
