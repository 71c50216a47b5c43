"""Put a patch layer on top of an image, replacing suture's previous patch layer if there is one.

The edits are made on deep copies of the parsed manifest and config, so every field suture does
not touch keeps its value. The patched image records the digest of the original, unpatched image
and the patch layer's diff_id in its config labels and, for OCI manifests, in its manifest
annotations (keys in `suture.image.model`). Docker schema 2 manifests define no annotations
field, so for them the config labels are the record.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from suture.errors import ImageError
from suture.image.model import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_PATCH_DIFF_ID,
    ANNOTATION_PATCH_PACKAGES,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    OCI_LAYER_GZIP,
    Descriptor,
    Image,
    ImageConfig,
    Manifest,
)
from suture.image.store import FileBlobStore
from suture.patch.reproducible import created_timestamp

if TYPE_CHECKING:
    from suture.patch.build import LayerBlob
    from suture.patch.staging import Staging

logger = logging.getLogger(__name__)

HISTORY_COMMENT = "suture patch"
_PACKAGE_SEPARATOR = ", "


def _recorded(image: Image, key: str) -> list[str]:
    """Return the values of `key` in the manifest annotations, then in the config labels."""
    values = [image.manifest.annotations.get(key), image.config.labels.get(key)]
    return [value for value in values if value]


def find_patch_layer(image: Image) -> int | None:
    """Return the index of suture's patch layer in `image`, or None if it has none on top.

    A layer counts only when it is the last one and its diff_id is the one suture recorded. An
    image built on top of a patched image inherits the labels, but its patch layer is no longer
    on top and can no longer be replaced.
    """
    recorded = _recorded(image, ANNOTATION_PATCH_DIFF_ID)
    if not recorded:
        return None
    diff_ids = image.config.diff_ids
    if diff_ids and len(diff_ids) == len(image.manifest.layers) and diff_ids[-1] in recorded:
        return len(diff_ids) - 1
    logger.warning(
        "image %s records suture patch layer %s but its last layer is %s; treating it as "
        "unpatched, so the new patch layer is added on top of the old one",
        image.digest, recorded[0], diff_ids[-1] if diff_ids else "missing",
    )
    return None


def base_digest_of(image: Image) -> str:
    """Return the manifest digest of the original image that `image` was patched from.

    For an image without a suture patch layer that is its own digest.
    """
    if find_patch_layer(image) is None:
        return image.digest
    recorded = _recorded(image, ANNOTATION_BASE_DIGEST)
    return recorded[0] if recorded else image.digest


def previous_patch_layer(image: Image) -> Descriptor | None:
    """Return the descriptor of suture's patch layer on top of `image`, or None."""
    index = find_patch_layer(image)
    return image.manifest.layers[index] if index is not None else None


def seed_staging(image: Image, staging: Staging) -> bool:
    """Load suture's previous patch layer of `image` into `staging`.

    Returns whether `image` had such a layer.
    """
    index = find_patch_layer(image)
    if index is None:
        return False
    descriptor = image.manifest.layers[index]
    with image.blobs.open_blob(descriptor) as stream:
        staging.load_layer(stream, descriptor.media_type, image.config.diff_ids[index])
    logger.debug("seeded staging with previous patch layer %s", descriptor.digest)
    return True


def merge_package_updates(previous: Sequence[str], new: Sequence[str]) -> list[str]:
    """Combine update lines such as `openssl 3.0.15-1~deb12u1 -> 3.0.17-1~deb12u2` by package.

    A package updated by both keeps its first old version and takes its new target version, so
    the list describes the combined layer against the original image. Lines that do not have
    the `name old -> new` form are kept once each. The result is sorted, so a re-patch records
    the same list, and so the same config, as one patch with all the updates.
    """
    merged: dict[str, str] = {}
    for line in [*previous, *new]:
        name, _, rest = line.partition(" ")
        old, arrow, target = rest.partition(" -> ")
        if arrow and name in merged:
            earlier_old = merged[name].partition(" ")[2].partition(" -> ")[0]
            merged[name] = f"{name} {earlier_old or old} -> {target}"
        elif arrow:
            merged[name] = line
        else:
            merged.setdefault(line, line)
    return sorted(merged.values())


