"""Test images built in memory, and a fault-injecting HTTP proxy for registry tests.

The images are small random layers written as real gzip tars, so every digest is computed by
the test, not by suture. The proxy is the one mock in these tests. It sits between suture and
a real registry and replaces chosen requests with dropped connections, error statuses or
truncated bodies.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import random
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from suture.image.model import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    BlobStore,
    Descriptor,
    Image,
    ImageConfig,
    ImageIndex,
    Index,
    Manifest,
    RawManifest,
    canonical_json,
)
from suture.image.store import FileBlobStore


def random_layer(directory: Path, seed: int, size: int = 20_000) -> tuple[Path, Descriptor, str]:
    """Write a gzip tar layer with one random file; return (path, descriptor, diff_id)."""
    generator = random.Random(seed)
    content = generator.randbytes(size)
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(f"data/file-{seed}.bin")
        info.size = len(content)
        info.mtime = 0
        archive.addfile(info, io.BytesIO(content))
    tar_bytes = tar_buffer.getvalue()
    compressed = gzip.compress(tar_bytes, mtime=0)
    digest = "sha256:" + hashlib.sha256(compressed).hexdigest()
    path = directory / digest.replace(":", "-")
    path.write_bytes(compressed)
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    return path, Descriptor(OCI_LAYER_GZIP, digest, len(compressed)), diff_id


def build_image(
    directory: Path,
    seeds: list[int],
    architecture: str = "amd64",
    base: Image | None = None,
    layer_size: int = 20_000,
) -> Image:
    """Build an image of random layers, on top of `base`'s layers when given."""
    directory.mkdir(parents=True, exist_ok=True)
    layers = list(base.manifest.layers) if base is not None else []
    diff_ids = list(base.config.diff_ids) if base is not None else []
    paths: dict[str, Path] = {}
    for seed in seeds:
        path, descriptor, diff_id = random_layer(directory, seed, layer_size)
        layers.append(descriptor)
        diff_ids.append(diff_id)
        paths[descriptor.digest] = path
    config = ImageConfig.build({
        "architecture": architecture,
        "os": "linux",
        "config": {"Labels": {"seeds": ",".join(map(str, seeds))}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {n}"} for n in range(len(diff_ids))],
    })
    manifest = Manifest.build({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": Descriptor.for_bytes(OCI_CONFIG, config.raw).to_json(),
        "layers": [layer.to_json() for layer in layers],
        "annotations": {"org.example.note": "unknown fields survive"},
    })
    fallback: BlobStore | None = base.blobs if base is not None else None
    return Image(manifest, config, FileBlobStore(paths, fallback))


def build_index(directory: Path) -> ImageIndex:
    """Build an index of an amd64 and an arm64 image plus an attestation-style manifest."""
    amd64 = build_image(directory / "amd64", [101, 102], "amd64")
    arm64 = build_image(directory / "arm64", [201], "arm64")

    statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1"}).encode()
    statement_path = directory / "statement.json"
    statement_path.write_bytes(statement)
    statement_descriptor = Descriptor.for_bytes("application/vnd.in-toto+json", statement)
    empty = b"{}"
    empty_path = directory / "empty.json"
    empty_path.write_bytes(empty)
    empty_descriptor = Descriptor.for_bytes("application/vnd.oci.empty.v1+json", empty)
    attestation_raw = canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": empty_descriptor.to_json(),
        "layers": [statement_descriptor.to_json()],
    })
    attestation = RawManifest(
        Descriptor.for_bytes(OCI_MANIFEST, attestation_raw,
                             platform={"os": "unknown", "architecture": "unknown"},
                             annotations={"vnd.docker.reference.type": "attestation-manifest",
                                          "vnd.docker.reference.digest": amd64.digest}),
        attestation_raw,
        FileBlobStore({statement_descriptor.digest: statement_path,
                       empty_descriptor.digest: empty_path}),
        (empty_descriptor, statement_descriptor),
    )
    index = Index.build({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            amd64.manifest.descriptor(platform={"os": "linux", "architecture": "amd64"}).to_json(),
            arm64.manifest.descriptor(
                platform={"os": "linux", "architecture": "arm64", "variant": "v8"}).to_json(),
            attestation.descriptor.to_json(),
        ],
    })
    return ImageIndex(index, (amd64, arm64, attestation))


def skopeo_raw_digest(reference: str, *args: str) -> str:
    """Return the sha256 of the manifest skopeo fetches for `docker://reference`."""
    completed = subprocess.run(
        ["skopeo", "inspect", "--raw", *args, f"docker://{reference}"],
        check=True, capture_output=True, timeout=120,
    )
    return "sha256:" + hashlib.sha256(completed.stdout).hexdigest()


