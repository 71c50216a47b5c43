"""Tests for the merged filesystem view built from layers and over a directory."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from tarbuild import directory, file, hardlink, make_image, make_tar, symlink

from suture.errors import DigestMismatchError, ImageError
from suture.image.fsview import FileType
from suture.image.layers import iter_layer
from suture.image.merged import DirectoryFileSystem, MergedFileSystem
from suture.image.model import OCI_LAYER, Image, ImageConfig

BASE = [
    directory("./"),
    directory("./etc/"),
    file("./etc/os-release", b"ID=debian\n"),
    file("./etc/hostname", b"base\n"),
    directory("./usr/"),
    directory("./usr/lib/"),
    file("./usr/lib/libc.so", b"libc"),
    symlink("./lib", "usr/lib"),
    directory("./opt/"),
    directory("./opt/app/"),
    file("./opt/app/old", b"old"),
    file("./opt/app/keep", b"keep-lower"),
    directory("./var/"),
    file("./var/gone", b"gone"),
    directory("./data/"),
    file("./data/inner", b"inner"),
]

UPPER = [
    file("./etc/.wh.hostname"),
    directory("./opt/app/"),
    file("./opt/app/.wh..wh..opq"),
    file("./opt/app/new", b"new"),
    file("./var/.wh.gone"),
    file("./data", b"now a file"),
    file("./usr/lib/libnew.so", b"new lib"),
    hardlink("./usr/lib/libnew-link.so", "./usr/lib/libnew.so"),
]


def _view(tmp_path: Path, keep: set[str] | None = None, compression: str = "gzip",
          layers: list[bytes] | None = None) -> MergedFileSystem:
    image = make_image(tmp_path, layers or [make_tar(BASE), make_tar(UPPER)], compression)
    return MergedFileSystem.from_image(image, keep_content=(keep or set()).__contains__)


def test_whiteout_removes_lower_file(tmp_path: Path) -> None:
    view = _view(tmp_path)
    assert view.lstat("/etc/hostname") is None
    assert view.lstat("/var/gone") is None
    assert view.listdir("/var") == []


def test_opaque_directory_hides_lower_entries(tmp_path: Path) -> None:
    view = _view(tmp_path)
    assert view.listdir("/opt/app") == ["new"]
    assert view.lstat("/opt/app/keep") is None


def test_file_replaces_lower_directory(tmp_path: Path) -> None:
    view = _view(tmp_path)
    entry = view.lstat("/data")
    assert entry is not None
    assert entry.type is FileType.FILE
    assert view.lstat("/data/inner") is None
    assert view.read("/data") == b"now a file"


def test_kept_content_needs_no_second_read(tmp_path: Path) -> None:
    view = _view(tmp_path, keep={"/etc/os-release"})
    for blob in tmp_path.glob("sha256-*"):
        blob.unlink()
    assert view.read("/etc/os-release") == b"ID=debian\n"


def test_content_read_on_demand(tmp_path: Path) -> None:
    view = _view(tmp_path, compression="zstd")
    assert view.read("/usr/lib/libc.so") == b"libc"
    assert view.read("/opt/app/new") == b"new"


def test_read_through_directory_symlink(tmp_path: Path) -> None:
    view = _view(tmp_path, keep={"/usr/lib/libc.so"})
    assert view.read("/lib/libc.so") == b"libc"
    assert view.resolve("/lib/libc.so") == "/usr/lib/libc.so"
    entry = view.lstat("/lib/libnew.so")
    assert entry is not None
    assert entry.path == "/usr/lib/libnew.so"


def test_hardlink_reads_target_content(tmp_path: Path) -> None:
    view = _view(tmp_path)
    entry = view.lstat("/usr/lib/libnew-link.so")
    assert entry is not None
    assert entry.type is FileType.HARDLINK
    assert entry.size == len(b"new lib")
    assert view.read("/usr/lib/libnew-link.so") == b"new lib"


def test_hardlink_kept_content(tmp_path: Path) -> None:
    view = _view(tmp_path, keep={"/usr/lib/libnew.so", "/usr/lib/libnew-link.so"})
    for blob in tmp_path.glob("sha256-*"):
        blob.unlink()
    assert view.read("/usr/lib/libnew-link.so") == b"new lib"


def test_entry_records_layer(tmp_path: Path) -> None:
    view = _view(tmp_path)
    upper = view.lstat("/opt/app/new")
    lower = view.lstat("/etc/os-release")
    assert upper is not None
    assert lower is not None
    assert upper.layer == 1
    assert lower.layer == 0


def test_paths_lists_every_entry(tmp_path: Path) -> None:
    paths = _view(tmp_path).paths()
    assert "/usr/lib/libc.so" in paths
    assert "/etc/hostname" not in paths
    assert paths == sorted(paths)


def test_implicit_parent_directories(tmp_path: Path) -> None:
    view = _view(tmp_path, layers=[make_tar([file("./a/b/c", b"deep")])], keep={"/a/b/c"})
    entry = view.lstat("/a/b")
    assert entry is not None
    assert entry.type is FileType.DIRECTORY
    assert view.listdir("/") == ["a"]


def test_symlink_escape_stays_in_root(tmp_path: Path) -> None:
    layer = make_tar([directory("./etc/"), file("./etc/passwd", b"image passwd"),
                      symlink("./escape", "../../../../etc/passwd"),
                      symlink("./abs", "/etc/passwd")])
    view = _view(tmp_path, layers=[layer], keep={"/etc/passwd"})
    assert view.resolve("/escape") == "/etc/passwd"
    assert view.read("/escape") == b"image passwd"
    assert view.read("/abs") == b"image passwd"


def test_symlink_loop_is_bounded(tmp_path: Path) -> None:
    layer = make_tar([symlink("./a", "b"), symlink("./b", "a")])
    view = _view(tmp_path, layers=[layer])
    with pytest.raises(ImageError, match="too many levels"):
        view.resolve("/a")
    assert view.read("/a") is None


def test_missing_final_component_kept(tmp_path: Path) -> None:
    view = _view(tmp_path)
    assert view.resolve("/lib/missing") == "/usr/lib/missing"
    assert view.resolve("/../../etc/./os-release") == "/etc/os-release"


def test_diff_id_mismatch_rejected(tmp_path: Path) -> None:
    image = make_image(tmp_path, [make_tar(BASE)])
    document = dict(image.config.document)
    document["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}
    wrong = Image(image.manifest, ImageConfig.build(document), image.blobs)
    with pytest.raises(DigestMismatchError, match="diff_id"):
        MergedFileSystem.from_image(wrong)


def test_corrupt_blob_rejected(tmp_path: Path) -> None:
    image = make_image(tmp_path, [make_tar(BASE)], "none")
    (blob,) = tmp_path.glob("sha256-*")
    data = bytearray(blob.read_bytes())
    data[-1] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError):
        MergedFileSystem.from_image(image)


def test_directory_view_matches_merged_view(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/libc.so").write_bytes(b"libc")
    (root / "etc").mkdir()
    (root / "etc/os-release").write_bytes(b"ID=debian\n")
    os.symlink("usr/lib", root / "lib")
    os.symlink("/etc/os-release", root / "abs")
    view = DirectoryFileSystem(root)
    assert view.read("/lib/libc.so") == b"libc"
    assert view.read("/abs") == b"ID=debian\n"
    assert view.listdir("/") == ["abs", "etc", "lib", "usr"]
    assert view.listdir("/lib") == ["libc.so"]
    assert view.paths() == ["/abs", "/etc", "/etc/os-release", "/lib", "/usr", "/usr/lib",
                            "/usr/lib/libc.so"]
    link = view.lstat("/lib")
    assert link is not None
    assert link.type is FileType.SYMLINK
    assert view.read("/missing") is None


def test_directory_view_never_reads_host(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.symlink("/etc/hostname", root / "host")
    assert DirectoryFileSystem(root).read("/host") is None


def test_load_contents_keeps_files(tmp_path: Path) -> None:
    view = _view(tmp_path)
    view.load_contents(["/lib/libc.so", "/opt/app/new", "/usr/lib/libnew-link.so", "/missing"])
    for blob in tmp_path.glob("sha256-*"):
        blob.unlink()
    assert view.read("/usr/lib/libc.so") == b"libc"
    assert view.read("/opt/app/new") == b"new"
    assert view.read("/usr/lib/libnew-link.so") == b"new lib"


def test_view_without_image_needs_kept_content() -> None:
    layer = make_tar([file("./kept", b"kept"), file("./dropped", b"dropped")])
    view = MergedFileSystem.from_layers([iter_layer(io.BytesIO(layer), OCI_LAYER)],
                                        keep_content={"/kept"}.__contains__)
    assert view.read("/kept") == b"kept"
    with pytest.raises(ImageError, match="keep_content"):
        view.read("/dropped")


def test_file_under_lower_symlink_replaces_it(tmp_path: Path) -> None:
    lower = make_tar([directory("./usr/"), directory("./usr/lib/"), symlink("./lib", "usr/lib")])
    upper = make_tar([file("./lib/extra", b"extra")])
    view = _view(tmp_path, layers=[lower, upper], keep={"/lib/extra"})
    entry = view.lstat("/lib")
    assert entry is not None
    assert entry.type is FileType.DIRECTORY
    assert view.read("/lib/extra") == b"extra"
    assert view.listdir("/usr/lib") == []
