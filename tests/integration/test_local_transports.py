"""Round trips of the fixture images through the local transports, checked against skopeo.

Each fixture layout is read, written to a new layout, an oci-archive and a docker-archive, and
read back. Layout and oci-archive hops keep every digest; a docker-archive keeps the config
digest and the diff_ids (it stores no manifest). skopeo, an independent implementation, must
report the same digests as suture, and umoci's unpacked root filesystem must list the same
paths as suture's merged view.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from suture.image.archive import (
    read_docker_archive,
    read_oci_archive,
    write_docker_archive,
    write_oci_archive,
)
from suture.image.daemon import read_daemon, write_daemon
from suture.image.fsview import FileType
from suture.image.layout import read_layout, write_layout
from suture.image.merged import DirectoryFileSystem, MergedFileSystem
from suture.image.model import Artifact, Image, ImageIndex

pytestmark = pytest.mark.integration

SINGLE_IMAGES = ["debian-bookworm", "debian-bookworm-layered", "distroless-bookworm",
                 "debian-trixie", "debian-bookworm-arm64"]
ALL_IMAGES = [*SINGLE_IMAGES, "multiplatform-bookworm"]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _skopeo(*arguments: str) -> bytes:
    completed = subprocess.run(["skopeo", *arguments], capture_output=True, check=False,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")
    return completed.stdout


def _images_of(artifact: Artifact) -> list[Image]:
    if isinstance(artifact, Image):
        return [artifact]
    return [child for child in artifact.children if isinstance(child, Image)]


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_layout_round_trip_keeps_digest(images: Any, tmp_path: Path, name: str) -> None:
    source = read_layout(images.layout(name), "latest")
    copy = tmp_path / "copy"
    assert write_layout(copy, source, "latest") == source.digest
    again = read_layout(copy, "latest")
    assert again.digest == source.digest
    raw = _skopeo("inspect", "--raw", f"oci:{copy}:latest")
    assert _sha256(raw) == source.digest


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_oci_archive_round_trip_keeps_digest(images: Any, tmp_path: Path, name: str) -> None:
    source = read_layout(images.layout(name), "latest")
    archive = tmp_path / "image.tar"
    write_oci_archive(archive, source, "latest")
    assert read_oci_archive(archive, "latest").digest == source.digest
    raw = _skopeo("inspect", "--raw", f"oci-archive:{archive}:latest")
    assert _sha256(raw) == source.digest

    # Back from the archive into a layout, the last hop of layout -> archive -> layout.
    layout = tmp_path / "layout"
    write_layout(layout, read_oci_archive(archive, "latest"), "latest")
    assert read_layout(layout, "latest").digest == source.digest


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_skopeo_agrees_on_child_digests(images: Any, tmp_path: Path, name: str) -> None:
    source = read_layout(images.layout(name), "latest")
    copy = tmp_path / "copy"
    write_layout(copy, source, "latest")
    for number, image in enumerate(_images_of(source)):
        platform = image.platform
        options = ["--override-os", platform.os, "--override-arch", platform.architecture]
        if platform.variant:
            options += ["--override-variant", platform.variant]
        report = json.loads(_skopeo(*options, "inspect", f"oci:{copy}:latest"))
        # skopeo reports the digest of the manifest the reference names: the index, if any.
        assert report["Digest"] == source.digest
        # skopeo 1.9 cannot name a child by digest, so the child also gets a tag of its own.
        write_layout(copy, image, f"child-{number}")
        child = _skopeo("inspect", "--raw", f"oci:{copy}:child-{number}")
        assert _sha256(child) == image.digest
        assert report["Layers"] == [layer.digest for layer in image.manifest.layers]
        config = _skopeo(*options, "inspect", "--config", "--raw", f"oci:{copy}:latest")
        assert _sha256(config) == image.config.digest


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_docker_archive_round_trip(images: Any, tmp_path: Path, name: str) -> None:
    source = read_layout(images.layout(name), "latest")
    for number, image in enumerate(_images_of(source)):
        archive = tmp_path / f"docker-{number}.tar"
        image_id = write_docker_archive(archive, image, [f"suture-test/{name}:{number}"])
        read = read_docker_archive(archive, f"suture-test/{name}:{number}")
        assert image_id == image.config.digest
        assert read.config.digest == image.config.digest
        assert read.config.diff_ids == image.config.diff_ids
        config = _skopeo("inspect", "--config", "--raw", f"docker-archive:{archive}")
        assert _sha256(config) == image.config.digest

        # docker-archive -> OCI layout: the synthesised manifest is stable across reads.
        layout = tmp_path / f"layout-{number}"
        assert write_layout(layout, read, "latest") == read.digest
        assert read_layout(layout, "latest").digest == read_docker_archive(archive).digest


@pytest.mark.parametrize("name", SINGLE_IMAGES)
def test_merged_view_matches_umoci_rootfs(images: Any, name: str) -> None:
    image = read_layout(images.layout(name), "latest")
    assert isinstance(image, Image)
    rootfs = DirectoryFileSystem(images.rootfs(name))
    # The sample's contents are kept in the one pass over the layers that builds the view.
    sample = rootfs.paths()[::97]
    kept_paths = {"/etc/os-release", *sample}
    view = MergedFileSystem.from_image(image, keep_content=kept_paths.__contains__)
    assert view.paths() == rootfs.paths()
    assert view.read("/etc/os-release") == rootfs.read("/etc/os-release")
    for path in sample:
        entry = view.lstat(path)
        expected = rootfs.lstat(path)
        assert entry is not None
        assert expected is not None
        kind = FileType.FILE if entry.type is FileType.HARDLINK else entry.type
        assert (path, kind) == (path, expected.type)
        if kind is FileType.FILE:
            assert view.read(path) == rootfs.read(path), path


def test_merged_view_indexes_quickly(images: Any) -> None:
    image = read_layout(images.layout("debian-bookworm"), "latest")
    assert isinstance(image, Image)
    compressed = sum(layer.size for layer in image.manifest.layers)
    started = time.monotonic()
    MergedFileSystem.from_image(image)
    elapsed = time.monotonic() - started
    # A generous bound that still catches reading every member's content into memory.
    assert elapsed < 1.0 + compressed / 10_000_000, f"{elapsed:.2f} s for {compressed} bytes"


def test_daemon_round_trip(images: Any, docker_daemon: Any) -> None:
    source = read_layout(images.layout("debian-bookworm"), "latest")
    assert isinstance(source, Image)
    tag = "suture-test/daemon-round-trip:1"
    image_id = write_daemon(source, [tag], env=docker_daemon.env)
    assert image_id == source.config.digest
    back = read_daemon(tag, env=docker_daemon.env)
    assert back.config.diff_ids == source.config.diff_ids
    assert back.config.digest == source.config.digest
    listed = docker_daemon.run("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    assert listed == source.config.digest


def test_index_children_kept(images: Any, tmp_path: Path) -> None:
    source = read_layout(images.layout("multiplatform-bookworm"), "latest")
    assert isinstance(source, ImageIndex)
    platforms = sorted(str(image.platform) for image in _images_of(source))
    assert platforms == ["linux/amd64", "linux/arm64"] or platforms == [
        "linux/amd64", "linux/arm64/v8"]


@pytest.mark.parametrize("name", ["debian-bookworm-layered", "multiplatform-bookworm"])
def test_reads_skopeo_oci_archive(images: Any, tmp_path: Path, name: str) -> None:
    layout = images.layout(name)
    archive = tmp_path / "skopeo.tar"
    _skopeo("copy", "--all", f"oci:{layout}:latest", f"oci-archive:{archive}:latest")
    source = read_layout(layout, "latest")
    assert read_oci_archive(archive, "latest").digest == source.digest


def test_reads_skopeo_docker_archive(images: Any, tmp_path: Path) -> None:
    layout = images.layout("debian-bookworm-layered")
    archive = tmp_path / "skopeo-docker.tar"
    _skopeo("copy", f"oci:{layout}:latest", f"docker-archive:{archive}:suture-test/layered:1")
    source = read_layout(layout, "latest")
    assert isinstance(source, Image)
    image = read_docker_archive(archive, "suture-test/layered:1")
    assert image.config.digest == source.config.digest
    assert image.config.diff_ids == source.config.diff_ids
    view = MergedFileSystem.from_image(image, keep_content={"/etc/os-release"}.__contains__)
    assert view.read("/etc/os-release")
