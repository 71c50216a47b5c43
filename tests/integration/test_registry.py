"""Push and pull through real registries (plain, TLS, TLS with basic auth), checked by skopeo."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from suture.errors import AuthError, DigestMismatchError, RegistryError
from suture.image.cache import BlobCache
from suture.image.model import Image, ImageIndex, RawManifest
from suture.image.reference import Reference
from suture.image.registry.artifacts import read_registry, write_registry
from suture.image.registry.client import RegistryClient, RegistrySettings
from suture.image.registry.credentials import CredentialSources
from suture.image.registry.retry import RetryPolicy
from suture.image.transports import (
    TransportOptions,
    copy_artifact,
    parse_location,
    read_artifact,
    write_artifact,
)
from tests.harness.registry import Registry
from tests.integration.registry_support import (
    FaultPlan,
    build_image,
    build_index,
    fault_proxy,
    log_offset,
    log_requests_since,
    skopeo_cert_dir,
    skopeo_digest,
    skopeo_raw_digest,
)

pytestmark = pytest.mark.integration


def _no_wait() -> RetryPolicy:
    # Fault tests record the waits instead of sleeping through them.
    return RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=2.0, sleep=lambda _: None)


def _read_all_layers(image: Image) -> list[bytes]:
    return [image.blobs.read_blob(layer) for layer in image.manifest.layers]


def test_push_pull_plain(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [1, 2, 3])
    location = parse_location(f"docker://{registry_plain.host}/rt/plain:v1")

    pushed = write_artifact(location, image, TransportOptions())
    pulled = read_artifact(location, TransportOptions())

    assert pushed == image.digest
    assert isinstance(pulled, Image)
    assert pulled.manifest.raw == image.manifest.raw
    assert pulled.config.raw == image.config.raw
    assert _read_all_layers(pulled) == _read_all_layers(image)
    assert skopeo_digest(f"{registry_plain.host}/rt/plain:v1", "--tls-verify=false") == pushed


def test_push_pull_tls_with_ca(registry_tls: Registry, tmp_path: Path) -> None:
    assert registry_tls.ca_file is not None
    image = build_image(tmp_path, [11, 12])
    options = TransportOptions(ca_file=registry_tls.ca_file)
    location = parse_location(f"{registry_tls.host}/rt/tls:v1")

    pushed = write_artifact(location, image, options)
    pulled = read_artifact(location, options)

    assert isinstance(pulled, Image)
    assert pulled.digest == image.digest
    cert_dir = skopeo_cert_dir(registry_tls.ca_file, tmp_path / "certs")
    assert skopeo_digest(f"{registry_tls.host}/rt/tls:v1", f"--cert-dir={cert_dir}") == pushed


def test_tls_without_ca_is_rejected(registry_tls: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [13])
    location = parse_location(f"{registry_tls.host}/rt/noca:v1")
    with pytest.raises(RegistryError, match="TLS") as caught:
        write_artifact(location, image, TransportOptions(timeout=10.0, retry=_no_wait()))
    message = str(caught.value)
    assert "--registry-ca FILE" in message
    assert f"--insecure-registry {registry_tls.host}" in message
    # The plain-HTTP fallback's 400 from the HTTPS port is not worth reporting.
    assert "HTTP 400" not in message


def test_tls_insecure_registry_skips_verification(registry_tls: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [14])
    options = TransportOptions(insecure_registries=frozenset({registry_tls.host}))
    location = parse_location(f"{registry_tls.host}/rt/insecure:v1")
    assert write_artifact(location, image, options) == image.digest


def test_index_round_trip(registry_plain: Registry, tmp_path: Path) -> None:
    index = build_index(tmp_path)
    location = parse_location(f"{registry_plain.host}/rt/index:multi")

    pushed = write_artifact(location, index, TransportOptions())
    pulled = read_artifact(location, TransportOptions())

    assert pushed == index.digest
    assert isinstance(pulled, ImageIndex)
    assert pulled.index.raw == index.index.raw
    kinds = [type(child).__name__ for child in pulled.children]
    assert kinds == ["Image", "Image", "RawManifest"]
    attestation = pulled.children[2]
    assert isinstance(attestation, RawManifest)
    assert [d.digest for d in attestation.references] == [
        d.digest for d in index.children[2].references  # type: ignore[union-attr]
    ]
    host = registry_plain.host
    assert skopeo_raw_digest(f"{host}/rt/index:multi", "--tls-verify=false") == pushed
    for child in index.children:
        digest = child.descriptor.digest if isinstance(child, RawManifest) else child.digest
        assert skopeo_raw_digest(f"{host}/rt/index@{digest}", "--tls-verify=false") == digest


def test_copy_between_repositories(registry_plain: Registry, tmp_path: Path) -> None:
    index = build_index(tmp_path)
    source = parse_location(f"{registry_plain.host}/rt/copy-src:v1")
    destination = parse_location(f"{registry_plain.host}/rt/copy-dst:v1")
    write_artifact(source, index, TransportOptions())

    copied = copy_artifact(source, destination, TransportOptions())

    assert copied == index.digest
    assert skopeo_raw_digest(f"{registry_plain.host}/rt/copy-dst:v1", "--tls-verify=false") \
        == index.digest


def test_pull_by_digest(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [21])
    write_artifact(parse_location(f"{registry_plain.host}/rt/bydigest:v1"), image)
    pulled = read_artifact(parse_location(f"{registry_plain.host}/rt/bydigest@{image.digest}"))
    assert pulled.digest == image.digest


def test_pull_missing_tag_names_repository(registry_plain: Registry) -> None:
    with pytest.raises(RegistryError, match=r"rt/absent.*HTTP 404.*check that the repository"):
        read_artifact(parse_location(f"{registry_plain.host}/rt/absent:nope"))


def test_push_digest_reference_must_match(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [22])
    other = "sha256:" + "0" * 64
    with pytest.raises(RegistryError, match="digest"):
        write_artifact(parse_location(f"{registry_plain.host}/rt/d@{other}"), image)


def test_auth_with_docker_config(registry_auth: Registry, tmp_path: Path) -> None:
    assert registry_auth.ca_file is not None
    image = build_image(tmp_path, [31, 32])
    options = TransportOptions(ca_file=registry_auth.ca_file,
                               docker_config=registry_auth.docker_config)
    location = parse_location(f"{registry_auth.host}/rt/auth:v1")

    pushed = write_artifact(location, image, options)
    pulled = read_artifact(location, options)

    assert pulled.digest == pushed
    cert_dir = skopeo_cert_dir(registry_auth.ca_file, tmp_path / "certs")
    creds = f"--creds={registry_auth.username}:{registry_auth.password}"
    assert skopeo_digest(f"{registry_auth.host}/rt/auth:v1", f"--cert-dir={cert_dir}", creds) \
        == pushed


def test_auth_with_flags(registry_auth: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [33])
    options = TransportOptions(ca_file=registry_auth.ca_file, username=registry_auth.username,
                               password=registry_auth.password,
                               docker_config=tmp_path / "no-config")
    location = parse_location(f"{registry_auth.host}/rt/flags:v1")
    assert write_artifact(location, image, options) == image.digest


def test_auth_with_credential_helper(
    registry_auth: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-suturetest"
    secret = json.dumps({"ServerURL": registry_auth.host, "Username": registry_auth.username,
                         "Secret": registry_auth.password})
    helper.write_text(
        "#!/bin/sh\nread server\n"
        f'if [ "$server" = "{registry_auth.host}" ]; then printf \'%s\' \'{secret}\'; exit 0; fi\n'
        "echo 'credentials not found in native keychain'; exit 1\n",
        encoding="utf-8",
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(
        json.dumps({"credHelpers": {registry_auth.host: "suturetest"}}), encoding="utf-8")

    image = build_image(tmp_path, [34])
    options = TransportOptions(ca_file=registry_auth.ca_file, docker_config=config)
    location = parse_location(f"{registry_auth.host}/rt/helper:v1")
    assert write_artifact(location, image, options) == image.digest
    assert read_artifact(location, options).digest == image.digest


def test_auth_missing_credentials(registry_auth: Registry, tmp_path: Path) -> None:
    options = TransportOptions(ca_file=registry_auth.ca_file, docker_config=tmp_path / "none",
                               auth_file=tmp_path / "none.json")
    with pytest.raises(AuthError, match=f"{registry_auth.host} requires credentials") as caught:
        read_artifact(parse_location(f"{registry_auth.host}/rt/auth:v1"), options)
    assert f"docker login {registry_auth.host}" in str(caught.value)
    assert "REGISTRY_AUTH_FILE" in str(caught.value)
    assert "username and password" not in str(caught.value)


def test_auth_wrong_password_hides_it(registry_auth: Registry, tmp_path: Path) -> None:
    wrong = "not-the-password-" + "x" * 8
    options = TransportOptions(ca_file=registry_auth.ca_file, username=registry_auth.username,
                               password=wrong)
    with pytest.raises(AuthError) as caught:
        read_artifact(parse_location(f"{registry_auth.host}/rt/auth:v1"), options)
    assert "HTTP 401" in str(caught.value)
    assert wrong not in str(caught.value)
    assert base64.b64encode(f"{registry_auth.username}:{wrong}".encode()).decode() \
        not in str(caught.value)


def test_patched_push_uploads_only_new_blobs(registry_plain: Registry, tmp_path: Path) -> None:
    host = registry_plain.host
    base = build_image(tmp_path / "base", [41, 42, 43])
    write_artifact(parse_location(f"{host}/rt/mount-src:v1"), base)
    source = read_artifact(parse_location(f"{host}/rt/mount-src:v1"))
    assert isinstance(source, Image)
    patched = build_image(tmp_path / "patched", [44], base=source)
    new_layer = patched.manifest.layers[-1].digest
    offset = log_offset(registry_plain.log_path)

    write_artifact(parse_location(f"{host}/rt/mount-dst:patched"), patched)

    requests = log_requests_since(registry_plain.log_path, offset)
    completed = [r for r in requests if r.startswith("PUT /v2/rt/mount-dst/blobs/uploads/")]
    uploaded = sorted(r.split("digest=")[1].split("&")[0].replace("%3A", ":") for r in completed)
    mounts = [r for r in requests if "mount=" in r]
    blob_reads = [r for r in requests if r.startswith("GET /v2/rt/mount-src/blobs/")]
    assert uploaded == sorted([new_layer, patched.manifest.config.digest])
    assert len(mounts) == 3
    assert blob_reads == []
    assert skopeo_digest(f"{host}/rt/mount-dst:patched", "--tls-verify=false") == patched.digest


def test_push_skips_existing_blobs(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [51, 52])
    location = parse_location(f"{registry_plain.host}/rt/again:v1")
    write_artifact(location, image)
    offset = log_offset(registry_plain.log_path)

    write_artifact(location, image)

    requests = log_requests_since(registry_plain.log_path, offset)
    assert not [r for r in requests if r.startswith(("POST", "PATCH"))]
    assert len([r for r in requests if r.startswith("HEAD /v2/rt/again/blobs/")]) == 3


def test_chunked_upload(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [61], layer_size=600_000)
    layer = image.manifest.layers[0]
    settings = RegistrySettings(chunk_threshold=1, chunk_size=64 * 1024)
    offset = log_offset(registry_plain.log_path)

    with RegistryClient(registry_plain.host, settings) as client:
        reference = Reference.parse(f"{registry_plain.host}/rt/chunked:v1")
        write_registry(client, reference, image)
        pulled = read_registry(client, reference)
        assert isinstance(pulled, Image)
        assert pulled.blobs.read_blob(layer) == image.blobs.read_blob(layer)

    patches = [r for r in log_requests_since(registry_plain.log_path, offset)
               if r.startswith("PATCH")]
    assert len(patches) >= layer.size // (64 * 1024)


def _proxied_options(policy: RetryPolicy, threshold: int = 64 * 1024 * 1024) -> RegistrySettings:
    return RegistrySettings(retry=policy, timeout=20.0, chunk_threshold=threshold,
                            chunk_size=64 * 1024)


def test_faults_are_retried(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [71, 72], layer_size=200_000)
    waits: list[float] = []
    policy = RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=3.0, sleep=waits.append)

    def decide(method: str, path: str, count: int) -> str:
        # The first try of each kind of request fails, a different way by method.
        if count > 0 or path == "/v2/":
            return "forward"
        return {"HEAD": "500", "POST": "429", "PUT": "drop", "GET": "truncate"}.get(method,
                                                                                    "forward")

    plan = FaultPlan(decide)
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, _proxied_options(policy)) as client:
        reference = Reference.parse(f"{proxy}/rt/faults:v1")
        pushed = write_registry(client, reference, image)
        pulled = read_registry(client, reference)
        assert isinstance(pulled, Image)
        layers = _read_all_layers(pulled)

    assert pushed == image.digest
    assert layers == _read_all_layers(image)
    assert {action for _, _, action in plan.seen} >= {"500", "429", "drop", "truncate"}
    assert 1.0 in waits
    assert skopeo_digest(f"{registry_plain.host}/rt/faults:v1", "--tls-verify=false") == pushed


def test_chunk_upload_resumes_after_drop(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [81], layer_size=400_000)

    def decide(method: str, path: str, count: int) -> str:
        return "drop" if method == "PATCH" and count in (1, 3) else "forward"

    plan = FaultPlan(decide)
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, _proxied_options(_no_wait(), threshold=1)) as client:
        pushed = write_registry(client, Reference.parse(f"{proxy}/rt/resume:v1"), image)

    assert pushed == image.digest
    assert [a for m, _, a in plan.seen if m == "PATCH"].count("drop") == 2
    status_queries = [p for m, p, _ in plan.seen if m == "GET" and "/blobs/uploads/" in p]
    assert len(status_queries) == 2


def test_endless_faults_fail_without_tag(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [91])

    def decide(method: str, path: str, count: int) -> str:
        return "503" if method == "PUT" and "/manifests/" in path else "forward"

    plan = FaultPlan(decide)
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, _proxied_options(_no_wait())) as client, \
            pytest.raises(RegistryError, match=r"rt/endless.*HTTP 503.*after 5 attempts"):
        write_registry(client, Reference.parse(f"{proxy}/rt/endless:v1"), image)

    with pytest.raises(RegistryError, match="HTTP 404"):
        read_artifact(parse_location(f"{registry_plain.host}/rt/endless:v1"))


def test_endless_drops_fail_clearly(registry_plain: Registry, tmp_path: Path) -> None:
    plan = FaultPlan(lambda method, path, count: "drop" if path != "/v2/" else "forward")
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, _proxied_options(_no_wait())) as client, \
            pytest.raises(RegistryError, match="after 5 attempt"):
        read_registry(client, Reference.parse(f"{proxy}/rt/plain:v1"))
    assert len(plan.seen) <= 7


def test_corrupt_manifest_is_rejected(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [95])
    write_artifact(parse_location(f"{registry_plain.host}/rt/corrupt:v1"), image)

    plan = FaultPlan(lambda method, path, count: "corrupt" if "/manifests/" in path
                     else "forward")
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, _proxied_options(_no_wait())) as client:
        with pytest.raises(DigestMismatchError, match="Docker-Content-Digest"):
            client.get_manifest("rt/corrupt", "v1")
        with pytest.raises(DigestMismatchError, match=f"expected {image.digest}"):
            client.get_manifest("rt/corrupt", image.digest)


def test_corrupt_blob_is_rejected(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [96])
    write_artifact(parse_location(f"{registry_plain.host}/rt/corrupt-blob:v1"), image)
    layer = image.manifest.layers[0]

    plan = FaultPlan(lambda method, path, count: "corrupt" if path.endswith(layer.digest)
                     else "forward")
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, _proxied_options(_no_wait())) as client:
        pulled = read_registry(client, Reference.parse(f"{proxy}/rt/corrupt-blob:v1"))
        assert isinstance(pulled, Image)
        with pytest.raises(DigestMismatchError, match=layer.digest):
            pulled.blobs.read_blob(layer)


def test_blob_redirect_drops_authorization(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [97])
    write_artifact(parse_location(f"{registry_plain.host}/rt/redirect:v1"), image)
    layer = image.manifest.layers[0]

    def decide(method: str, path: str, count: int) -> str:
        if path == "/v2/":
            return "challenge"
        if method == "GET" and path.endswith(layer.digest):
            return "redirect"
        return "forward"

    plan = FaultPlan(decide)
    settings = RegistrySettings(credentials=CredentialSources("user", "password"),
                                retry=_no_wait())
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, settings) as client:
        pulled = read_registry(client, Reference.parse(f"{proxy}/rt/redirect:v1"))
        assert isinstance(pulled, Image)
        data = pulled.blobs.read_blob(layer)

    direct = [sent for path, sent in plan.authorized if path.endswith(layer.digest)]
    redirected = [sent for path, sent in plan.authorized if path.endswith("redirected=1")]
    assert data == image.blobs.read_blob(layer)
    assert direct == [True]
    assert redirected == [False]


def test_blob_cache_serves_repeated_reads(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path / "image", [98])
    location = parse_location(f"{registry_plain.host}/rt/cached:v1")
    write_artifact(location, image)
    layer = image.manifest.layers[0]
    progress: list[tuple[str, int, int | None]] = []
    options = TransportOptions(cache=BlobCache(tmp_path / "cache"),
                               progress=lambda *event: progress.append(event))
    offset = log_offset(registry_plain.log_path)

    pulled = read_artifact(location, options)
    assert isinstance(pulled, Image)
    first = pulled.blobs.read_blob(layer)
    second = pulled.blobs.read_blob(layer)

    blob_gets = [r for r in log_requests_since(registry_plain.log_path, offset)
                 if r == f"GET /v2/rt/cached/blobs/{layer.digest}"]
    assert first == image.blobs.read_blob(layer)
    assert second == first
    assert len(blob_gets) == 1
    assert progress[-1] == (f"download {layer.digest[:19]}", layer.size, layer.size)


def test_chunk_upload_restarts_after_partial_body(
    registry_plain: Registry, tmp_path: Path
) -> None:
    # distribution 2.8 keeps the bytes of a broken PATCH but then rejects the session as
    # "resumed at wrong offset", so the upload must start again in a new session.
    image = build_image(tmp_path, [99], layer_size=400_000)
    layer = image.manifest.layers[0]

    patches: list[str] = []

    def decide(method: str, path: str, count: int) -> str:
        if method == "PATCH":
            patches.append(path)
            return "partial" if len(patches) == 3 else "forward"
        return "forward"

    plan = FaultPlan(decide)
    with fault_proxy(registry_plain.host, plan) as proxy, \
            RegistryClient(proxy, _proxied_options(_no_wait(), threshold=1)) as client:
        reference = Reference.parse(f"{proxy}/rt/partial:v1")
        pushed = write_registry(client, reference, image)
        pulled = read_registry(client, reference)
        assert isinstance(pulled, Image)
        layers = _read_all_layers(pulled)

    sessions = [path for method, path, _ in plan.seen
                if method == "POST" and path.endswith("/blobs/uploads/")]
    assert pushed == image.digest
    assert layers == _read_all_layers(image)
    assert [action for _, _, action in plan.seen].count("partial") == 1
    assert len(sessions) == 3  # the layer twice, then the config
    assert layer.size > 3 * 64 * 1024


def test_push_without_tag_uses_latest(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [100])
    write_artifact(parse_location(f"{registry_plain.host}/rt/untagged"), image)
    pulled = read_artifact(parse_location(f"{registry_plain.host}/rt/untagged:latest"))
    assert pulled.digest == image.digest


def test_push_by_digest_only_sets_no_tag(registry_plain: Registry, tmp_path: Path) -> None:
    image = build_image(tmp_path, [110])
    host = registry_plain.host
    pushed = write_artifact(parse_location(f"{host}/rt/digest-only@{image.digest}"), image)
    assert pushed == image.digest
    assert read_artifact(parse_location(f"{host}/rt/digest-only@{image.digest}")).digest \
        == image.digest
    with pytest.raises(RegistryError, match="HTTP 404"):
        read_artifact(parse_location(f"{host}/rt/digest-only:latest"))


def test_index_push_order(registry_plain: Registry, tmp_path: Path) -> None:
    index = build_index(tmp_path)
    offset = log_offset(registry_plain.log_path)

    write_artifact(parse_location(f"{registry_plain.host}/rt/order:v1"), index)

    requests = log_requests_since(registry_plain.log_path, offset)
    puts = [r for r in requests if r.startswith("PUT ")]
    manifest_puts = [r.split("?")[0] for r in puts if "/manifests/" in r]
    assert puts[-1] == "PUT /v2/rt/order/manifests/v1"
    assert manifest_puts[:-1] == [
        f"PUT /v2/rt/order/manifests/{_child_digest(child)}" for child in index.children
    ]

    # Each child's blobs are uploaded before that child's manifest.
    position = {r.split("digest=")[1].replace("%3A", ":"): i
                for i, r in enumerate(puts) if "digest=" in r}
    for child in index.children:
        manifest_position = puts.index(f"PUT /v2/rt/order/manifests/{_child_digest(child)}")
        blobs = child.references if isinstance(child, RawManifest) else (
            *child.manifest.layers, child.manifest.config)  # type: ignore[union-attr]
        assert all(position[blob.digest] < manifest_position for blob in blobs)


def _child_digest(child: Image | ImageIndex | RawManifest) -> str:
    return child.descriptor.digest if isinstance(child, RawManifest) else child.digest
