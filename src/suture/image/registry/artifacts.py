"""Read an image or index from a registry repository, and push one to a repository.

Push order keeps a repository consistent at every step, so an interrupted push leaves no tag
pointing at missing content. The blobs of a manifest go first, then the manifest. The children of
an index go first (by digest), then the index. The tag is the last request of all.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import BinaryIO

from suture.errors import ImageError, RegistryError
from suture.image.cache import BlobCache
from suture.image.layout import assemble_artifact
from suture.image.model import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    Artifact,
    BlobStore,
    Descriptor,
    Image,
    ImageIndex,
    RawManifest,
    verify_digest,
)
from suture.image.reference import Reference
from suture.image.registry.blobs import RegistryBlobStore
from suture.image.registry.client import RegistryClient
from suture.image.registry.upload import upload_blob
from suture.image.store import FileBlobStore, verifying_reader

logger = logging.getLogger(__name__)

_UPLOAD_CONCURRENCY = 4


def read_registry(
    client: RegistryClient, reference: Reference, cache: BlobCache | None = None
) -> Artifact:
    """Fetch the manifest or index that `reference` names, with every child manifest.

    Children are classified as the layout reader does (`suture.image.layout.assemble_artifact`):
    attestations and other artifacts become RawManifest entries that are copied unchanged.
    """
    store = RegistryBlobStore(client, reference.repository, cache)
    response = client.get_manifest(reference.repository, reference.identifier)
    what = f"manifest {reference}"
    media_type = _declared_media_type(response.raw, response.media_type)
    if media_type not in INDEX_TYPES and media_type not in MANIFEST_TYPES:
        raise ImageError(
            f"{what}: media type {media_type!r} is neither an image manifest nor an index; "
            "suture reads OCI and Docker schema 2 images"
        )
    top = Descriptor(media_type, response.digest, len(response.raw))

    def fetch_manifest(descriptor: Descriptor) -> bytes:
        if descriptor.digest == top.digest:
            return response.raw
        return client.get_manifest(reference.repository, descriptor.digest).raw

    artifact = assemble_artifact(top, fetch_manifest, store, str(reference))
    if isinstance(artifact, RawManifest):
        raise ImageError(
            f"{what}: the manifest is an attestation or artifact, not a runnable image"
        )
    return artifact


def _declared_media_type(raw: bytes, header: str) -> str:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return header
    declared = document.get("mediaType") if isinstance(document, dict) else None
    return declared if isinstance(declared, str) and declared else header


def write_registry(client: RegistryClient, reference: Reference, artifact: Artifact) -> str:
    """Push `artifact` to `reference`'s repository and tag; return the top-level digest.

    A reference with only a digest is pushed by digest, which must match the artifact's.
    A reference with neither is pushed under the tag `latest`.
    """
    if reference.digest is not None and reference.digest != artifact.digest:
        raise RegistryError(
            f"cannot push to {reference}: the image's digest is {artifact.digest}; drop the "
            "digest from the destination or use a tag"
        )
    # As with skopeo, a reference with neither tag nor digest means the tag `latest`.
    target = reference.tag or (artifact.digest if reference.digest else "latest")
    pusher = _Pusher(client, reference.repository)
    return pusher.push(artifact, target)


class _Pusher:
    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self._done: set[str] = set()
        self._lock = threading.Lock()

    def push(self, artifact: Artifact | RawManifest, target: str) -> str:
        if isinstance(artifact, Image):
            self._push_blobs(artifact.manifest.layers, artifact.blobs)
            self._push_config(artifact)
            return self.client.put_manifest(self.repository, target, artifact.manifest.raw,
                                            artifact.manifest.media_type)
        if isinstance(artifact, RawManifest):
            self._push_blobs(artifact.references, artifact.blobs)
            verify_digest(artifact.raw, artifact.descriptor.digest,
                          f"manifest {artifact.descriptor.digest}")
            return self.client.put_manifest(self.repository, target, artifact.raw,
                                            artifact.descriptor.media_type)
        for child in artifact.children:
            child_digest = _digest_of(child)
            self.push(child, child_digest)
        return self.client.put_manifest(self.repository, target, artifact.index.raw,
                                        artifact.index.media_type)

    def _push_config(self, image: Image) -> None:
        descriptor = image.manifest.config
        raw = image.config.raw
        verify_digest(raw, descriptor.digest, f"config of image {image.digest}")

        def open_config() -> AbstractContextManager[BinaryIO]:
            return nullcontext(verifying_reader(io.BytesIO(raw), descriptor))

        self._push_blob(descriptor, None, open_config)

    def _push_blobs(self, descriptors: Iterable[Descriptor], store: BlobStore) -> None:
        unique = {d.digest: d for d in descriptors if d.digest not in self._done}
        if not unique:
            return
        with ThreadPoolExecutor(max_workers=_UPLOAD_CONCURRENCY) as pool:
            futures = [
                pool.submit(self._push_blob, descriptor, _mount_origin(store, descriptor),
                            functools.partial(store.open_blob, descriptor))
                for descriptor in unique.values()
            ]
            for future in futures:
                future.result()

    def _push_blob(
        self,
        descriptor: Descriptor,
        origin: tuple[str, str] | None,
        open_source: Callable[[], AbstractContextManager[BinaryIO]],
    ) -> None:
        if descriptor.digest in self._done:
            return
        self._transfer(descriptor, origin, open_source)
        with self._lock:
            self._done.add(descriptor.digest)

    def _transfer(
        self,
        descriptor: Descriptor,
        origin: tuple[str, str] | None,
        open_source: Callable[[], AbstractContextManager[BinaryIO]],
    ) -> None:
        if self.client.blob_exists(self.repository, descriptor.digest):
            logger.debug("blob %s already in %s/%s", descriptor.digest, self.client.registry,
                         self.repository)
            return

        # A mount copies nothing over the network; a registry that declines it (202) opens an
        # upload session instead, which the upload then uses.
        location = None
        if origin is not None and origin[0] == self.client.registry \
                and origin[1] != self.repository:
            location = self.client.mount_blob(self.repository, descriptor.digest, origin[1])
            if location is None:
                return
        upload_blob(self.client, self.repository, descriptor, open_source, location)


def _mount_origin(store: BlobStore, descriptor: Descriptor) -> tuple[str, str] | None:
    """Return where a blob can be mounted from, or None for blobs that exist only locally."""
    if isinstance(store, FileBlobStore) and store.path(descriptor.digest) is not None:
        return None
    return store.origin


def _digest_of(child: Image | ImageIndex | RawManifest) -> str:
    if isinstance(child, RawManifest):
        return child.descriptor.digest
    return child.digest
