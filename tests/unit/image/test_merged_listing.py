"""Tests for the layer listing cache of the merged filesystem view."""

from __future__ import annotations

from pathlib import Path

import pytest
from tarbuild import directory, file, hardlink, make_image, make_tar, symlink

from suture.errors import DigestMismatchError
from suture.image.merged import MergedFileSystem
from suture.image.model import Image, ImageConfig

BASE = [
    directory("./"),
    directory("./etc/"),
    file("./etc/os-release", b"ID=debian\n"),
    file("./etc/hostname", b"base\n"),
    directory("./usr/"),
    directory("./usr/lib/"),
    file("./usr/lib/libc.so", b"libc"),
    hardlink("./usr/lib/libc-link.so", "./usr/lib/libc.so"),
    symlink("./lib", "usr/lib"),
]

UPPER = [
    file("./etc/.wh.hostname"),
    file("./usr/lib/libnew.so", b"new lib"),
]

KEEP = {"/etc/os-release", "/usr/lib/libc.so", "/usr/lib/libc-link.so"}


def _snapshot(view: MergedFileSystem) -> list[tuple[object, ...]]:
    return [(path, view.lstat(path)) for path in view.paths()]


def _remove_blobs(root: Path) -> None:
    for blob in root.glob("sha256-*"):
        blob.unlink()


def _image(root: Path, layers: list[bytes], compression: str) -> Image:
    root.mkdir()
    return make_image(root, layers, compression)


def test_listing_cache_skips_layer_read(tmp_path: Path) -> None:
    image = _image(tmp_path / "image", [make_tar(BASE), make_tar(UPPER)], "gzip")
    cache = tmp_path / "layers"
    first = MergedFileSystem.from_image(image, KEEP.__contains__, listing_cache=cache)
    assert len(list(cache.iterdir())) == 2

    _remove_blobs(tmp_path / "image")
    second = MergedFileSystem.from_image(image, KEEP.__contains__, listing_cache=cache)
    assert _snapshot(second) == _snapshot(first)
    assert second.read("/etc/os-release") == b"ID=debian\n"
    assert second.read("/lib/libc-link.so") == b"libc"
    assert second.lstat("/etc/hostname") is None


def test_listing_cache_loads_other_kept_paths(tmp_path: Path) -> None:
    image = _image(tmp_path / "image", [make_tar(BASE), make_tar(UPPER)], "zstd")
    cache = tmp_path / "layers"
    MergedFileSystem.from_image(image, listing_cache=cache)
    keep = {"/usr/lib/libnew.so", "/etc/os-release"}
    view = MergedFileSystem.from_image(image, keep.__contains__, listing_cache=cache)

    _remove_blobs(tmp_path / "image")
    assert view.read("/usr/lib/libnew.so") == b"new lib"
    assert view.read("/etc/os-release") == b"ID=debian\n"


def test_listing_cache_ignores_invalid_file(tmp_path: Path) -> None:
    image = _image(tmp_path / "image", [make_tar(BASE)], "gzip")
    cache = tmp_path / "layers"
    expected = _snapshot(MergedFileSystem.from_image(image, listing_cache=cache))
    (listing,) = cache.iterdir()
    listing.write_bytes(b"not a listing")

    view = MergedFileSystem.from_image(image, listing_cache=cache)
    assert _snapshot(view) == expected
    assert listing.read_bytes().startswith(b"suture-layer-listing")


def test_listing_cache_keeps_diff_id_check(tmp_path: Path) -> None:
    image = _image(tmp_path / "image", [make_tar(BASE)], "gzip")
    cache = tmp_path / "layers"
    MergedFileSystem.from_image(image, listing_cache=cache)
    document = dict(image.config.document)
    document["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}
    wrong = Image(image.manifest, ImageConfig.build(document), image.blobs)
    with pytest.raises(DigestMismatchError, match="diff_id"):
        MergedFileSystem.from_image(wrong, listing_cache=cache)
