"""Assemble the patched multi-platform index from the per-platform results.

The patched index lists the same entries as the original, in the same order. An entry whose image
was patched points at the new manifest and keeps its platform, annotations and any other field.
Every other entry (unpatched platforms, attestation manifests of platform `unknown/unknown`,
artifacts, other operating systems) is carried over with the same descriptor, so its manifest
and blobs stay byte-identical.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from suture.errors import ImageError
from suture.image.model import (
    ANNOTATION_BASE_DIGEST,
    ANNOTATION_PATCHED,
    DOCKER_MANIFEST_LIST,
    Descriptor,
    Image,
    ImageIndex,
    Index,
    RawManifest,
)

logger = logging.getLogger(__name__)


def build_patched_index(
    original: ImageIndex, results: Mapping[str, Image | None]
) -> ImageIndex:
    """Return `original` with each child image replaced by its entry in `results`.

    `results` maps a child manifest digest to the patched Image, or to None when that platform
    was not patched. Children whose digests are missing from `results` are carried over too.
    Nested indexes are rebuilt the same way. When nothing changed, `original` itself is
    returned, so its digest is kept. An OCI index gets annotations recording the patch and the
    original index digest. A Docker manifest list defines no annotations, so it gets none.

    NOTE: attestation manifests are carried over unchanged, so they still name the digests of
    the original images they were made for.
    """
    descriptors = original.index.manifests
    if len(descriptors) != len(original.children):
        raise ImageError(
            f"index {original.digest}: lists {len(descriptors)} manifests but "
            f"{len(original.children)} were read"
        )

    document = copy.deepcopy(dict(original.index.document))
    entries: list[dict[str, Any]] = [dict(entry) for entry in document.get("manifests") or []]
    children: list[Image | ImageIndex | RawManifest] = []
    changed = False
    for position, (descriptor, child) in enumerate(zip(descriptors, original.children,
                                                       strict=True)):
        replacement, new = _replacement(descriptor.digest, child, results)
        children.append(replacement)
        if new is None:
            continue
        entries[position].update(mediaType=new.media_type, digest=new.digest, size=new.size)
        changed = True
        logger.debug("index %s: entry %d %s -> %s", original.digest, position + 1,
                     descriptor.digest, new.digest)

    if not changed:
        return original

    document["manifests"] = entries
    if original.index.media_type != DOCKER_MANIFEST_LIST:
        annotations = dict(document.get("annotations") or {})
        annotations.setdefault(ANNOTATION_BASE_DIGEST, original.digest)
        annotations[ANNOTATION_PATCHED] = "true"
        document["annotations"] = annotations
    return ImageIndex(Index.build(document), tuple(children))


def _replacement(
    digest: str, child: Image | ImageIndex | RawManifest, results: Mapping[str, Image | None]
) -> tuple[Image | ImageIndex | RawManifest, Descriptor | None]:
    """Return the patched form of `child` and its new descriptor, or `child` and None."""
    if isinstance(child, ImageIndex):
        nested = build_patched_index(child, results)
        return nested, (nested.index.descriptor() if nested is not child else None)
    if isinstance(child, Image):
        patched = results.get(digest)
        if patched is not None:
            return patched, patched.manifest.descriptor()
    return child, None
