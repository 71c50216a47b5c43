"""Read images from and write images to a Docker daemon through the docker CLI.

`docker image save` and `docker image load` move docker-archives, so this module only runs the
CLI and hands the archive to `suture.image.archive`. The CLI reads DOCKER_HOST, DOCKER_CONTEXT
and DOCKER_CONFIG from the environment, which is passed through unchanged (or replaced by `env`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from suture.errors import TransportError
from suture.image.archive import read_docker_archive, write_docker_archive
from suture.image.model import Image

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
# Phrases in the docker CLI's error output when no daemon responds at DOCKER_HOST.
_UNREACHABLE = (
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "error during connect",
    "connect: no such file or directory",
    "connect: connection refused",
    "permission denied while trying to connect",
)


def read_daemon(ref: str, *, env: Mapping[str, str] | None = None,
                timeout: float = DEFAULT_TIMEOUT, scratch: Path | None = None) -> Image:
    """Read the image `ref` from the daemon with `docker image save`.

    The archive goes to a temporary directory in `scratch` (default: the system temporary
    directory) that is removed before returning. The image keeps the archive open, so on Linux
    its blobs stay readable until the image is garbage collected.
    """
    with tempfile.TemporaryDirectory(dir=scratch, prefix="suture-save-") as directory:
        archive = Path(directory) / "image.tar"
        _run_docker(["image", "save", "--output", str(archive), ref], env, timeout,
                    f"docker image save {ref}")
        image = read_docker_archive(archive)
    logger.debug("read %s from the Docker daemon (image ID %s)", ref, image.config.digest)
    return image


def write_daemon(image: Image, tags: Sequence[str], *, env: Mapping[str, str] | None = None,
                 timeout: float = DEFAULT_TIMEOUT, scratch: Path | None = None) -> str:
    """Load `image` into the daemon under `tags` with `docker image load`; return its image ID.

    The image ID is the config digest. The daemon does not keep the manifest, so the manifest
    digest a registry would show is not preserved (see `suture.image.archive`).
    """
    with tempfile.TemporaryDirectory(dir=scratch, prefix="suture-load-") as directory:
        archive = Path(directory) / "image.tar"
        image_id = write_docker_archive(archive, image, tags)
        output = _run_docker(["image", "load", "--input", str(archive)], env, timeout,
                             f"docker image load of {', '.join(tags) or image_id}")
    logger.debug("loaded %s into the Docker daemon: %s", image_id, output.strip())
    return image_id


def _run_docker(arguments: list[str], env: Mapping[str, str] | None, timeout: float,
                action: str) -> str:
    docker = shutil.which("docker", path=(env or os.environ).get("PATH"))
    if docker is None:
        raise TransportError(f"{action}: the docker CLI was not found on PATH; install it or "
                             "use an oci: or docker-archive: location instead")
    environment = dict(os.environ if env is None else env)
    try:
        completed = subprocess.run(
            [docker, *arguments], env=environment, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise TransportError(f"{action} timed out after {timeout:.0f} s; check that the Docker "
                             "daemon is responsive") from error
    except OSError as error:
        raise TransportError(f"{action}: cannot run {docker}: {error.strerror}") from error

    if completed.returncode == 0:
        return completed.stdout
    message = _last_line(completed.stderr) or _last_line(completed.stdout) or "no output"
    host = environment.get("DOCKER_HOST") or "the default socket"
    if any(phrase in message.lower() for phrase in _UNREACHABLE):
        raise TransportError(f"{action}: no Docker daemon responded at {host} ({message}); check "
                             "that dockerd is running and that DOCKER_HOST or the docker "
                             "context points at it")
    raise TransportError(f"{action} failed (exit {completed.returncode}): {message}")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
