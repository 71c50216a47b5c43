"""Registry pulls and pushes through the harness fault proxy: bounded retries, clear failures."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from suture.errors import RegistryError
from suture.image.model import Image
from suture.image.reference import Reference
from suture.image.registry.artifacts import read_registry, write_registry
from suture.image.registry.client import RegistryClient, RegistrySettings
from suture.image.registry.credentials import CredentialSources
from suture.image.registry.retry import RetryPolicy
from suture.image.transports import parse_location, read_artifact
from tests.harness.faults import FaultProxy, FaultRule
from tests.harness.registry import Registry
from tests.integration.registry_support import build_image, skopeo_digest

pytestmark = pytest.mark.integration


def _settings(
    waits: list[float], credentials: CredentialSources | None = None
) -> RegistrySettings:
    # Waits are recorded instead of slept, so the tests check them without taking the time.
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=3.0, sleep=waits.append)
    return RegistrySettings(retry=policy, timeout=20.0,
                            credentials=credentials or CredentialSources())


def _layers(image: Image) -> list[bytes]:
    return [image.blobs.read_blob(layer) for layer in image.manifest.layers]


def test_push_pull_survive_faults(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [401, 402], layer_size=100_000)
    waits: list[float] = []
    with FaultProxy(registry_plain.host) as proxy:
        proxy.add(
            FaultRule("drop", method="HEAD", path=r"/blobs/sha256:"),
            FaultRule("status", method="POST", path=r"/blobs/uploads/", status=500, times=2),
            FaultRule("status", method="PUT", path=r"/manifests/", status=429, retry_after="1"),
            FaultRule("stall", method="GET", path=r"/manifests/", delay=0.2),
            FaultRule("truncate", method="GET", path=r"/blobs/sha256:", keep_bytes=100),
            FaultRule("status", method="GET", path=r"/blobs/sha256:", status=502, times=2),
        )
        with RegistryClient(proxy.host, _settings(waits)) as client:
            reference = Reference.parse(f"{proxy.host}/faults/app:v1")
            pushed = write_registry(client, reference, image)
            pulled = read_registry(client, reference)
            assert isinstance(pulled, Image)
            layers = _layers(pulled)
        unused = [rule for rule in proxy.rules if rule.used < rule.times]

    assert pushed == image.digest
    assert layers == _layers(image)
    assert unused == []
    assert 1.0 in waits
    assert skopeo_digest(f"{registry_plain.host}/faults/app:v1", "--tls-verify=false") == pushed


def test_pull_faults_with_auth_and_tls_upstream(
    registry_auth: Registry, tmp_path: Path
) -> None:
    # Pushes go straight to the registry: behind this plain-HTTP proxy the TLS registry would
    # send https upload locations, because the proxy sets no X-Forwarded-Proto header.
    assert registry_auth.ca_file is not None
    image = build_image(tmp_path, [403])
    credentials = CredentialSources(registry_auth.username, registry_auth.password)
    direct = RegistrySettings(ca_file=registry_auth.ca_file, credentials=credentials)
    with RegistryClient(registry_auth.host, direct) as client:
        write_registry(client, Reference.parse(f"{registry_auth.host}/faults/auth:v1"), image)
    context = ssl.create_default_context(cafile=str(registry_auth.ca_file))
    waits: list[float] = []

    with FaultProxy(registry_auth.host, context) as proxy:
        proxy.add(FaultRule("status", method="GET", path=r"/manifests/", status=503, times=3),
                  FaultRule("drop", method="GET", path=r"/blobs/sha256:"))
        with RegistryClient(proxy.host, _settings(waits, credentials=credentials)) as client:
            pulled = read_registry(client, Reference.parse(f"{proxy.host}/faults/auth:v1"))
            assert isinstance(pulled, Image)
            layers = _layers(pulled)
        statuses = {r.status for r in proxy.requests if r.action == "pass"}

    assert pulled.digest == image.digest
    assert layers == _layers(image)
    assert len(waits) == 4
    assert 401 in statuses


def test_endless_faults_leave_no_tag(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [404])
    waits: list[float] = []
    with FaultProxy(registry_plain.host) as proxy:
        proxy.add(FaultRule("status", method="PUT", path=r"/manifests/", status=500, times=100))
        with RegistryClient(proxy.host, _settings(waits)) as client, \
                pytest.raises(RegistryError) as caught:
            write_registry(client, Reference.parse(f"{proxy.host}/faults/never:v1"), image)
        manifest_puts = [r for r in proxy.requests if r.method == "PUT" and "/manifests/" in r.path]

    message = str(caught.value)
    assert "faults/never" in message
    assert "HTTP 500" in message
    assert "after 5 attempts" in message
    assert len(manifest_puts) == 5
    with pytest.raises(RegistryError, match="HTTP 404"):
        read_artifact(parse_location(f"{registry_plain.host}/faults/never:v1"))


def test_endless_drops_on_pull(registry_plain: Registry, tmp_path: Path) -> None:
    waits: list[float] = []
    with FaultProxy(registry_plain.host) as proxy:
        proxy.add(FaultRule("drop", method="GET", path=r"/manifests/", times=100))
        with RegistryClient(proxy.host, _settings(waits)) as client, \
                pytest.raises(RegistryError, match=r"faults/absent.*after 5 attempt"):
            read_registry(client, Reference.parse(f"{proxy.host}/faults/absent:v1"))

    assert len(waits) == 4
