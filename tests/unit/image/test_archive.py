"""Tests for oci-archive and docker-archive reading and writing."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from tarbuild import directory, file, make_image, make_index, make_tar

from suture.errors import DigestMismatchError, ImageError, TransportError
from suture.image.archive import (
    read_docker_archive,
    read_oci_archive,
    write_docker_archive,
    write_oci_archive,
)
from suture.image.merged import MergedFileSystem
from suture.image.model import OCI_LAYER, Image, ImageIndex

LOWER = make_tar([directory("./etc/"), file("./etc/os-release", b"ID=debian\n")])
UPPER = make_tar([file("./etc/.wh.os-release"), file("./etc/issue", b"Debian\n")])


def _image(tmp_path: Path, name: str = "img", compression: str = "gzip") -> Image:
    blobs = tmp_path / name
    blobs.mkdir()
    return make_image(blobs, [LOWER, UPPER], compression)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_oci_archive_round_trip(tmp_path: Path) -> None:
    image = _image(tmp_path)
    path = tmp_path / "image.tar"
    assert write_oci_archive(path, image, "latest") == image.digest
    read = read_oci_archive(path, "latest")
    assert isinstance(read, Image)
    assert read.digest == image.digest
    view = MergedFileSystem.from_image(read, keep_content={"/etc/issue"}.__contains__)
    assert view.read("/etc/issue") == b"Debian\n"
    assert view.lstat("/etc/os-release") is None


def test_oci_archive_index_round_trip(tmp_path: Path) -> None:
    index = make_index(tmp_path, [_image(tmp_path, "a")])
    path = tmp_path / "index.tar"
    write_oci_archive(path, index, None)
    read = read_oci_archive(path)
    assert isinstance(read, ImageIndex)
    assert read.digest == index.digest
    assert len(read.children) == 2


def test_oci_archive_replaced_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    good = _image(tmp_path, "good")
    write_oci_archive(path, good, "latest")
    before = path.read_bytes()
    layer = good.manifest.layers[0]
    (tmp_path / "bad").mkdir()
    bad = make_image(tmp_path / "bad", [LOWER, UPPER])
    blob = tmp_path / "bad" / layer.digest.replace(":", "-")
    blob.write_bytes(blob.read_bytes()[:-3] + b"xyz")
    with pytest.raises(DigestMismatchError):
        write_oci_archive(path, bad, "latest")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_docker_archive_round_trip(tmp_path: Path) -> None:
    image = _image(tmp_path)
    path = tmp_path / "docker.tar"
    image_id = write_docker_archive(path, image, ["example.test/app:1"])
    read = read_docker_archive(path, "example.test/app:1")
    assert image_id == image.config.digest
    assert read.config.digest == image.config.digest
    assert read.config.diff_ids == image.config.diff_ids
    assert [layer.media_type for layer in read.manifest.layers] == [OCI_LAYER, OCI_LAYER]
    assert [layer.digest for layer in read.manifest.layers] == list(image.config.diff_ids)
    view = MergedFileSystem.from_image(read, keep_content={"/etc/issue"}.__contains__)
    assert view.read("/etc/issue") == b"Debian\n"


def test_docker_archive_layout_matches_docker_save(tmp_path: Path) -> None:
    path = tmp_path / "docker.tar"
    image = _image(tmp_path)
    write_docker_archive(path, image, ["debian:bookworm"])
    with tarfile.open(path) as archive:
        manifest = json.loads(archive.extractfile("manifest.json").read())  # type: ignore[union-attr]
        repositories = json.loads(archive.extractfile("repositories").read())  # type: ignore[union-attr]
        layer = archive.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["debian:bookworm"]
    assert manifest[0]["Config"] == "blobs/sha256/" + image.config.digest[7:]
    assert list(repositories) == ["debian"]
    assert layer == LOWER


def test_docker_archive_synthesised_digest_is_stable(tmp_path: Path) -> None:
    path = tmp_path / "docker.tar"
    write_docker_archive(path, _image(tmp_path), ["app:1"])
    assert read_docker_archive(path).digest == read_docker_archive(path, "app:1").digest


def _legacy_archive(path: Path, compress: bool = False) -> str:
    # The pre-Docker-25 form: <hex>.json config and <id>/layer.tar, a duplicate as a symlink.
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": [_sha256(LOWER), _sha256(UPPER), _sha256(LOWER)]}
                         }).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        _add(archive, "aaaa/layer.tar", LOWER)
        _add(archive, "bbbb/layer.tar", UPPER)
        link = tarfile.TarInfo("cccc/layer.tar")
        link.type = tarfile.SYMTYPE
        link.linkname = "../aaaa/layer.tar"
        archive.addfile(link)
        _add(archive, _sha256(config)[7:] + ".json", config)
        _add(archive, "manifest.json", json.dumps([{
            "Config": _sha256(config)[7:] + ".json", "RepoTags": ["debian:bookworm"],
            "Layers": ["aaaa/layer.tar", "bbbb/layer.tar", "cccc/layer.tar"]}]).encode())
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data) if compress else data)
    return _sha256(config)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_legacy_docker_archive_read(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "legacy.tar"
    config_digest = _legacy_archive(path, compress)
    image = read_docker_archive(path, "docker.io/library/debian:bookworm")
    assert image.config.digest == config_digest
    assert len(image.manifest.layers) == 3
    view = MergedFileSystem.from_image(image, keep_content={"/etc/os-release"}.__contains__)
    assert view.read("/etc/os-release") == b"ID=debian\n"


def test_docker_archive_select_by_position(tmp_path: Path) -> None:
    path = tmp_path / "legacy.tar"
    _legacy_archive(path)
    assert read_docker_archive(path, "@0").config.digest == read_docker_archive(path).config.digest
    with pytest.raises(ImageError, match="no image @1"):
        read_docker_archive(path, "@1")


def test_docker_archive_unknown_tag_lists_tags(tmp_path: Path) -> None:
    path = tmp_path / "legacy.tar"
    _legacy_archive(path)
    with pytest.raises(ImageError, match="debian:bookworm"):
        read_docker_archive(path, "debian:trixie")


def test_docker_archive_tampered_layer_detected(tmp_path: Path) -> None:
    path = tmp_path / "docker.tar"
    write_docker_archive(path, _image(tmp_path), ["app:1"])
    data = path.read_bytes().replace(b"ID=debian", b"ID=evil!!")
    path.write_bytes(data)
    image = read_docker_archive(path)
    with pytest.raises(DigestMismatchError):
        MergedFileSystem.from_image(image)


def test_not_a_docker_archive(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    write_oci_archive(path, _image(tmp_path), "latest")
    with pytest.raises(TransportError, match=r"manifest\.json"):
        read_docker_archive(path)


def test_missing_archive_named(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match=r"missing\.tar"):
        read_oci_archive(tmp_path / "missing.tar")
