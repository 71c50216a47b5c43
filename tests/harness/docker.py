"""Start a private `dockerd` for tests: own data root, exec root and unix socket, no systemd."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.process import stop_process

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0


class DockerUnavailable(RuntimeError):
    """dockerd is missing or could not start here; the message carries its own output."""


@dataclass(frozen=True)
class DockerDaemon:
    host: str
    env: dict[str, str]
    pid: int
    log_path: Path
    exec_root: Path

    def run(self, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; raises CalledProcessError on failure."""
        return subprocess.run(
            ["docker", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        )


def start_dockerd(directory: Path, data_root: Path | None = None) -> DockerDaemon:
    """Start dockerd with everything under `directory` and wait until `docker info` works.

    `data_root`, where dockerd keeps images and containers, defaults to `directory/data`.
    Raises DockerUnavailable with dockerd's own error output if it cannot start.
    """
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            raise DockerUnavailable(f"{tool} is not installed (Debian package docker.io)")
    # A unix socket path must stay under about 100 bytes, so keep it short.
    directory.mkdir(parents=True, exist_ok=True)
    socket_path = directory / "docker.sock"
    host = f"unix://{socket_path}"
    log_path = directory / "dockerd.log"
    command = [
        "dockerd",
        "--data-root",
        str(data_root or directory / "data"),
        "--exec-root",
        str(directory / "exec"),
        "--pidfile",
        str(directory / "dockerd.pid"),
        "--host",
        host,
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--ip6tables=false",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    env = {**os.environ, "DOCKER_HOST": host, "DOCKER_CONFIG": str(directory / "client")}
    daemon = DockerDaemon(host=host, env=env, pid=process.pid, log_path=log_path,
                          exec_root=directory / "exec")

    deadline = time.monotonic() + START_TIMEOUT
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = log_path.read_text(encoding="utf-8", errors="replace")
            raise DockerUnavailable(f"dockerd exited with {process.returncode}: {output[-1500:]}")
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if result.returncode == 0:
            logger.info("dockerd %s started (pid %d)", result.stdout.strip(), process.pid)
            return daemon
        last_error = result.stderr.strip()
        time.sleep(0.5)
    stop_dockerd(daemon)
    raise DockerUnavailable(f"dockerd did not answer within {START_TIMEOUT}s: {last_error}")


def stop_dockerd(daemon: DockerDaemon, timeout: float = 30.0) -> None:
    """Stop dockerd by PID (it stops its own containerd); SIGKILL after `timeout` seconds."""
    stop_process(daemon.pid, "dockerd", timeout)

    # dockerd leaves its default network namespace mounted under the exec root.
    netns = daemon.exec_root / "netns" / "default"
    if os.path.ismount(netns):
        subprocess.run(["umount", str(netns)], check=False)
