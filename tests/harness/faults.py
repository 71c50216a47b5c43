"""Fault-injection servers for tests. They are the only mocks in the suite, and are named as such.

`FaultProxy` is a reverse proxy in front of a real registry that, following a
programmable schedule, drops connections, stalls, truncates bodies or returns
5xx/429 with Retry-After. `DebianRepositoryServer` serves a small Debian-style
repository of real .deb files, signed with a throwaway test key, and can serve a
corrupted .deb, a Packages index that does not match its Release hash, an
InRelease with a bad signature or one whose Valid-Until has passed.

Both listen on 127.0.0.1 only. Every stall is bounded by MAX_STALL seconds and
every rule by a count, so no test can hang on them.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import http.server
import logging
import lzma
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Self

from debian.deb822 import Packages

logger = logging.getLogger(__name__)

MAX_STALL = 30.0
UPSTREAM_TIMEOUT = 60.0
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
}


@dataclass
class FaultRule:
    """A fault for requests whose method and path match, applied to the next `times` of them.

    action: `drop` (close without a response), `stall` (wait `delay` seconds,
    at most MAX_STALL, then forward), `status` (respond with `status` and an
    optional Retry-After header), `truncate` (forward but cut the body after
    `keep_bytes` and close).
    """

    action: str
    method: str | None = None
    path: str | None = None
    times: int = 1
    status: int = 500
    retry_after: str | None = None
    delay: float = 0.0
    keep_bytes: int = 0
    used: int = field(default=0, init=False)

    def matches(self, method: str, path: str) -> bool:
        if self.used >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    action: str
    status: int | None


class _QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that logs client disconnects instead of printing tracebacks."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _LoopbackServer:
    """A `_QuietServer` on 127.0.0.1 with a free port, served from a daemon thread."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FaultProxy(_LoopbackServer):
    """A loopback HTTP reverse proxy to `upstream` (a real registry) that injects faults.

    A fault-injection mock: only the faults are fake; every request that is not
    faulted is forwarded unchanged to the real registry.
    """

    def __init__(self, upstream: str, upstream_context: ssl.SSLContext | None = None) -> None:
        self.upstream = upstream
        self.upstream_context = upstream_context
        self.rules: list[FaultRule] = []
        self.requests: list[ProxiedRequest] = []
        self._lock = threading.Lock()
        super().__init__(_make_proxy_handler(self))

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, *rules: FaultRule) -> None:
        with self._lock:
            self.rules.extend(rules)

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def take_rule(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.used += 1
                    return rule
            return None

    def record(self, method: str, path: str, action: str, status: int | None) -> None:
        with self._lock:
            self.requests.append(ProxiedRequest(method, path, action, status))


def _make_proxy_handler(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("fault proxy: " + format, *args)

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length", "0") or "0")
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            body = self._read_body()
            rule = proxy.take_rule(self.command, self.path)
            action = rule.action if rule else "pass"

            if rule is not None and rule.action == "drop":
                proxy.record(self.command, self.path, action, None)
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if rule is not None and rule.action == "status":
                proxy.record(self.command, self.path, action, rule.status)
                self.send_response(rule.status)
                if rule.retry_after is not None:
                    self.send_header("Retry-After", rule.retry_after)
                payload = b'{"errors":[{"code":"UNAVAILABLE","message":"injected fault"}]}'
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            if rule is not None and rule.action == "stall":
                time.sleep(min(rule.delay, MAX_STALL))

            status, reason, headers, data = self._forward(body)
            proxy.record(self.command, self.path, action, status)
            self.send_response(status, reason)
            for key, value in headers:
                if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                    self.send_header(key, value)
            length = _content_length(headers, data, self.command)
            self.send_header("Content-Length", str(length))
            if rule is not None and rule.action == "truncate":
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data[: rule.keep_bytes])
                self.close_connection = True
                return
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
            connection: http.client.HTTPConnection
            if proxy.upstream_context is not None:
                connection = http.client.HTTPSConnection(
                    proxy.upstream, timeout=UPSTREAM_TIMEOUT, context=proxy.upstream_context
                )
            else:
                connection = http.client.HTTPConnection(proxy.upstream, timeout=UPSTREAM_TIMEOUT)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            headers["Content-Length"] = str(len(body))
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                return response.status, response.reason, response.getheaders(), data
            finally:
                connection.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    return Handler


def _content_length(headers: Sequence[tuple[str, str]], data: bytes, method: str) -> int:
    if method == "HEAD":
        for key, value in headers:
            if key.lower() == "content-length":
                return int(value)
        return 0
    return len(data)


# Debian repository with faults.


@dataclass(frozen=True)
class TestRepository:
    """A signed Debian-style repository on disk; `keyring` is the test key's public keyring."""

    root: Path
    suite: str
    component: str
    architecture: str
    keyring: Path
    packages: tuple[str, ...]
    __test__ = False


def _gpg(home: Path, *args: str, input_data: bytes | None = None) -> bytes:
    result = subprocess.run(
        [
            "gpg",
            "--batch",
            "--quiet",
            "--homedir",
            str(home),
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            *args,
        ],
        input=input_data,
        capture_output=True,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"gpg {' '.join(args[:2])} failed: {result.stderr.decode()[-1000:]}")
    return result.stdout


def _make_key(home: Path, name: str) -> None:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _gpg(
        home,
        "--quick-gen-key",
        f"{name} <{name.replace(' ', '-')}@test.invalid>",
        "ed25519",
        "sign",
        "2d",
    )


def _flip_middle_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def _release_text(
    root: Path, suite: str, component: str, arch: str, valid_until: datetime, files: Iterable[str]
) -> str:
    # The Date stays before Valid-Until, as in a real release that later expired.
    now = min(datetime.now(UTC), valid_until - timedelta(days=1))
    lines = [
        "Origin: suture-test",
        "Label: suture-test",
        f"Suite: {suite}",
        f"Codename: {suite}",
        f"Date: {format_datetime(now, usegmt=True)}",
        f"Valid-Until: {format_datetime(valid_until, usegmt=True)}",
        f"Architectures: {arch}",
        f"Components: {component}",
        "SHA256:",
    ]
    for name in files:
        data = (root / "dists" / suite / name).read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data):>16} {name}")
    return "\n".join(lines) + "\n"


