"""Run the CNCF distribution registry (Debian's `docker-registry`) on loopback for tests.

Three flavours: plain HTTP, TLS with a CA made by this module, and TLS with
htpasswd basic auth. Each registry keeps its storage, certificates and
request log in a directory of its own and is stopped by PID.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.harness.process import stop_process

logger = logging.getLogger(__name__)

REGISTRY_BINARY = "/usr/bin/docker-registry"
START_TIMEOUT = 30.0
TEST_USERNAME = "suture"
# A throwaway password for a loopback-only test registry, not a secret.
TEST_PASSWORD = "correct-horse-battery-staple"


@dataclass(frozen=True)
class Registry:
    """A running registry: where it listens and what a client needs to reach it."""

    host: str
    scheme: str
    ca_file: Path | None
    username: str | None
    password: str | None
    docker_config: Path
    log_path: Path
    storage: Path
    pid: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file))

    def auth_header(self) -> dict[str, str]:
        if self.username is None or self.password is None:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request_count(self) -> int:
        """Return how many HTTP requests the access log has recorded so far."""
        return len(request_lines(self.log_path))


def request_lines(log_path: Path) -> list[str]:
    """Return the access-log lines (combined log format) from a registry log."""
    if not log_path.exists():
        return []
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [
        line
        for line in lines
        if '"GET ' in line
        or '"HEAD ' in line
        or '"PUT ' in line
        or '"POST ' in line
        or '"PATCH ' in line
        or '"DELETE ' in line
    ]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """Create a CA and a server certificate for 127.0.0.1 and localhost with openssl.

    Both keys are ECDSA P-256: openssl makes one in about 8 ms, and an RSA-2048 key took
    about 200 ms here.

    Returns (CA certificate, server certificate, server key); the returned CA
    certificate is alone in its directory, for clients that take a certificate directory.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.crt"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-sha256",
        "-subj",
        "/CN=suture test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca_cert),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run(
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    ext.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        encoding="utf-8",
    )
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca_cert),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(cert),
    )
    # Clients read a whole directory of trust files (skopeo's --cert-dir rejects stray keys),
    # so the CA certificate also gets a directory of its own.
    trust = directory.parent / "trust"
    trust.mkdir(exist_ok=True)
    shutil.copyfile(ca_cert, trust / "ca.crt")
    return trust / "ca.crt", cert, key


def _write_config(
    path: Path, port: int, storage: Path, tls: tuple[Path, Path] | None, htpasswd: Path | None
) -> None:
    # The registry accepts YAML; JSON is a subset of it and needs no YAML library here.
    http: dict[str, object] = {
        "addr": f"127.0.0.1:{port}",
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls is not None:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, object] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if htpasswd is not None:
        config["auth"] = {"htpasswd": {"realm": "suture-test", "path": str(htpasswd)}}
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")


def _write_docker_config(
    directory: Path, host: str, username: str | None, password: str | None
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    auths: dict[str, dict[str, str]] = {}
    if username is not None and password is not None:
        auths[host] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    (directory / "config.json").write_text(json.dumps({"auths": auths}, indent=2), encoding="utf-8")


def _wait_ready(
    url: str, context: ssl.SSLContext | None, process: subprocess.Popen[bytes], log_path: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited with {process.returncode}: "
                f"{log_path.read_text(encoding='utf-8', errors='replace')[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{url}/v2/", timeout=2, context=context):
                return
        except urllib.error.HTTPError as error:
            if error.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"docker-registry at {url} did not answer /v2/ within {START_TIMEOUT}s")


def start_registry(directory: Path, *, tls: bool = False, auth: bool = False) -> Registry:
    """Start a registry whose files live in `directory`; wait until /v2/ responds."""
    directory.mkdir(parents=True, exist_ok=True)
    storage = directory / "storage"
    storage.mkdir(exist_ok=True)
    port = free_port()
    host = f"127.0.0.1:{port}"

    ca_file: Path | None = None
    tls_pair: tuple[Path, Path] | None = None
    if tls or auth:
        ca_file, cert, key = make_ca_and_server_cert(directory / "certs")
        tls_pair = (cert, key)

    username = password = None
    htpasswd: Path | None = None
    if auth:
        username, password = TEST_USERNAME, TEST_PASSWORD
        entry = subprocess.run(
            ["htpasswd", "-Bbn", username, password], check=True, capture_output=True, text=True
        ).stdout.strip()
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(entry + "\n", encoding="utf-8")

    config = directory / "config.yml"
    _write_config(config, port, storage, tls_pair, htpasswd)
    docker_config = directory / "docker-config"
    _write_docker_config(docker_config, host, username, password)

    log_path = directory / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    registry = Registry(
        host=host,
        scheme="https" if tls_pair else "http",
        ca_file=ca_file,
        username=username,
        password=password,
        docker_config=docker_config,
        log_path=log_path,
        storage=storage,
        pid=process.pid,
    )
    try:
        _wait_ready(registry.url, registry.ssl_context(), process, log_path)
    except BaseException:
        stop_registry(registry)
        raise
    logger.info("registry %s started (pid %d)", registry.url, process.pid)
    return registry


def stop_registry(registry: Registry, timeout: float = 10.0) -> None:
    """Stop the registry by PID: SIGTERM, then SIGKILL after `timeout` seconds."""
    stop_process(registry.pid, "registry", timeout, poll=0.05)