def append_patch_layer(
    image: Image,
    layer: LayerBlob,
    *,
    base_digest: str | None = None,
    packages: Sequence[str],
    created: datetime | None = None,
) -> Image:
    """Return `image` with `layer` on top, in place of suture's previous patch layer if any.

    `base_digest` is the digest of the original, unpatched image. When None, it is read from a
    previous patch (`base_digest_of`). `packages` lists this patch's updates, and on a re-patch
    they are merged with the previous patch's list. `created` defaults to SOURCE_DATE_EPOCH
    when set, else the current time. The new config is written beside the layer file.
    """
    patch_index = find_patch_layer(image)
    if base_digest is None:
        base_digest = base_digest_of(image)
    previous_packages: list[str] = []
    if patch_index is not None:
        recorded = _recorded(image, ANNOTATION_PATCH_PACKAGES)
        previous_packages = recorded[0].split(_PACKAGE_SEPARATOR) if recorded else []
    updates = merge_package_updates(previous_packages, packages)
    created_text = created_timestamp(created)
    layer_descriptor = _layer_descriptor(image, layer)
    record = {
        ANNOTATION_BASE_DIGEST: base_digest,
        ANNOTATION_PATCH_DIFF_ID: layer.diff_id,
        ANNOTATION_PATCH_PACKAGES: _PACKAGE_SEPARATOR.join(updates),
    }

    config_document = _edit_config(image.config.document, patch_index, layer.diff_id,
                                   created_text, updates, record)
    config = ImageConfig.build(config_document)
    config_path = layer.path.parent / ("config-" + config.digest.replace(":", "-") + ".json")
    config_path.write_bytes(config.raw)

    manifest_document = copy.deepcopy(dict(image.manifest.document))
    layers = list(manifest_document.get("layers") or [])
    if patch_index is not None:
        del layers[patch_index]
    layers.append(layer_descriptor.to_json())
    manifest_document["layers"] = layers
    old_config = image.manifest.config
    manifest_document["config"] = Descriptor(
        old_config.media_type, config.digest, len(config.raw), dict(old_config.extra)
    ).to_json()
    if image.manifest.media_type != DOCKER_MANIFEST:
        annotations = dict(manifest_document.get("annotations") or {})
        annotations.update(record)
        manifest_document["annotations"] = annotations
    manifest = Manifest.build(manifest_document)

    replaced = ", replacing the previous one" if patch_index is not None else ""
    logger.info("patched image %s -> %s (patch layer %s%s)", image.digest, manifest.digest,
                layer.descriptor.digest, replaced)
    blobs = FileBlobStore({layer.descriptor.digest: layer.path, config.digest: config_path},
                          fallback=image.blobs)
    return Image(manifest, config, blobs)


def _layer_descriptor(image: Image, layer: LayerBlob) -> Descriptor:
    """Return the layer's descriptor with the media type the image's manifest format uses."""
    if image.manifest.media_type != DOCKER_MANIFEST:
        return layer.descriptor
    if layer.descriptor.media_type != OCI_LAYER_GZIP:
        raise ImageError(
            f"image {image.digest}: Docker schema 2 manifests support only gzip layers, not "
            f"{layer.descriptor.media_type}; pass --compression gzip"
        )
    return Descriptor(DOCKER_LAYER_GZIP, layer.descriptor.digest, layer.descriptor.size,
                      dict(layer.descriptor.extra))


def _edit_config(
    document: Mapping[str, Any],
    patch_index: int | None,
    diff_id: str,
    created: str,
    updates: Sequence[str],
    record: Mapping[str, str],
) -> dict[str, Any]:
    config = copy.deepcopy(dict(document))

    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    diff_ids = list(rootfs.get("diff_ids") or [])
    if patch_index is not None:
        del diff_ids[patch_index]
    diff_ids.append(diff_id)
    rootfs["diff_ids"] = diff_ids
    config["rootfs"] = rootfs

    # The history entry of the previous patch is the last one that created a layer. It is
    # dropped only when suture wrote it, so a foreign history is never cut.
    history = config.get("history")
    if isinstance(history, list):
        history = list(history)
        if patch_index is not None:
            _drop_patch_history(history)
        history.append({
            "created": created,
            "created_by": "suture patch: " + (_PACKAGE_SEPARATOR.join(updates) or "no updates"),
            "comment": HISTORY_COMMENT,
        })
        config["history"] = history

    runtime = dict(config.get("config") or {})
    labels = dict(runtime.get("Labels") or {})
    labels.update(record)
    runtime["Labels"] = labels
    config["config"] = runtime
    config["created"] = created
    return config


def _drop_patch_history(history: list[Any]) -> None:
    for position in range(len(history) - 1, -1, -1):
        entry = history[position]
        if not isinstance(entry, dict) or entry.get("empty_layer"):
            continue
        if entry.get("comment") == HISTORY_COMMENT:
            del history[position]
        return