def skopeo_digest(reference: str, *args: str) -> str:
    """Return the digest skopeo reports for `docker://reference`."""
    completed = subprocess.run(
        ["skopeo", "inspect", "--format", "{{.Digest}}", *args, f"docker://{reference}"],
        check=True, capture_output=True, text=True, timeout=120,
    )
    return completed.stdout.strip()


def skopeo_cert_dir(ca_file: Path, directory: Path) -> Path:
    """Return a directory holding only the CA, as skopeo's --cert-dir expects."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(ca_file, directory / "ca.crt")
    return directory


def log_offset(log_path: Path) -> int:
    return os.path.getsize(log_path) if log_path.exists() else 0


def _wait_for_quiet_log(log_path: Path, quiet: float = 0.3, limit: float = 5.0) -> None:
    # The registry writes an access-log line after the response is sent, so the last lines
    # can arrive after the client has finished. Wait until the log stops growing.
    deadline = time.monotonic() + limit
    size = log_offset(log_path)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        current = log_offset(log_path)
        if current == size:
            return
        size = current


def log_requests_since(log_path: Path, offset: int) -> list[str]:
    """Return the request lines (`METHOD PATH`) the registry logged after byte `offset`."""
    _wait_for_quiet_log(log_path)
    with log_path.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    requests = []
    for line in text.splitlines():
        for method in ("GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"):
            marker = f'"{method} '
            if marker in line:
                request = line.split(marker, 1)[1].split(" HTTP/", 1)[0]
                requests.append(f"{method} {request}")
    return requests


# Fault injection.

# "forward", "drop" (close without a response), "truncate" (half the body), "corrupt" (flip a
# bit of the first body byte), "challenge" (401 with a Basic challenge), "redirect" (307 to the
# same proxy under the host name localhost), "partial" (send the registry half the request body,
# then drop both connections), or an HTTP status such as "500" or "429".
Action = str


@dataclass
class FaultPlan:
    """Decides, per request, what the proxy does; records what it did."""

    decide: Callable[[str, str, int], Action]
    retry_after: str = "1"
    seen: list[tuple[str, str, Action]] = field(default_factory=list)
    authorized: list[tuple[str, bool]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def action(self, method: str, path: str) -> Action:
        with self.lock:
            count = sum(1 for m, p, _ in self.seen if (m, p.split("?")[0]) ==
                        (method, path.split("?")[0]))
            action = self.decide(method, path, count)
            self.seen.append((method, path, action))
            return action


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FaultServer

    def log_message(self, format: str, *args: object) -> None:
        return

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        action = self.server.plan.action(self.command, self.path)
        with self.server.plan.lock:
            self.server.plan.authorized.append((self.path, "Authorization" in self.headers))
        if action == "drop":
            self.close_connection = True
            return
        if action == "partial":
            self._send_partial(body)
            self.close_connection = True
            return
        if action in ("challenge", "redirect"):
            self.send_response(401 if action == "challenge" else 307)
            if action == "challenge":
                self.send_header("WWW-Authenticate", 'Basic realm="fault-proxy"')
            else:
                port = self.server.server_address[1]
                self.send_header("Location", f"http://localhost:{port}{self.path}?redirected=1")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            return
        if action.isdigit():
            payload = json.dumps({"errors": [{"code": "INJECTED", "message": "fault"}]}).encode()
            self.send_response(int(action))
            if action == "429":
                self.send_header("Retry-After", self.server.plan.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
            self.close_connection = True
            return

        upstream = http.client.HTTPConnection(self.server.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        if action == "corrupt" and data:
            data = bytes([data[0] ^ 0x20]) + data[1:]
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if action == "truncate" and self.command != "HEAD":
            self.wfile.write(data[: len(data) // 2])
        elif self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    def _send_partial(self, body: bytes) -> None:
        host, port = self.server.upstream.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as upstream:
            head = [f"{self.command} {self.path} HTTP/1.1"]
            head += [f"{k}: {v}" for k, v in self.headers.items() if k.lower() != "connection"]
            head.append("Connection: close")
            upstream.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
            # Give the registry time to store what it received before the connection breaks.
            time.sleep(0.5)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


class _FaultServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = upstream
        self.plan = plan


@contextmanager
def fault_proxy(upstream: str, plan: FaultPlan) -> Iterator[str]:
    """Run a proxy to the plain-HTTP registry `upstream`; yield its `127.0.0.1:PORT`."""
    server = _FaultServer(upstream, plan)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
