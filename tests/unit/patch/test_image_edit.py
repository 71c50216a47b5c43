"""Tests for appending, recognising and replacing suture's patch layer on an image."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from suture.errors import ImageError
from suture.image.merged import MergedFileSystem
from suture.image.model import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_PATCH_DIFF_ID,
    ANNOTATION_PATCH_PACKAGES,
    DOCKER_CONFIG,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    Image,
    ImageConfig,
    Manifest,
)
from suture.image.store import FileBlobStore
from suture.patch.build import (
    LayerBlob,
    append_patch_layer,
    base_digest_of,
    build_layer,
    find_patch_layer,
    seed_staging,
)
from suture.patch.image_edit import merge_package_updates
from suture.patch.staging import Staging

EPOCH = 1_700_000_000

UNKNOWN_CONFIG_FIELDS: dict[str, Any] = {
    "x-vendor": {"nested": [1, 2.5, None, True]},
    "os.features": ["f1"],
}


def _base_layer(tmp_path: Path, name: str, files: dict[str, bytes]) -> LayerBlob:
    staging = Staging(tmp_path / f"base-{name}")
    for path, data in files.items():
        staging.add_file(path, data=data, mtime=EPOCH)
    return build_layer(staging, source_date_epoch=EPOCH, output_dir=tmp_path / "blobs")


def _make_image(tmp_path: Path, docker: bool = False) -> Image:
    """Return a two-layer image with history, labels, unknown config fields and annotations."""
    layers = [
        _base_layer(tmp_path, "one", {"/etc/os-release": b"ID=debian\n", "/etc/old": b"old"}),
        _base_layer(tmp_path, "two", {"/usr/bin/tool": b"tool v1"}),
    ]
    config_document: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin"], "Labels": {"maintainer": "someone"}},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs"},
            {"created": "2024-01-01T00:00:00Z", "created_by": "ENV x", "empty_layer": True},
            {"created": "2024-01-01T00:00:00Z", "created_by": "RUN install tool"},
        ],
        **UNKNOWN_CONFIG_FIELDS,
    }
    config = ImageConfig.build(config_document)
    config_path = tmp_path / "blobs" / "base-config.json"
    config_path.write_bytes(config.raw)

    layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
    manifest_document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": Descriptor.for_bytes(DOCKER_CONFIG if docker else OCI_CONFIG,
                                       config.raw).to_json(),
        "layers": [Descriptor(layer_type, layer.descriptor.digest, layer.descriptor.size).to_json()
                   for layer in layers],
    }
    if not docker:
        manifest_document["annotations"] = {"org.opencontainers.image.source": "https://x"}
    paths = {layer.descriptor.digest: layer.path for layer in layers}
    paths[config.digest] = config_path
    return Image(Manifest.build(manifest_document), config, FileBlobStore(paths))


def _patch(image: Image, tmp_path: Path, name: str, files: dict[str, bytes],
           packages: list[str], whiteouts: tuple[str, ...] = ()) -> Image:
    staging = Staging(tmp_path / f"patch-{name}")
    seed_staging(image, staging)
    for path, data in files.items():
        staging.add_file(path, data=data, mtime=EPOCH)
    for path in whiteouts:
        staging.add_whiteout(path)
    view = MergedFileSystem.from_image(image)
    layer = build_layer(staging, view, source_date_epoch=EPOCH,
                        output_dir=tmp_path / f"out-{name}")
    return append_patch_layer(image, layer, packages=packages,
                              created=datetime.fromtimestamp(EPOCH, UTC))


@pytest.fixture
def image(tmp_path: Path) -> Image:
    return _make_image(tmp_path)


def test_append_adds_one_layer(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/usr/bin/tool": b"tool v2"}, ["tool 1 -> 2"])
    assert len(patched.manifest.layers) == len(image.manifest.layers) + 1
    assert patched.manifest.layers[:-1] == image.manifest.layers
    assert patched.config.diff_ids[:-1] == image.config.diff_ids
    assert find_patch_layer(patched) == 2
    assert find_patch_layer(image) is None


def test_patched_image_content(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/usr/bin/tool": b"tool v2"}, ["tool 1 -> 2"],
                     whiteouts=("/etc/old",))
    view = MergedFileSystem.from_image(patched, keep_content=lambda _path: True)
    assert view.read("/usr/bin/tool") == b"tool v2"
    assert view.read("/etc/os-release") == b"ID=debian\n"
    assert view.lstat("/etc/old") is None


def test_config_unknown_fields_kept(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    document = patched.config.document
    for key, value in UNKNOWN_CONFIG_FIELDS.items():
        assert document[key] == value
    assert document["config"]["Env"] == ["PATH=/usr/bin"]
    assert document["config"]["Labels"]["maintainer"] == "someone"
    assert document["architecture"] == "amd64"


def test_history_and_created(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2", "b 3 -> 4"])
    history = patched.config.document["history"]
    assert len(history) == 4
    assert history[:3] == image.config.document["history"]
    assert history[-1]["comment"] == "suture patch"
    assert history[-1]["created_by"] == "suture patch: a 1 -> 2, b 3 -> 4"
    assert patched.config.document["created"] == "2023-11-14T22:13:20Z"


def test_created_from_source_date_epoch(image: Image, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    staging = Staging(tmp_path / "s")
    staging.add_file("/a", data=b"a")
    patched = append_patch_layer(image, build_layer(staging), packages=["a 1 -> 2"])
    assert patched.config.document["created"] == "1970-01-02T00:00:00Z"


def test_annotations_and_labels_record_patch(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    annotations = patched.manifest.annotations
    labels = patched.config.labels
    diff_id = patched.config.diff_ids[-1]
    assert annotations["org.opencontainers.image.source"] == "https://x"
    assert annotations[ANNOTATION_BASE_DIGEST] == image.digest
    assert annotations[ANNOTATION_PATCH_DIFF_ID] == diff_id
    assert annotations[ANNOTATION_PATCH_PACKAGES] == "a 1 -> 2"
    assert labels[ANNOTATION_BASE_DIGEST] == image.digest
    assert labels[ANNOTATION_PATCH_DIFF_ID] == diff_id
    assert base_digest_of(patched) == image.digest


def test_manifest_round_trips_through_json(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    reparsed = Manifest.parse(patched.manifest.raw)
    assert reparsed.digest == patched.manifest.digest
    assert json.loads(patched.manifest.raw)["config"]["digest"] == patched.config.digest


def test_blobs_served_from_files_and_original(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    assert patched.blobs.read_blob(patched.manifest.config) == patched.config.raw
    first = patched.manifest.layers[0]
    assert patched.blobs.read_blob(first) == image.blobs.read_blob(first)
    assert patched.blobs.read_blob(patched.manifest.layers[-1])


def test_repatch_keeps_one_patch_layer(image: Image, tmp_path: Path) -> None:
    once = _patch(image, tmp_path, "a", {"/usr/bin/tool": b"tool v2"}, ["tool 1 -> 2"])
    twice = _patch(once, tmp_path, "b", {"/usr/bin/other": b"other v2"}, ["other 5 -> 6"])

    assert len(twice.manifest.layers) == len(image.manifest.layers) + 1
    assert twice.manifest.layers[:-1] == image.manifest.layers
    assert twice.config.diff_ids[:-1] == image.config.diff_ids
    comments = [entry.get("comment") for entry in twice.config.document["history"]]
    assert comments.count("suture patch") == 1
    assert base_digest_of(twice) == image.digest
    assert twice.manifest.annotations[ANNOTATION_BASE_DIGEST] == image.digest
    assert twice.manifest.annotations[ANNOTATION_PATCH_PACKAGES] == "other 5 -> 6, tool 1 -> 2"


def test_repatch_layer_holds_both_patches(image: Image, tmp_path: Path) -> None:
    once = _patch(image, tmp_path, "a", {"/usr/bin/tool": b"tool v2"}, ["tool 1 -> 2"])
    twice = _patch(once, tmp_path, "b", {"/usr/bin/other": b"other v2"}, ["other 5 -> 6"])
    single = _patch(image, tmp_path, "c",
                    {"/usr/bin/tool": b"tool v2", "/usr/bin/other": b"other v2"}, [])

    view = MergedFileSystem.from_image(twice, keep_content=lambda _path: True)
    assert view.read("/usr/bin/tool") == b"tool v2"
    assert view.read("/usr/bin/other") == b"other v2"
    assert twice.config.diff_ids[-1] == single.config.diff_ids[-1]


def test_repatch_equals_single_patch_manifest(image: Image, tmp_path: Path) -> None:
    once = _patch(image, tmp_path, "a", {"/usr/bin/tool": b"tool v2"}, ["tool 1 -> 2"])
    twice = _patch(once, tmp_path, "b", {"/usr/bin/other": b"other v2"}, ["other 5 -> 6"])
    single = _patch(image, tmp_path, "c",
                    {"/usr/bin/tool": b"tool v2", "/usr/bin/other": b"other v2"},
                    ["tool 1 -> 2", "other 5 -> 6"])
    assert twice.config.raw == single.config.raw
    assert twice.digest == single.digest


def test_repatch_gives_same_digest_twice(image: Image, tmp_path: Path) -> None:
    first = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    second = _patch(image, tmp_path, "b", {"/a": b"a"}, ["a 1 -> 2"])
    assert first.digest == second.digest


def test_patch_layer_not_on_top_ignored(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    extra = _base_layer(tmp_path, "user", {"/app": b"app"})
    config = dict(patched.config.document)
    config["rootfs"] = {"type": "layers", "diff_ids": [*patched.config.diff_ids, extra.diff_id]}
    built_on = ImageConfig.build(config)
    manifest = dict(patched.manifest.document)
    manifest.pop("annotations")
    manifest["layers"] = [*manifest["layers"], extra.descriptor.to_json()]
    derived = Image(Manifest.build(manifest), built_on, patched.blobs)

    assert find_patch_layer(derived) is None
    assert base_digest_of(derived) == derived.digest


def test_docker_manifest_stays_docker(tmp_path: Path) -> None:
    image = _make_image(tmp_path, docker=True)
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    assert patched.manifest.media_type == DOCKER_MANIFEST
    assert patched.manifest.config.media_type == DOCKER_CONFIG
    assert {layer.media_type for layer in patched.manifest.layers} == {DOCKER_LAYER_GZIP}
    assert "annotations" not in patched.manifest.document
    assert find_patch_layer(patched) == 2


def test_oci_manifest_stays_oci(image: Image, tmp_path: Path) -> None:
    patched = _patch(image, tmp_path, "a", {"/a": b"a"}, ["a 1 -> 2"])
    assert patched.manifest.media_type == OCI_MANIFEST
    assert patched.manifest.config.media_type == OCI_CONFIG
    assert patched.manifest.layers[-1].media_type == OCI_LAYER_GZIP


def test_docker_manifest_rejects_zstd(tmp_path: Path) -> None:
    image = _make_image(tmp_path, docker=True)
    staging = Staging(tmp_path / "s")
    staging.add_file("/a", data=b"a")
    layer = build_layer(staging, compression="zstd")
    with pytest.raises(ImageError, match="only gzip"):
        append_patch_layer(image, layer, packages=[])


@pytest.mark.parametrize(
    ("previous", "new", "expected"),
    [
        ([], ["a 1 -> 2"], ["a 1 -> 2"]),
        (["b 3 -> 4"], ["a 1 -> 2"], ["a 1 -> 2", "b 3 -> 4"]),
        (["a 1 -> 2", "b 3 -> 4"], ["a 2 -> 5"], ["a 1 -> 5", "b 3 -> 4"]),
        (["free text"], ["free text", "a 1 -> 2"], ["a 1 -> 2", "free text"]),
    ],
)
def test_merge_package_updates(previous: list[str], new: list[str], expected: list[str]) -> None:
    assert merge_package_updates(previous, new) == expected


def test_zstd_rejected_before_work_for_docker_manifest(tmp_path: Path) -> None:
    from suture.errors import UsageError
    from suture.patch.pipeline import check_compression

    docker = _make_image(tmp_path / "docker", docker=True)
    oci = _make_image(tmp_path / "oci")
    check_compression([docker], "gzip")
    check_compression([oci], "zstd")
    with pytest.raises(UsageError, match="--compression gzip") as caught:
        check_compression([oci, docker], "zstd")
    assert caught.value.exit_code == 2
    assert docker.digest in str(caught.value)
