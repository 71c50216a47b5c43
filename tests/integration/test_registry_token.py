"""Bearer token authentication against a registry configured for token auth.

The registry is the real distribution registry with `auth: token`. The token service is a small
server in this file that checks Basic credentials or a refresh token and signs RS256 JWTs with
`openssl dgst`, the way a production token service such as docker/auth does. It grants every
requested action to an authenticated client and nothing to an anonymous one.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from suture.errors import AuthError
from suture.image.model import Image
from suture.image.transports import TransportOptions, parse_location, read_artifact, write_artifact
from tests.harness.registry import free_port
from tests.integration.registry_support import (
    build_image,
    log_offset,
    log_requests_since,
    skopeo_digest,
)

pytestmark = pytest.mark.integration

SERVICE = "suture-token-registry"
ISSUER = "suture-token-issuer"
USERNAME = "token-user"
# Throwaway values for a loopback-only test service, not secrets.
PASSWORD = "token-password"
REFRESH_TOKEN = "refresh-token-value"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    """A token signer with the log of token requests (method, grant, scopes)."""

    key: Path
    certificate_der: bytes
    requests: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sign(self, subject: str, scopes: tuple[str, ...]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256",
                  "x5c": [base64.b64encode(self.certificate_der).decode()]}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + 300,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        signing_input = (_b64url(json.dumps(header).encode()) + "."
                         + _b64url(json.dumps(claims).encode()))
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(), capture_output=True, check=True, timeout=30,
        ).stdout
        return signing_input + "." + _b64url(signature)


class _TokenHandler(BaseHTTPRequestHandler):
    server: _TokenServer

    def log_message(self, format: str, *args: object) -> None:
        return

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        scopes = tuple(query.get("scope", []))
        authorization = self.headers.get("Authorization", "")
        expected = "Basic " + base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
        self._record("GET", "password" if authorization else "anonymous", scopes)
        if authorization and authorization != expected:
            self._reply(401, {"details": "invalid credentials"})
            return
        granted = scopes if authorization == expected else ()
        self._reply(200, {"token": self.server.service.sign(USERNAME, granted),
                          "expires_in": 300})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        scopes = tuple(" ".join(form.get("scope", [])).split())
        grant = form.get("grant_type", [""])[0]
        self._record("POST", grant, scopes)
        if grant != "refresh_token" or form.get("refresh_token", [""])[0] != REFRESH_TOKEN:
            self._reply(401, {"details": "invalid refresh token"})
            return
        self._reply(200, {"access_token": self.server.service.sign(USERNAME, scopes),
                          "expires_in": 300})

    def _record(self, method: str, grant: str, scopes: tuple[str, ...]) -> None:
        with self.server.service.lock:
            self.server.service.requests.append((method, grant, scopes))

    def _reply(self, status: int, document: dict[str, object]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _TokenServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, service: TokenService) -> None:
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.service = service


@dataclass(frozen=True)
class TokenRegistry:
    host: str
    log_path: Path
    service: TokenService


def _make_signing_certificate(directory: Path) -> tuple[Path, Path]:
    key, certificate = directory / "signer.key", directory / "signer.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-sha256",
         "-subj", "/CN=suture token signer", "-keyout", str(key), "-out", str(certificate)],
        check=True, capture_output=True, timeout=60,
    )
    return key, certificate


def _der(certificate: Path) -> bytes:
    return subprocess.run(
        ["openssl", "x509", "-in", str(certificate), "-outform", "DER"],
        check=True, capture_output=True, timeout=30,
    ).stdout


def _wait_for_registry(host: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"registry exited: {log_path.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2)
            return
        except urllib.error.HTTPError as error:
            if error.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("token-auth registry did not start within 30 s")


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    directory = tmp_path_factory.mktemp("registry-token")
    key, certificate = _make_signing_certificate(directory)
    service = TokenService(key, _der(certificate))
    server = _TokenServer(service)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()

    port = free_port()
    host = f"127.0.0.1:{port}"
    config = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(directory / "storage")}},
        "http": {"addr": host},
        "auth": {"token": {
            "realm": f"http://127.0.0.1:{server.server_address[1]}/token",
            "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(certificate),
        }},
    }
    config_path = directory / "config.yml"
    config_path.write_text(json.dumps(config), encoding="utf-8")
    log_path = directory / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(config_path)],
                                   stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_registry(host, process, log_path)
        yield TokenRegistry(host, log_path, service)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _password_options() -> TransportOptions:
    return TransportOptions(username=USERNAME, password=PASSWORD)


def test_bearer_push_pull(token_registry: TokenRegistry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [301, 302])
    location = parse_location(f"{token_registry.host}/bearer/app:v1")
    before = len(token_registry.service.requests)

    pushed = write_artifact(location, image, _password_options())
    pulled = read_artifact(location, _password_options())
    assert isinstance(pulled, Image)
    layers = [pulled.blobs.read_blob(layer) for layer in pulled.manifest.layers]

    requests = token_registry.service.requests[before:]
    scopes = {scope for _, _, request_scopes in requests for scope in request_scopes}
    assert pushed == image.digest
    assert layers == [image.blobs.read_blob(layer) for layer in image.manifest.layers]
    assert scopes == {"repository:bearer/app:pull,push", "repository:bearer/app:pull"}
    # One token per scope set, reused for every request that needs it.
    assert len(requests) == 2
    assert skopeo_digest(f"{token_registry.host}/bearer/app:v1", "--tls-verify=false",
                         f"--creds={USERNAME}:{PASSWORD}") == pushed


def test_bearer_identity_token(token_registry: TokenRegistry, tmp_path: Path) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(b"<token>:").decode()
    (config / "config.json").write_text(json.dumps({"auths": {
        token_registry.host: {"auth": auth, "identitytoken": REFRESH_TOKEN}}}))
    image = build_image(tmp_path, [303])
    before = len(token_registry.service.requests)

    pushed = write_artifact(parse_location(f"{token_registry.host}/bearer/identity:v1"), image,
                            TransportOptions(docker_config=config))

    grants = {grant for _, grant, _ in token_registry.service.requests[before:]}
    assert pushed == image.digest
    assert grants == {"refresh_token"}


def test_bearer_mount_scope(token_registry: TokenRegistry, tmp_path: Path) -> None:
    host = token_registry.host
    base = build_image(tmp_path / "base", [304, 305])
    write_artifact(parse_location(f"{host}/bearer/source:v1"), base, _password_options())
    source = read_artifact(parse_location(f"{host}/bearer/source:v1"), _password_options())
    assert isinstance(source, Image)
    patched = build_image(tmp_path / "patched", [306], base=source)
    before = len(token_registry.service.requests)
    offset = log_offset(token_registry.log_path)

    write_artifact(parse_location(f"{host}/bearer/target:v1"), patched, _password_options())

    scope_sets = {scopes for _, _, scopes in token_registry.service.requests[before:]}
    mounts = [r for r in log_requests_since(token_registry.log_path, offset) if "mount=" in r]
    assert ("repository:bearer/source:pull", "repository:bearer/target:pull,push") in scope_sets
    assert len(mounts) == 2


def test_bearer_anonymous_is_rejected(token_registry: TokenRegistry, tmp_path: Path) -> None:
    options = TransportOptions(docker_config=tmp_path / "none", auth_file=tmp_path / "none.json")
    with pytest.raises(AuthError, match=r"bearer/app.*HTTP 401"):
        read_artifact(parse_location(f"{token_registry.host}/bearer/app:v1"), options)


def test_bearer_wrong_password(token_registry: TokenRegistry) -> None:
    options = TransportOptions(username=USERNAME, password="wrong-password")
    with pytest.raises(AuthError, match="rejected the credentials from flags") as caught:
        read_artifact(parse_location(f"{token_registry.host}/bearer/app:v1"), options)
    assert "wrong-password" not in str(caught.value)
