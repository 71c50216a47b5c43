"""Patch layers on a real Debian image, checked by unpacking the result with umoci."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from suture.image.archive import write_docker_archive
from suture.image.layout import read_layout, write_layout
from suture.image.merged import MergedFileSystem
from suture.image.model import Image
from suture.patch.build import (
    append_patch_layer,
    base_digest_of,
    build_layer,
    find_patch_layer,
    seed_staging,
)
from suture.patch.staging import Staging
from tests.conftest import Images
from tests.harness.docker import DockerDaemon

pytestmark = pytest.mark.integration

EPOCH = 1_700_000_000


def _read(layout: Path, tag: str = "latest") -> Image:
    artifact = read_layout(layout, tag)
    assert isinstance(artifact, Image)
    return artifact


@dataclass(frozen=True)
class Original:
    """The `debian-bookworm` fixture and its merged view, built once for the module."""

    image: Image
    view: MergedFileSystem


@pytest.fixture(scope="module")
def bookworm(images: Images) -> Original:
    image = _read(images.layout("debian-bookworm"))
    return Original(image, MergedFileSystem.from_image(image))


def _patch(image: Image, work: Path, files: dict[str, bytes],
           whiteouts: tuple[str, ...] = (), view: MergedFileSystem | None = None) -> Image:
    if view is None:
        view = MergedFileSystem.from_image(image)
    staging = Staging(work / "staging")
    seed_staging(image, staging)
    for path, data in files.items():
        staging.add_file(path, data=data, mode=0o640, uid=0, gid=42, mtime=EPOCH)
    for path in whiteouts:
        staging.add_whiteout(path)
    layer = build_layer(staging, view, source_date_epoch=EPOCH, output_dir=work / "blobs")
    return append_patch_layer(image, layer, packages=[f"test {len(files)} -> {len(files) + 1}"])


def test_patch_layer_applies_with_umoci(
    images: Images, bookworm: Original, tmp_path: Path
) -> None:
    original, view = bookworm.image, bookworm.view
    motd = view.lstat("/etc/motd")
    assert motd is not None, "fixture image is expected to ship /etc/motd"

    patched = _patch(original, tmp_path, {"/usr/share/doc/suture-test/note": b"patched\n"},
                     whiteouts=("/etc/motd",), view=view)
    # Written beside the original in a copy of its layout, so only the new blobs are written.
    write_layout(images.layout_copy("debian-bookworm", tmp_path / "out"), patched, "patched")
    root = images.unpack_layout(tmp_path / "out", "patched", tmp_path / "rootfs")

    note = root / "usr/share/doc/suture-test/note"
    assert note.read_bytes() == b"patched\n"
    assert stat.S_IMODE(note.lstat().st_mode) == 0o640
    assert not (root / "etc/motd").exists()
    assert (root / "lib").is_symlink()
    assert os.readlink(root / "lib") == "usr/lib"
    share = view.lstat("/usr/share")
    assert share is not None
    assert stat.S_IMODE((root / "usr/share").stat().st_mode) == share.mode
    assert (root / "etc/os-release").exists()


def test_repatch_real_image_keeps_one_layer(
    images: Images, bookworm: Original, tmp_path: Path
) -> None:
    original = bookworm.image

    once = _patch(original, tmp_path / "a", {"/opt/one": b"1"}, view=bookworm.view)
    write_layout(images.layout_copy("debian-bookworm", tmp_path / "once"), once, "latest")
    reread = _read(tmp_path / "once")
    twice = _patch(reread, tmp_path / "b", {"/opt/two": b"2"})
    write_layout(images.layout_copy("debian-bookworm", tmp_path / "twice"), twice, "latest")

    assert len(twice.manifest.layers) == len(original.manifest.layers) + 1
    assert twice.manifest.layers[:-1] == original.manifest.layers
    assert find_patch_layer(twice) == len(original.manifest.layers)
    assert base_digest_of(twice) == original.digest
    root = images.unpack_layout(tmp_path / "twice", "latest", tmp_path / "rootfs")
    assert (root / "opt/one").read_bytes() == b"1"
    assert (root / "opt/two").read_bytes() == b"2"

    single = _patch(original, tmp_path / "c", {"/opt/one": b"1", "/opt/two": b"2"},
                    view=bookworm.view)
    assert twice.config.diff_ids[-1] == single.config.diff_ids[-1]


def test_same_inputs_same_manifest_digest(images: Images, bookworm: Original, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    # The second patch reads the layout again and builds its own view.
    first = _patch(bookworm.image, tmp_path / "a", {"/etc/suture": b"x"}, view=bookworm.view)
    second = _patch(_read(images.layout("debian-bookworm")), tmp_path / "b", {"/etc/suture": b"x"})
    assert first.digest == second.digest


def test_docker_runs_patched_image(bookworm: Original, docker_daemon: DockerDaemon,
                                   tmp_path: Path) -> None:
    original, view = bookworm.image, bookworm.view
    source = tmp_path / "payload"
    source.write_bytes(b"linked\n")
    staging = Staging(tmp_path / "staging")
    staging.add_file("/usr/share/doc/suture-test/b-file", source=source, mtime=EPOCH)
    staging.add_hardlink("/usr/share/doc/suture-test/a-link", "/usr/share/doc/suture-test/b-file")
    staging.add_whiteout("/etc/motd")
    layer = build_layer(staging, view, source_date_epoch=EPOCH, output_dir=tmp_path / "blobs")
    patched = append_patch_layer(original, layer, packages=["test 1 -> 2"])
    write_docker_archive(tmp_path / "image.tar", patched, ["suture-test/patched:latest"])

    docker_daemon.run("load", "-i", str(tmp_path / "image.tar"))
    script = (
        "cat /usr/share/doc/suture-test/a-link && "
        "test $(stat -c %h /usr/share/doc/suture-test/b-file) = 2 && "
        "test ! -e /etc/motd && test -L /lib && echo ok"
    )
    result = docker_daemon.run("run", "--rm", "--network", "none",
                               "suture-test/patched:latest", "sh", "-c", script)
    assert result.stdout == "linked\nok\n"
