"""Tests for reading and writing OCI image layouts."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest
from tarbuild import directory, file, make_image, make_index, make_tar

from suture.errors import DigestMismatchError, ImageError, TransportError
from suture.image.layout import REF_NAME, read_layout, write_layout
from suture.image.merged import MergedFileSystem
from suture.image.model import Descriptor, Image, ImageIndex, RawManifest


def _image(tmp_path: Path, name: str = "img", content: bytes = b"ID=debian\n",
           architecture: str = "amd64") -> Image:
    blobs = tmp_path / name
    blobs.mkdir()
    tar = make_tar([directory("./etc/"), file("./etc/os-release", content)])
    return make_image(blobs, [tar, make_tar([file("./extra", b"x")])], architecture=architecture)


def _refs(layout: Path) -> list[str]:
    document = json.loads((layout / "index.json").read_text())
    return [entry.get("annotations", {}).get(REF_NAME) for entry in document["manifests"]]


def test_write_then_read_keeps_digests(tmp_path: Path) -> None:
    image = _image(tmp_path)
    layout = tmp_path / "layout"
    digest = write_layout(layout, image, "latest")
    read = read_layout(layout, "latest")
    assert isinstance(read, Image)
    assert digest == image.digest
    assert read.digest == image.digest
    assert read.config.raw == image.config.raw
    assert read.blobs.origin is None
    assert (layout / "oci-layout").is_file()


def test_read_image_layers_are_usable(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, _image(tmp_path), "latest")
    image = read_layout(layout, "latest")
    assert isinstance(image, Image)
    view = MergedFileSystem.from_image(image, keep_content={"/etc/os-release"}.__contains__)
    assert view.read("/etc/os-release") == b"ID=debian\n"


def test_single_entry_read_without_tag(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = _image(tmp_path)
    write_layout(layout, image, "v1")
    assert read_layout(layout, None).digest == image.digest


def test_several_entries_need_a_tag(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, _image(tmp_path, "a"), "one")
    write_layout(layout, _image(tmp_path, "b", b"ID=other\n"), "two")
    with pytest.raises(ImageError, match="one, two"):
        read_layout(layout, None)


def test_unknown_tag_lists_refs(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, _image(tmp_path), "latest")
    with pytest.raises(ImageError, match=r"no image tagged 'missing'.*latest"):
        read_layout(layout, "missing")


def test_same_tag_replaced_others_kept(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    first = _image(tmp_path, "a")
    second = _image(tmp_path, "b", b"ID=other\n")
    write_layout(layout, first, "keep")
    write_layout(layout, first, "latest")
    write_layout(layout, second, "latest")
    assert _refs(layout) == ["keep", "latest"]
    assert read_layout(layout, "latest").digest == second.digest
    assert read_layout(layout, "keep").digest == first.digest


def test_read_by_digest(tmp_path: Path) -> None:
    image = _image(tmp_path)
    layout = tmp_path / "layout"
    write_layout(layout, image, "latest")
    assert read_layout(layout, image.digest).digest == image.digest


def test_index_round_trip_keeps_attestation(tmp_path: Path) -> None:
    amd64 = _image(tmp_path, "amd64")
    arm64 = _image(tmp_path, "arm64", architecture="arm64")
    index = make_index(tmp_path, [amd64, arm64])
    layout = tmp_path / "layout"
    assert write_layout(layout, index, "latest") == index.digest
    read = read_layout(layout, "latest")
    assert isinstance(read, ImageIndex)
    assert read.index.raw == index.index.raw
    kinds = [type(child).__name__ for child in read.children]
    assert kinds == ["Image", "Image", "RawManifest"]
    attestation = read.children[2]
    assert isinstance(attestation, RawManifest)
    assert [d.digest for d in attestation.references] == [
        d.digest for d in index.children[2].references  # type: ignore[union-attr]
    ]


def test_nested_index_written_again_unchanged(tmp_path: Path) -> None:
    index = make_index(tmp_path, [_image(tmp_path, "amd64")])
    first = tmp_path / "first"
    second = tmp_path / "second"
    write_layout(first, index, "latest")
    write_layout(second, read_layout(first, "latest"), "latest")
    blobs_first = sorted(p.name for p in (first / "blobs/sha256").iterdir())
    blobs_second = sorted(p.name for p in (second / "blobs/sha256").iterdir())
    assert blobs_first == blobs_second


def test_missing_blob_named(tmp_path: Path) -> None:
    image = _image(tmp_path)
    layout = tmp_path / "layout"
    write_layout(layout, image, "latest")
    layer = image.manifest.layers[0]
    (layout / "blobs/sha256" / layer.digest[7:]).unlink()
    read = read_layout(layout, "latest")
    assert isinstance(read, Image)
    with pytest.raises(ImageError, match="not found"):
        read.blobs.read_blob(layer)


def test_tampered_manifest_rejected(tmp_path: Path) -> None:
    image = _image(tmp_path)
    layout = tmp_path / "layout"
    write_layout(layout, image, "latest")
    manifest_path = layout / "blobs/sha256" / image.digest[7:]
    tampered = manifest_path.read_bytes().replace(b"schemaVersion", b"schemaVersioN")
    manifest_path.write_bytes(tampered)
    with pytest.raises(DigestMismatchError):
        read_layout(layout, "latest")


def test_hostile_digest_rejected(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, _image(tmp_path), "latest")
    document = json.loads((layout / "index.json").read_text())
    document["manifests"][0]["digest"] = "sha256:../../../etc/passwd"
    (layout / "index.json").write_text(json.dumps(document))
    with pytest.raises(ImageError, match="invalid digest"):
        read_layout(layout, "latest")


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="oci-layout"):
        read_layout(tmp_path, None)


def test_unwritable_path_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TransportError, match=str(blocker)):
        write_layout(blocker / "layout", _image(tmp_path), "latest")


class _FailingStore:
    """Fault injection: a store whose layer streams fail part way, as a dropped download would."""

    origin = None

    def __init__(self, data: bytes) -> None:
        self._data = data

    @contextmanager
    def _open(self) -> Iterator[BinaryIO]:
        yield _Broken(self._data)

    def open_blob(self, descriptor: Descriptor):  # type: ignore[no-untyped-def]
        return self._open()

    def read_blob(self, descriptor: Descriptor) -> bytes:
        raise AssertionError("not used")


class _Broken(io.BytesIO):
    def read(self, size: int | None = -1) -> bytes:
        if self.tell() > 10:
            raise OSError("connection reset")
        return super().read(11)


def test_failed_write_keeps_previous_index(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    old = _image(tmp_path, "old")
    write_layout(layout, old, "latest")
    before = (layout / "index.json").read_bytes()
    new = _image(tmp_path, "new", b"ID=new\n")
    broken = Image(new.manifest, new.config, _FailingStore(b"z" * 100))  # type: ignore[arg-type]
    with pytest.raises(TransportError):
        write_layout(layout, broken, "latest")
    assert (layout / "index.json").read_bytes() == before
    assert read_layout(layout, "latest").digest == old.digest
    assert not [p for p in (layout / "blobs/sha256").iterdir() if p.name.startswith(".")]


def test_concurrent_writers_keep_every_tag(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = _image(tmp_path)
    write_layout(layout, image, "seed")
    tags = [f"t{number}" for number in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda tag: write_layout(layout, image, tag), tags))
    assert sorted(_refs(layout)) == sorted(["seed", *tags])