def build_test_repository(
    dest: Path,
    debs: Sequence[tuple[Path, Packages]],
    suite: str = "bookworm-security",
    component: str = "main",
    architecture: str = "amd64",
) -> TestRepository:
    """Write a repository of real `.deb` files into `dest`, signed with a new test key.

    `debs` pairs each .deb with its stanza from a real Packages index (for example
    from `tests.harness.debrepo.download_debs`). Besides the good `InRelease`, the
    directory contains the variants that `DebianRepositoryServer` serves on request.
    """
    dists = dest / "dists" / suite
    binary = dists / component / f"binary-{architecture}"
    binary.mkdir(parents=True)
    pool = dest / "pool" / component
    pool.mkdir(parents=True)

    stanzas: list[str] = []
    for deb, stanza in debs:
        target = pool / deb.name
        shutil.copyfile(deb, target)
        fields = {k: v for k, v in stanza.items() if k not in ("Filename",)}
        fields["Filename"] = f"pool/{component}/{deb.name}"
        fields["Size"] = str(target.stat().st_size)
        fields["SHA256"] = hashlib.sha256(target.read_bytes()).hexdigest()
        stanzas.append("".join(f"{k}: {v}\n" for k, v in fields.items()))
    packages_text = "\n".join(stanzas).encode("utf-8")
    (binary / "Packages").write_bytes(packages_text)
    (binary / "Packages.xz").write_bytes(lzma.compress(packages_text))
    (binary / "Packages.gz").write_bytes(gzip.compress(packages_text, mtime=0))
    index_names = [
        f"{component}/binary-{architecture}/{n}" for n in ("Packages", "Packages.xz", "Packages.gz")
    ]

    keys = dest.parent / f"{dest.name}-keys"
    good_home, other_home = keys / "good", keys / "other"
    _make_key(good_home, "suture test repository")
    _make_key(other_home, "suture untrusted key")
    keyring = keys / "repository-keyring.gpg"
    keyring.write_bytes(_gpg(good_home, "--export"))

    future = datetime.now(UTC) + timedelta(days=7)
    release = _release_text(dest, suite, component, architecture, future, index_names)
    (dists / "Release").write_text(release, encoding="utf-8")
    (dists / "InRelease").write_bytes(
        _gpg(good_home, "--clearsign", "--digest-algo", "SHA256", input_data=release.encode())
    )
    (dists / "Release.gpg").write_bytes(
        _gpg(good_home, "--detach-sign", "--armor", input_data=release.encode())
    )

    # Variants served by the fault modes.
    (dists / "InRelease.wrong-key").write_bytes(
        _gpg(other_home, "--clearsign", "--digest-algo", "SHA256", input_data=release.encode())
    )
    good = (dists / "InRelease").read_text(encoding="utf-8")
    (dists / "InRelease.tampered").write_text(
        good.replace("Origin: suture-test", "Origin: suture-tamper"), encoding="utf-8"
    )
    past = datetime.now(UTC) - timedelta(days=2)
    expired = _release_text(dest, suite, component, architecture, past, index_names)
    (dists / "InRelease.expired").write_bytes(
        _gpg(good_home, "--clearsign", "--digest-algo", "SHA256", input_data=expired.encode())
    )
    # gpg started an agent per home directory; stop them so no daemon outlives the test.
    for home in (good_home, other_home):
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
    names = tuple(str(stanza["Package"]) for _deb, stanza in debs)
    return TestRepository(dest, suite, component, architecture, keyring, names)


