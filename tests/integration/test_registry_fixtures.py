"""Fixture images through every registry flavour and back to a layout, checked by skopeo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from suture.image.model import Image, ImageIndex
from suture.image.transports import (
    TransportOptions,
    copy_artifact,
    parse_location,
    read_artifact,
)
from tests.conftest import Images
from tests.harness.registry import Registry
from tests.integration.registry_support import skopeo_cert_dir, skopeo_raw_digest

pytestmark = pytest.mark.integration

FIXTURES = ["debian-bookworm", "distroless-bookworm", "debian-bookworm-layered",
            "multiplatform-bookworm"]


def _layout_digest(layout: Path, tag: str) -> str:
    index = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            digest: str = entry["digest"]
            return digest
    raise AssertionError(f"{layout} has no ref {tag}")


def _flavour(request: pytest.FixtureRequest, name: str, tmp_path: Path
             ) -> tuple[Registry, TransportOptions, list[str]]:
    registry: Registry = request.getfixturevalue(name)
    if registry.ca_file is None:
        return registry, TransportOptions(), ["--tls-verify=false"]
    options = TransportOptions(ca_file=registry.ca_file, docker_config=registry.docker_config)
    skopeo_args = [f"--cert-dir={skopeo_cert_dir(registry.ca_file, tmp_path / 'certs')}"]
    if registry.username is not None:
        skopeo_args.append(f"--creds={registry.username}:{registry.password}")
    return registry, options, skopeo_args


@pytest.mark.parametrize("flavour", ["registry_plain", "registry_tls", "registry_auth"])
@pytest.mark.parametrize("fixture", FIXTURES)
def test_fixture_round_trip(
    images: Images, request: pytest.FixtureRequest, tmp_path: Path, flavour: str, fixture: str
) -> None:
    registry, options, skopeo_args = _flavour(request, flavour, tmp_path)
    source = images.layout(fixture)
    original = _layout_digest(source, "latest")
    remote = parse_location(f"{registry.host}/fixtures/{fixture}:latest")
    copy_back = tmp_path / "copy"

    pushed = copy_artifact(parse_location(f"oci:{source}:latest"), remote, options)
    pulled = copy_artifact(remote, parse_location(f"oci:{copy_back}:latest"), options)

    assert pushed == original
    assert pulled == original
    assert _layout_digest(copy_back, "latest") == original
    assert skopeo_raw_digest(f"{registry.host}/fixtures/{fixture}:latest", *skopeo_args) \
        == original


def test_multiplatform_children_by_digest(
    images: Images, registry_plain: Registry
) -> None:
    source = parse_location(f"oci:{images.layout('multiplatform-bookworm')}:latest")
    remote = parse_location(f"{registry_plain.host}/fixtures/multi-children:latest")
    copy_artifact(source, remote)

    index = read_artifact(remote)

    assert isinstance(index, ImageIndex)
    platforms = sorted(str(child.platform) for child in index.children
                       if isinstance(child, Image))
    assert platforms == ["linux/amd64", "linux/arm64/v8"]
    for child in index.children:
        assert isinstance(child, Image)
        assert skopeo_raw_digest(f"{registry_plain.host}/fixtures/multi-children@{child.digest}",
                                 "--tls-verify=false") == child.digest


def test_copy_between_registries(
    images: Images, registry_plain: Registry, registry_tls: Registry
) -> None:
    source = images.layout("debian-bookworm")
    original = _layout_digest(source, "latest")
    options = TransportOptions(ca_file=registry_tls.ca_file)
    plain = parse_location(f"{registry_plain.host}/fixtures/hop:1")
    tls = parse_location(f"{registry_tls.host}/fixtures/hop:2")

    copy_artifact(parse_location(f"oci:{source}:latest"), plain, options)
    copied = copy_artifact(plain, tls, options)

    assert copied == original
