"""Tests for building the deterministic patch layer tar."""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

from suture.errors import ImageError
from suture.image.fsview import FileEntry, FileType
from suture.image.merged import DirectoryFileSystem
from suture.image.model import OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, sha256_digest
from suture.patch.build import DEFAULT_SOURCE_DATE_EPOCH, LayerBlob, build_layer
from suture.patch.staging import Staging


class StubView:
    """A FileSystemView over a fixed table of entries; no contents."""

    def __init__(self, entries: list[FileEntry]) -> None:
        self._entries = {entry.path: entry for entry in entries}

    def lstat(self, path: str) -> FileEntry | None:
        return self._entries.get(path)

    def read(self, path: str) -> bytes | None:
        return None

    def listdir(self, path: str) -> list[str]:
        return []

    def resolve(self, path: str) -> str:
        return path

    def paths(self) -> list[str]:
        return sorted(self._entries)


IMAGE = StubView([
    FileEntry("/etc", FileType.DIRECTORY, 0o755, 0, 0, 0, 1_600_000_000),
    FileEntry("/usr", FileType.DIRECTORY, 0o755, 0, 0, 0, 1_600_000_001),
    FileEntry("/usr/share", FileType.DIRECTORY, 0o2775, 0, 50, 0, 1_600_000_002),
    FileEntry("/bin", FileType.SYMLINK, 0o777, 0, 0, 0, 1_600_000_003, linkname="usr/bin"),
])


def _fill(staging: Staging, tmp: Path) -> None:
    """Stage a fixed set of entries of every kind, with contents from files in `tmp`."""
    source = tmp / "payload"
    source.write_bytes(b"payload " * 1000)
    os.utime(source, (1, 2))
    staging.add_file("/usr/share/doc/pkg/copyright", source=source, mode=0o644, mtime=1_700_000_000)
    staging.add_file("/etc/pkg.conf", data=b"key=value\n", mode=0o640, uid=0, gid=42,
                     mtime=1_700_000_001)
    staging.add_file("/usr/lib/generated", data=b"generated", mtime=None)
    staging.add_symlink("/usr/lib/libpkg.so", "libpkg.so.1", mtime=1_700_000_002)
    staging.add_file("/usr/lib/z-first", data=b"linked", mtime=1_700_000_003)
    staging.add_hardlink("/usr/lib/a-link", "/usr/lib/z-first")
    staging.add_whiteout("/etc/old.conf")
    staging.add_whiteout("/var")
    staging.add_directory("/var", 0o755, 0, 0, 1_700_000_004)
    staging.add_file("/" + "long/" * 30 + "file-\u00e9", data=b"deep", mtime=1_700_000_005)


def _members(layer: LayerBlob) -> list[tarfile.TarInfo]:
    with tarfile.open(layer.path, mode="r:*") as archive:
        return archive.getmembers()


def _by_name(layer: LayerBlob) -> dict[str, tarfile.TarInfo]:
    return {member.name: member for member in _members(layer)}


KNOWN_DIFF_ID = "sha256:c79684e8bb901971235ca9698a10ca53db0044ff11737a6a8a269952364fbb96"


@pytest.fixture
def layer(tmp_path: Path) -> LayerBlob:
    staging = Staging(tmp_path / "staging")
    _fill(staging, tmp_path)
    return build_layer(staging, IMAGE, source_date_epoch=1_234)


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_layer_digest_is_reproducible(tmp_path: Path) -> None:
    results = []
    for number, mask in enumerate([0o022, 0o077]):
        work = tmp_path / f"run{number}"
        work.mkdir()
        with _umask(mask):
            staging = Staging(work / "staging")
            _fill(staging, work)
            results.append(build_layer(staging, IMAGE, source_date_epoch=1_234))
        os.utime(work / "payload", (number * 1000, number * 1000))

    first, second = results
    assert first.path != second.path
    assert first.diff_id == second.diff_id
    assert first.descriptor.digest == second.descriptor.digest
    assert first.descriptor.size == second.descriptor.size


def test_layer_diff_id_matches_known_value(tmp_path: Path) -> None:
    # The uncompressed tar depends only on suture's own tar writer, so its digest is fixed:
    # a change here changes every patch layer suture builds from the same inputs.
    staging = Staging(tmp_path / "staging")
    staging.add_file("/etc/a", data=b"a\n", mode=0o644, mtime=1_700_000_000)
    staging.add_symlink("/etc/b", "a", mtime=1_700_000_000)
    staging.add_whiteout("/etc/c")
    layer = build_layer(staging, compression="none", source_date_epoch=0)
    assert layer.diff_id == KNOWN_DIFF_ID


def test_layer_descriptor_and_diff_id(layer: LayerBlob) -> None:
    data = layer.path.read_bytes()
    raw = gzip.decompress(data)
    assert layer.descriptor.media_type == OCI_LAYER_GZIP
    assert layer.descriptor.digest == sha256_digest(data)
    assert layer.descriptor.size == len(data)
    assert layer.diff_id == sha256_digest(raw)
    assert layer.size_uncompressed == len(raw)


def test_gzip_header_has_no_name_or_time(layer: LayerBlob) -> None:
    header = layer.path.read_bytes()[:10]
    flags = header[3]
    assert header[:3] == b"\x1f\x8b\x08"
    assert flags & 0x08 == 0
    assert header[4:8] == b"\x00\x00\x00\x00"


def test_entries_sorted_with_parents(layer: LayerBlob) -> None:
    names = [member.name for member in _members(layer)]
    assert names == sorted(names)
    for name in names:
        parent = name.rsplit("/", 1)[0] if "/" in name else ""
        assert parent == "" or parent in names, f"{name} has no parent entry"