FAULTS = ("corrupt-deb", "corrupt-packages", "wrong-key", "tampered-inrelease", "expired")


class DebianRepositoryServer(_LoopbackServer):
    """Serve a `TestRepository` over loopback HTTP, with faults switched on by name.

    A fault-injection mock. The faults are:
    - `corrupt-deb`: one byte of every .deb flipped, same size.
    - `corrupt-packages`: Packages files whose hash no longer matches the Release file.
    - `wrong-key`: InRelease signed by a key the client does not trust.
    - `tampered-inrelease`: signed text changed after signing.
    - `expired`: Valid-Until two days in the past, correctly signed.
    """

    def __init__(self, repository: TestRepository) -> None:
        self.repository = repository
        self.faults: set[str] = set()
        self.requests: list[str] = []
        super().__init__(self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_faults(self, *faults: str) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown repository faults {sorted(unknown)}; known: {FAULTS}")
        self.faults = set(faults)

    def content(self, path: str) -> bytes | None:
        """Return what the server sends for `path` with the current faults, or None for 404."""
        root = self.repository.root.resolve()
        target = (root / path.lstrip("/")).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            return None
        if target.name.startswith("InRelease."):
            return None
        if target.name == "InRelease":
            for fault, variant in (
                ("wrong-key", "InRelease.wrong-key"),
                ("tampered-inrelease", "InRelease.tampered"),
                ("expired", "InRelease.expired"),
            ):
                if fault in self.faults:
                    return (target.parent / variant).read_bytes()
        data = target.read_bytes()
        if "corrupt-deb" in self.faults and target.suffix == ".deb":
            return _flip_middle_byte(data)
        if "corrupt-packages" in self.faults and target.name.startswith("Packages"):
            # Same size, different bytes: a client must notice through the Release hash.
            return _flip_middle_byte(data)
        return data

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("test repository: " + format, *args)

            def do_GET(self) -> None:
                self._serve(send_body=True)

            def do_HEAD(self) -> None:
                self._serve(send_body=False)

            def _serve(self, send_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                server.requests.append(path)
                data = server.content(path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if send_body:
                    self.wfile.write(data)

        return Handler
