"""File modes of everything suture writes: the umask's for new files, the old mode on replace."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tarbuild import directory, file, make_image, make_tar

from suture.image.archive import write_docker_archive, write_oci_archive
from suture.image.layout import write_layout
from suture.image.model import Image
from suture.outputs import atomic_output, current_umask
from suture.patch.outcome import write_atomic


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _image(tmp_path: Path) -> Image:
    blobs = tmp_path / "blobs-source"
    blobs.mkdir()
    tar = make_tar([directory("./etc/"), file("./etc/os-release", b"ID=debian\n")])
    return make_image(blobs, [tar])


def test_current_umask_reads_process_umask(umask_022: None) -> None:
    assert current_umask() == 0o022
    os.umask(0o027)
    assert current_umask() == 0o027


def test_new_file_follows_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "out") as handle:
            handle.write(b"x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "out") == 0o640


def test_replaced_file_keeps_mode(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "out"
    target.write_bytes(b"old")
    target.chmod(0o600)
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out") as handle:
        handle.write(b"partial")
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == []


def test_layout_files_world_readable(tmp_path: Path, umask_022: None) -> None:
    layout = tmp_path / "layout"
    write_layout(layout, _image(tmp_path), "latest")
    written = [p for p in layout.rglob("*") if p.is_file()]
    assert (layout / "index.json") in written
    assert (layout / "oci-layout") in written
    for path in written:
        assert _mode(path) == 0o644, path


def test_archives_world_readable(tmp_path: Path, umask_022: None) -> None:
    image = _image(tmp_path)
    write_oci_archive(tmp_path / "oci.tar", image, "latest")
    write_docker_archive(tmp_path / "docker.tar", image, ["example.com/demo:latest"])
    assert _mode(tmp_path / "oci.tar") == 0o644
    assert _mode(tmp_path / "docker.tar") == 0o644


def test_summary_world_readable(tmp_path: Path, umask_022: None) -> None:
    write_atomic(tmp_path / "summary.json", b"{}")
    assert _mode(tmp_path / "summary.json") == 0o644