def test_parents_take_image_metadata(layer: LayerBlob) -> None:
    members = _by_name(layer)
    share = members["usr/share"]
    assert share.isdir()
    assert share.mode == 0o2775
    assert share.gid == 50
    assert share.mtime == 1_600_000_002
    assert members["etc"].mtime == 1_600_000_000


def test_new_parents_get_fixed_time(layer: LayerBlob) -> None:
    created = _by_name(layer)["usr/share/doc"]
    assert created.isdir()
    assert created.mode == 0o755
    assert (created.uid, created.gid) == (0, 0)
    assert created.mtime == 1_234


def test_owners_are_numeric_only(layer: LayerBlob) -> None:
    for member in _members(layer):
        assert member.uname == "", member.name
        assert member.gname == "", member.name
        assert not (set(member.pax_headers) & {"atime", "ctime", "mtime"}), member.name


def test_entry_metadata_kept(layer: LayerBlob) -> None:
    members = _by_name(layer)
    conf = members["etc/pkg.conf"]
    assert conf.mode == 0o640
    assert conf.gid == 42
    assert conf.mtime == 1_700_000_001
    assert members["usr/lib/generated"].mtime == 1_234
    assert members["usr/lib/libpkg.so"].issym()
    assert members["usr/lib/libpkg.so"].linkname == "libpkg.so.1"


def test_long_unicode_name_round_trips(layer: LayerBlob) -> None:
    name = "long/" * 30 + "file-\u00e9"
    assert name in _by_name(layer)


def test_whiteouts_and_opaque_directory(layer: LayerBlob) -> None:
    members = _by_name(layer)
    whiteout = members["etc/.wh.old.conf"]
    assert whiteout.isreg()
    assert whiteout.size == 0
    assert members["var"].isdir()
    assert "var/.wh..wh..opq" in members
    assert "etc/old.conf" not in members


def test_hardlink_content_on_first_path(layer: LayerBlob) -> None:
    members = _by_name(layer)
    first = members["usr/lib/a-link"]
    second = members["usr/lib/z-first"]
    assert first.isreg()
    assert first.size == len(b"linked")
    assert second.islnk()
    assert second.linkname == "usr/lib/a-link"


def test_gnu_tar_extracts_layer(layer: LayerBlob, tmp_path: Path) -> None:
    target = tmp_path / "extracted"
    target.mkdir()
    subprocess.run(["tar", "-xzf", str(layer.path), "-C", str(target), "--no-same-owner"],
                   check=True, capture_output=True)
    copyright_file = target / "usr/share/doc/pkg/copyright"
    assert copyright_file.read_bytes() == b"payload " * 1000
    assert (target / "usr/lib/z-first").read_bytes() == b"linked"
    assert (target / "usr/lib/z-first").stat().st_ino == (target / "usr/lib/a-link").stat().st_ino
    assert os.readlink(target / "usr/lib/libpkg.so") == "libpkg.so.1"


def test_directory_fs_gives_parent_metadata(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "opt/app").mkdir(parents=True)
    os.chmod(root / "opt", 0o750)
    os.utime(root / "opt", (1_500_000_000, 1_500_000_000))
    staging = Staging(tmp_path / "staging")
    staging.add_file("/opt/app/bin", data=b"x", mtime=1)

    layer = build_layer(staging, DirectoryFileSystem(root), source_date_epoch=9)

    opt = _by_name(layer)["opt"]
    assert opt.mode == 0o750
    assert opt.mtime == 1_500_000_000


def test_entry_under_image_symlink_rejected(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.add_file("/bin/tool", data=b"x")
    with pytest.raises(ImageError, match="/bin"):
        build_layer(staging, IMAGE)


def test_directory_over_image_symlink_rejected(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.add_directory("/bin")
    with pytest.raises(ImageError, match="would replace the image's symlink"):
        build_layer(staging, IMAGE)


def test_no_output_left_after_failure(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    entry = staging.add_file("/a", data=b"x")
    assert entry.content is not None
    entry.content.write_bytes(b"changed behind the staging's back")
    with pytest.raises(ImageError, match="changed size"):
        build_layer(staging, output_dir=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_zstd_layer(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.add_file("/a", data=b"zstd content", mtime=5)
    layer = build_layer(staging, compression="zstd")

    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(layer.path.read_bytes())).read()
    assert layer.descriptor.media_type == OCI_LAYER_ZSTD
    assert layer.diff_id == sha256_digest(raw)


def test_uncompressed_layer(tmp_path: Path) -> None:
    staging = Staging(tmp_path / "staging")
    staging.add_file("/a", data=b"plain", mtime=5)
    layer = build_layer(staging, compression="none")
    assert layer.descriptor.media_type == OCI_LAYER
    assert layer.descriptor.digest == layer.diff_id


def test_source_date_epoch_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "777")
    staging = Staging(tmp_path / "staging")
    staging.add_file("/d/a", data=b"a")
    members = _by_name(build_layer(staging))
    assert members["d"].mtime == 777
    assert members["d/a"].mtime == 777


def test_default_epoch_without_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    staging = Staging(tmp_path / "staging")
    staging.add_file("/a", data=b"a")
    assert _by_name(build_layer(staging))["a"].mtime == DEFAULT_SOURCE_DATE_EPOCH


def test_reloaded_layer_rebuilds_identically(layer: LayerBlob, tmp_path: Path) -> None:
    staging = Staging(tmp_path / "reloaded")
    with layer.path.open("rb") as stream:
        staging.load_layer(stream, layer.descriptor.media_type)
    rebuilt = build_layer(staging, IMAGE, source_date_epoch=1_234)
    assert rebuilt.diff_id == layer.diff_id
