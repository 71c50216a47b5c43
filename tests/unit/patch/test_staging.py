"""Tests for the staging tree of a patch layer."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from suture.errors import DigestMismatchError, ImageError, UnsafePathError
from suture.image.fsview import FileType
from suture.image.model import OCI_LAYER, OCI_LAYER_GZIP, sha256_digest
from suture.patch.staging import Staging, normalize_path


@pytest.fixture
def staging(tmp_path: Path) -> Staging:
    return Staging(tmp_path / "staging")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("usr/bin/x", "/usr/bin/x"),
        ("./usr/bin/x", "/usr/bin/x"),
        ("/usr//bin/./x/", "/usr/bin/x"),
    ],
)
def test_normalize_path_forms(given: str, expected: str) -> None:
    assert normalize_path(given) == expected


@pytest.mark.parametrize("bad", ["/", "", "../etc/passwd", "/usr/../../x", "a\x00b", "/d/.wh.x"])
def test_normalize_path_rejects_unsafe(bad: str) -> None:
    with pytest.raises(UnsafePathError):
        normalize_path(bad)


def test_add_file_copies_content_to_workdir(staging: Staging, tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"hello")
    entry = staging.add_file("/etc/x", source=source, mode=0o100640, uid=5, gid=6, mtime=7)
    source.write_bytes(b"changed")

    assert staging.read("/etc/x") == b"hello"
    assert entry.content is not None
    assert entry.content.is_relative_to(staging.workdir)
    assert entry.mode == 0o640
    assert (entry.uid, entry.gid, entry.mtime, entry.size) == (5, 6, 7, 5)


def test_add_file_from_stream(staging: Staging) -> None:
    staging.add_file("/a", stream=io.BytesIO(b"x" * 3_000_000))
    assert staging.read("/a") == b"x" * 3_000_000


def test_add_file_needs_one_source(staging: Staging) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        staging.add_file("/a", data=b"x", stream=io.BytesIO(b"y"))


def test_entries_are_sorted(staging: Staging) -> None:
    staging.add_file("/z", data=b"")
    staging.add_directory("/a")
    staging.add_file("/a/b", data=b"")
    staging.add_symlink("/a-b", "a")
    assert [entry.path for entry in staging.entries()] == ["/a", "/a-b", "/a/b", "/z"]


def test_whiteout_drops_staged_entries_below(staging: Staging) -> None:
    staging.add_directory("/d")
    staging.add_file("/d/x", data=b"x")
    staging.add_whiteout("/d")

    assert [entry.path for entry in staging.entries()] == ["/d"]
    entry = staging.lstat("/d")
    assert entry is not None
    assert entry.whiteout
    assert staging.hides("/d/x")


def test_file_at_whiteout_cancels_it(staging: Staging) -> None:
    staging.add_whiteout("/etc/old")
    staging.add_file("/etc/old", data=b"new")
    entry = staging.lstat("/etc/old")
    assert entry is not None
    assert not entry.whiteout
    assert not staging.hides("/etc/old")


def test_directory_at_whiteout_becomes_opaque(staging: Staging) -> None:
    staging.add_whiteout("/d")
    entry = staging.add_directory("/d", 0o700)
    assert entry.opaque
    assert staging.hides("/d/lower-file")


def test_entry_below_whiteout_makes_opaque_parents(staging: Staging) -> None:
    staging.add_whiteout("/d")
    staging.add_file("/d/e/f", data=b"f")

    top = staging.lstat("/d")
    middle = staging.lstat("/d/e")
    assert top is not None
    assert top.type is FileType.DIRECTORY
    assert top.opaque
    assert middle is not None
    assert middle.type is FileType.DIRECTORY
    assert not staging.hides("/d/e/f")
    assert staging.hides("/d/other")


def test_remove_drops_entry_and_whiteout(staging: Staging) -> None:
    staging.add_file("/a", data=b"a")
    staging.add_whiteout("/b")
    staging.remove("/a")
    staging.remove("/b")
    assert staging.entries() == []


def test_file_under_staged_file_rejected(staging: Staging) -> None:
    staging.add_file("/a", data=b"a")
    with pytest.raises(ImageError, match="/a is a staged file"):
        staging.add_file("/a/b", data=b"b")


def test_hardlink_follows_to_file(staging: Staging) -> None:
    staging.add_file("/usr/bin/a", data=b"binary", mode=0o755, mtime=3)
    staging.add_hardlink("/usr/bin/b", "/usr/bin/a")
    link = staging.add_hardlink("/usr/bin/c", "/usr/bin/b")

    assert link.linkname == "/usr/bin/a"
    assert link.mode == 0o755
    assert staging.read("/usr/bin/c") == b"binary"


def test_hardlink_to_missing_target_rejected(staging: Staging) -> None:
    with pytest.raises(ImageError, match="not a regular file"):
        staging.add_hardlink("/b", "/a")


def test_removing_linked_file_keeps_link_content(staging: Staging) -> None:
    staging.add_file("/a", data=b"shared")
    staging.add_hardlink("/b", "/a")
    staging.add_hardlink("/c", "/a")
    staging.remove("/a")

    b = staging.lstat("/b")
    c = staging.lstat("/c")
    assert b is not None
    assert b.type is FileType.FILE
    assert c is not None
    assert c.linkname == "/b"
    assert staging.read("/c") == b"shared"


def test_replacing_directory_with_file_drops_children(staging: Staging) -> None:
    staging.add_directory("/d")
    staging.add_file("/d/x", data=b"x")
    staging.add_file("/d", data=b"now a file")
    assert [entry.path for entry in staging.entries()] == ["/d"]


def _layer(members: list[tuple[tarfile.TarInfo, bytes | None]], compress: bool) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buffer.getvalue()
    return gzip.compress(raw, mtime=0) if compress else raw


def _info(
    name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, **fields: object
) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    for key, value in fields.items():
        setattr(info, key, value)
    return info


@pytest.mark.parametrize("compress", [True, False])
def test_load_layer_seeds_entries(staging: Staging, compress: bool) -> None:
    members: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_info("etc/", tarfile.DIRTYPE, mode=0o755, mtime=10), None),
        (_info("etc/.wh.gone"), None),
        (_info("etc/x", size=3, mode=0o600, uid=1, gid=2, mtime=11), b"abc"),
        (_info("etc/y", tarfile.LNKTYPE, linkname="etc/x"), None),
        (_info("etc/z", tarfile.SYMTYPE, linkname="x", mode=0o777), None),
        (_info("var/", tarfile.DIRTYPE, mode=0o755), None),
        (_info("var/.wh..wh..opq"), None),
    ]
    data = _layer(members, compress)
    staging.load_layer(io.BytesIO(data), OCI_LAYER_GZIP if compress else OCI_LAYER)

    paths = [entry.path for entry in staging.entries()]
    assert paths == ["/etc", "/etc/gone", "/etc/x", "/etc/y", "/etc/z", "/var"]
    gone = staging.lstat("/etc/gone")
    assert gone is not None
    assert gone.whiteout
    x = staging.lstat("/etc/x")
    assert x is not None
    assert (x.mode, x.uid, x.gid, x.mtime) == (0o600, 1, 2, 11)
    assert staging.read("/etc/y") == b"abc"
    z = staging.lstat("/etc/z")
    assert z is not None
    assert z.linkname == "x"
    var = staging.lstat("/var")
    assert var is not None
    assert var.opaque


def test_load_layer_rejects_traversal(staging: Staging) -> None:
    data = _layer([(_info("../escape", size=1), b"x")], compress=True)
    with pytest.raises(UnsafePathError):
        staging.load_layer(io.BytesIO(data), OCI_LAYER_GZIP)


def test_load_layer_rejects_device(staging: Staging) -> None:
    data = _layer([(_info("dev/null", tarfile.CHRTYPE), None)], compress=False)
    with pytest.raises(ImageError, match="unsupported type"):
        staging.load_layer(io.BytesIO(data), OCI_LAYER)


def test_load_layer_rejects_truncated(staging: Staging) -> None:
    data = _layer([(_info("a", size=100_000), b"x" * 100_000)], compress=True)
    with pytest.raises(ImageError, match="truncated"):
        staging.load_layer(io.BytesIO(data[: len(data) // 2]), OCI_LAYER_GZIP)


def test_load_layer_checks_diff_id(staging: Staging) -> None:
    data = _layer([(_info("a", size=1), b"x")], compress=True)
    with pytest.raises(DigestMismatchError, match="expected sha256:"):
        staging.load_layer(io.BytesIO(data), OCI_LAYER_GZIP, "sha256:" + "0" * 64)


def test_load_layer_accepts_matching_diff_id(staging: Staging) -> None:
    data = _layer([(_info("a", size=1), b"x")], compress=False)
    staging.load_layer(io.BytesIO(data), OCI_LAYER, sha256_digest(data))
    assert staging.read("/a") == b"x"


def test_listdir_names_staged_children(staging: Staging) -> None:
    staging.add_file("/usr/bin/a", data=b"a")
    staging.add_file("/usr/lib/x/y", data=b"y")
    staging.add_whiteout("/usr/old")
    assert staging.listdir("/") == ["usr"]
    assert staging.listdir("/usr") == ["bin", "lib", "old"]
    assert staging.listdir("/usr/lib/x") == ["y"]
    assert staging.listdir("/etc") == []


def test_listdir_forgets_removed_subtrees(staging: Staging) -> None:
    staging.add_file("/usr/lib/x/y", data=b"y")
    staging.add_file("/usr/bin/a", data=b"a")
    staging.remove("/usr/lib/x/y")
    assert staging.listdir("/usr") == ["bin"]
    assert staging.listdir("/usr/lib") == []


def test_whiteout_of_linked_file_keeps_links(staging: Staging) -> None:
    staging.add_file("/d/a", data=b"shared")
    staging.add_hardlink("/e/b", "/d/a")
    staging.add_hardlink("/d/c", "/d/a")
    staging.add_whiteout("/d")

    b = staging.lstat("/e/b")
    assert b is not None
    assert b.type is FileType.FILE
    assert staging.read("/e/b") == b"shared"
    assert staging.lstat("/d/c") is None


def test_replacing_linked_file_keeps_old_bytes(staging: Staging) -> None:
    staging.add_file("/a", data=b"old")
    staging.add_hardlink("/b", "/a")
    staging.add_file("/a", data=b"new")
    assert staging.read("/a") == b"new"
    assert staging.read("/b") == b"old"


def test_many_whiteouts_stay_fast(staging: Staging) -> None:
    # Whiteouts and removals touch only the paths involved, so a large staging tree with many
    # deletions finishes well inside the test timeout.
    for number in range(5_000):
        staging.add_symlink(f"/usr/share/doc/pkg{number % 100}/file{number}", "target")
    for number in range(5_000):
        staging.add_whiteout(f"/usr/share/old/file{number}")
    staging.add_whiteout("/usr/share/doc/pkg7")

    entry = staging.lstat("/usr/share/doc/pkg7")
    assert entry is not None
    assert entry.whiteout
    assert len(staging) == 5_000 - 50 + 5_000 + 1
