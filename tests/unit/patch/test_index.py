"""Tests for assembling the patched multi-platform index."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from suture.image.model import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_PATCHED,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
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
from suture.patch.build import append_patch_layer, build_layer
from suture.patch.index import build_patched_index
from suture.patch.staging import Staging

ATTESTATION_ANNOTATIONS = {
    "vnd.docker.reference.type": "attestation-manifest",
}


def _image(tmp_path: Path, architecture: str, media_type: str = OCI_MANIFEST) -> Image:
    staging = Staging(tmp_path / f"base-{architecture}")
    staging.add_file("/etc/arch", data=architecture.encode(), mtime=1)
    layer = build_layer(staging, source_date_epoch=1)
    config = ImageConfig.build({
        "architecture": architecture, "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    })
    config_path = tmp_path / f"config-{architecture}.json"
    config_path.write_bytes(config.raw)
    manifest = Manifest.build({
        "schemaVersion": 2, "mediaType": media_type,
        "config": Descriptor.for_bytes(OCI_CONFIG, config.raw).to_json(),
        "layers": [layer.descriptor.to_json()],
    })
    store = FileBlobStore({layer.descriptor.digest: layer.path, config.digest: config_path})
    return Image(manifest, config, store)


def _patched(image: Image, tmp_path: Path) -> Image:
    staging = Staging(tmp_path / f"patch-{image.platform.architecture}")
    staging.add_file("/etc/patched", data=b"yes", mtime=2)
    layer = build_layer(staging, source_date_epoch=2)
    return append_patch_layer(image, layer, packages=["p 1 -> 2"])


def _attestation(subject: Image) -> RawManifest:
    raw = canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + "0" * 64, "size": 2},
        "layers": [{"mediaType": "application/vnd.in-toto+json",
                    "digest": "sha256:" + "1" * 64, "size": 10}],
    })
    annotations = {**ATTESTATION_ANNOTATIONS, "vnd.docker.reference.digest": subject.digest}
    descriptor = Descriptor.for_bytes(
        OCI_MANIFEST, raw, platform={"os": "unknown", "architecture": "unknown"},
        annotations=annotations,
    )
    return RawManifest(descriptor, raw, FileBlobStore({}))


def _index(children: list[tuple[Image | RawManifest, dict[str, Any]]],
           media_type: str = OCI_INDEX) -> ImageIndex:
    entries = []
    for child, extra in children:
        if isinstance(child, RawManifest):
            entries.append(child.descriptor.to_json())
        else:
            entries.append(child.manifest.descriptor(**extra).to_json())
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                                "manifests": entries}
    if media_type == OCI_INDEX:
        document["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    # The original index is written with indentation, as other tools do, to show that
    # carried-over entries do not depend on suture's serialisation.
    raw = json.dumps(document, indent=2).encode()
    return ImageIndex(Index.parse(raw), tuple(child for child, _ in children))


@pytest.fixture
def images(tmp_path: Path) -> dict[str, Image]:
    return {arch: _image(tmp_path, arch) for arch in ("amd64", "arm64", "s390x")}


def _platform(arch: str) -> dict[str, Any]:
    return {"platform": {"os": "linux", "architecture": arch},
            "annotations": {"org.example.arch": arch}}


def test_patched_children_replaced(images: dict[str, Image], tmp_path: Path) -> None:
    original = _index([(images[arch], _platform(arch)) for arch in ("amd64", "arm64")])
    patched = {arch: _patched(images[arch], tmp_path) for arch in ("amd64", "arm64")}
    results: dict[str, Image | None] = {images[arch].digest: patched[arch] for arch in patched}

    result = build_patched_index(original, results)

    for position, arch in enumerate(("amd64", "arm64")):
        entry = result.index.manifests[position]
        assert entry.digest == patched[arch].digest
        assert entry.size == len(patched[arch].manifest.raw)
        assert entry.media_type == OCI_MANIFEST
        assert entry.platform is not None
        assert entry.platform.architecture == arch
        assert entry.annotations == {"org.example.arch": arch}
        assert result.children[position] is patched[arch]


def test_unknown_entries_carried_over(images: dict[str, Image], tmp_path: Path) -> None:
    attestation = _attestation(images["amd64"])
    original = _index([
        (images["amd64"], _platform("amd64")),
        (attestation, {}),
        (images["s390x"], _platform("s390x")),
    ])
    results: dict[str, Image | None] = {
        images["amd64"].digest: _patched(images["amd64"], tmp_path),
        images["s390x"].digest: None,
    }

    result = build_patched_index(original, results)

    original_entries = json.loads(original.index.raw)["manifests"]
    new_entries = json.loads(result.index.raw)["manifests"]
    assert len(new_entries) == 3
    assert new_entries[1] == original_entries[1]
    assert new_entries[2] == original_entries[2]
    assert result.children[1] is attestation
    assert result.children[2] is images["s390x"]


def test_index_annotations_record_patch(images: dict[str, Image], tmp_path: Path) -> None:
    original = _index([(images["amd64"], _platform("amd64"))])
    results: dict[str, Image | None] = {
        images["amd64"].digest: _patched(images["amd64"], tmp_path)}

    result = build_patched_index(original, results)

    annotations = result.index.annotations
    assert annotations["org.opencontainers.image.ref.name"] == "latest"
    assert annotations[ANNOTATION_PATCHED] == "true"
    assert annotations[ANNOTATION_BASE_DIGEST] == original.digest
    assert result.index.media_type == OCI_INDEX


def test_repatched_index_keeps_base_digest(images: dict[str, Image], tmp_path: Path) -> None:
    original = _index([(images["amd64"], _platform("amd64"))])
    once = build_patched_index(
        original, {images["amd64"].digest: _patched(images["amd64"], tmp_path / "a")})
    child = once.children[0]
    assert isinstance(child, Image)
    twice = build_patched_index(once, {child.digest: _patched(child, tmp_path / "b")})
    assert twice.index.annotations[ANNOTATION_BASE_DIGEST] == original.digest


def test_nothing_patched_returns_original(images: dict[str, Image]) -> None:
    original = _index([(images["amd64"], _platform("amd64"))])
    result = build_patched_index(original, {images["amd64"].digest: None})
    assert result is original


def test_docker_list_stays_docker(tmp_path: Path) -> None:
    image = _image(tmp_path, "amd64", media_type=DOCKER_MANIFEST)
    original = _index([(image, _platform("amd64"))], media_type=DOCKER_MANIFEST_LIST)
    staging = Staging(tmp_path / "patch")
    staging.add_file("/x", data=b"x", mtime=1)
    patched = append_patch_layer(image, build_layer(staging), packages=[])

    result = build_patched_index(original, {image.digest: patched})

    assert result.index.media_type == DOCKER_MANIFEST_LIST
    assert result.index.document["mediaType"] == DOCKER_MANIFEST_LIST
    assert "annotations" not in result.index.document
    assert result.index.manifests[0].media_type == DOCKER_MANIFEST
    assert patched.manifest.layers[-1].media_type == DOCKER_LAYER_GZIP


def test_nested_index_rebuilt(images: dict[str, Image], tmp_path: Path) -> None:
    inner = _index([(images["amd64"], _platform("amd64"))])
    outer_raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [inner.index.descriptor().to_json()]}).encode()
    outer = ImageIndex(Index.parse(outer_raw), (inner,))
    patched = _patched(images["amd64"], tmp_path)

    result = build_patched_index(outer, {images["amd64"].digest: patched})

    nested = result.children[0]
    assert isinstance(nested, ImageIndex)
    assert result.index.manifests[0].digest == nested.digest
    assert nested.index.manifests[0].digest == patched.digest
