"""Tests for the docker-daemon transport's error handling, using the real docker CLI."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from tarbuild import file, make_image, make_tar

from suture.errors import TransportError
from suture.image.daemon import read_daemon, write_daemon

needs_docker_cli = pytest.mark.skipif(shutil.which("docker") is None,
                                      reason="the docker CLI is not installed")


@needs_docker_cli
def test_no_daemon_names_host_and_next_step(tmp_path: Path) -> None:
    host = f"unix://{tmp_path}/absent.sock"
    env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": str(tmp_path)}
    with pytest.raises(TransportError, match="no Docker daemon responded") as caught:
        read_daemon("debian:bookworm", env=env, timeout=60)
    assert host in str(caught.value)
    assert "DOCKER_HOST" in str(caught.value)


@needs_docker_cli
def test_write_without_daemon_fails_cleanly(tmp_path: Path) -> None:
    image = make_image(tmp_path, [make_tar([file("./a", b"a")])])
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/absent.sock",
           "DOCKER_CONFIG": str(tmp_path)}
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(TransportError, match="no Docker daemon responded"):
        write_daemon(image, ["app:1"], env=env, timeout=60, scratch=scratch)
    assert list(scratch.iterdir()) == []


def test_missing_cli_reported(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="docker CLI was not found"):
        read_daemon("debian:bookworm", env={"PATH": str(tmp_path)})
