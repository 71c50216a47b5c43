"""Image model: descriptors, manifests, indexes, configs, and images backed by a blob store.

Follows the OCI image spec v1.1 (image-spec/descriptor.md, manifest.md, image-index.md, config.md)
and Docker's image manifest v2 schema 2. Every manifest, index and config keeps its exact bytes
(`raw`), so a document that is not changed is written back byte for byte and keeps its digest.
Fields suture does not interpret (annotations, history, os.features, foreign keys) survive,
because edits are made on a copy of the parsed JSON, which is re-serialised only when it
changed.

Objects here are immutable. Transformations (appending a layer, replacing a config) return new
objects; transports move bytes and never change the model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from suture.errors import DigestMismatchError, ImageError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
ALL_MANIFEST_TYPES = MANIFEST_TYPES | INDEX_TYPES
LAYER_TYPES = frozenset(
    {OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER_GZIP, DOCKER_LAYER_FOREIGN,
     "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"}
)

# Annotation keys suture writes on patched manifests and indexes.
ANNOTATION_PREFIX = "dev.suture"
ANNOTATION_BASE_DIGEST = "dev.suture.base.digest"
ANNOTATION_PATCH_DIFF_ID = "dev.suture.patch.diff-id"
ANNOTATION_PATCH_PACKAGES = "dev.suture.patch.packages"
ANNOTATION_PATCHED = "dev.suture.patched"


def sha256_digest(data: bytes) -> str:
    """Return the OCI digest string (`sha256:<hex>`) of bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify_digest(data: bytes, digest: str, what: str) -> None:
    """Raise DigestMismatchError naming `what` unless `data` has the given digest."""
    algorithm, _, expected = digest.partition(":")
    if algorithm not in hashlib.algorithms_available or not expected:
        raise ImageError(f"{what}: unsupported digest {digest!r}")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise DigestMismatchError(
            f"{what}: content has digest {algorithm}:{actual}, expected {digest}"
        )


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Serialise a document the way suture writes new manifests, indexes and configs.

    Compact separators and sorted keys make the bytes, and so the digest, depend only on content.
    """
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Platform:
    """An OCI platform: os/architecture[/variant] plus the optional os.version and os.features."""

    os: str
    architecture: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse `os/arch[/variant]`, as in `linux/arm64/v8`."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ImageError(f"invalid platform {text!r}: expected os/arch[/variant]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Platform:
        return cls(
            os=str(document.get("os", "")),
            architecture=str(document.get("architecture", "")),
            variant=str(document.get("variant", "")),
            os_version=str(document.get("os.version", "")),
            os_features=tuple(document.get("os.features", ()) or ()),
        )

    def matches(self, wanted: Platform) -> bool:
        """Return whether this platform satisfies `wanted`, where an empty variant matches any."""
        if (self.os, self.architecture) != (wanted.os, wanted.architecture):
            return False
        return not wanted.variant or _normal_variant(self) == _normal_variant(wanted)

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


def _normal_variant(platform: Platform) -> str:
    # arm64 images usually omit the variant; v8 is its only one.
    if platform.architecture == "arm64" and not platform.variant:
        return "v8"
    return platform.variant


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: media type, digest and size, plus every other field as found."""

    media_type: str
    digest: str
    size: int
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, document: Mapping[str, Any], what: str = "descriptor") -> Descriptor:
        try:
            media_type = str(document["mediaType"])
            digest = str(document["digest"])
            size = int(document["size"])
        except (KeyError, TypeError, ValueError) as error:
            raise ImageError(f"{what}: missing or invalid field {error}") from error
        if ":" not in digest:
            raise ImageError(f"{what}: invalid digest {digest!r}")
        if size < 0:
            raise ImageError(f"{what}: negative size {size}")
        extra = {k: v for k, v in document.items() if k not in ("mediaType", "digest", "size")}
        return cls(media_type, digest, size, extra)

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, **extra: Any) -> Descriptor:
        return cls(media_type, sha256_digest(data), len(data), extra)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                                    "size": self.size}
        document.update(self.extra)
        return document

    @property
    def annotations(self) -> Mapping[str, str]:
        return dict(self.extra.get("annotations") or {})

    @property
    def platform(self) -> Platform | None:
        platform = self.extra.get("platform")
        return Platform.from_json(platform) if isinstance(platform, Mapping) else None


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImageError(f"{what}: invalid JSON ({error})") from error
    if not isinstance(document, dict):
        raise ImageError(f"{what}: expected a JSON object")
    return document


@dataclass(frozen=True)
class Manifest:
    """An image manifest (OCI or Docker schema 2) with its exact bytes."""

    raw: bytes
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    document: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None, what: str = "manifest") -> Manifest:
        document = _load_json(raw, what)
        declared = document.get("mediaType") or media_type or OCI_MANIFEST
        if declared not in MANIFEST_TYPES:
            raise ImageError(f"{what}: media type {declared!r} is not an image manifest")
        if document.get("schemaVersion") != 2:
            raise ImageError(f"{what}: unsupported schemaVersion {document.get('schemaVersion')}")
        if "config" not in document:
            raise ImageError(f"{what}: missing config descriptor")
        config = Descriptor.from_json(document["config"], f"{what} config")
        layers = tuple(
            Descriptor.from_json(layer, f"{what} layer {number}")
            for number, layer in enumerate(document.get("layers") or [], start=1)
        )
        return cls(raw, declared, config, layers, document)

    @classmethod
    def build(cls, document: Mapping[str, Any]) -> Manifest:
        return cls.parse(canonical_json(document))

    @property
    def digest(self) -> str:
        return sha256_digest(self.raw)

    @property
    def annotations(self) -> Mapping[str, str]:
        return dict(self.document.get("annotations") or {})

    def descriptor(self, **extra: Any) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), extra)


@dataclass(frozen=True)
class Index:
    """An OCI image index or Docker manifest list with its exact bytes."""

    raw: bytes
    media_type: str
    manifests: tuple[Descriptor, ...]
    document: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: bytes, media_type: str | None = None, what: str = "index") -> Index:
        document = _load_json(raw, what)
        declared = document.get("mediaType") or media_type or OCI_INDEX
        if declared not in INDEX_TYPES:
            raise ImageError(f"{what}: media type {declared!r} is not an image index")
        manifests = tuple(
            Descriptor.from_json(entry, f"{what} entry {number}")
            for number, entry in enumerate(document.get("manifests") or [], start=1)
        )
        return cls(raw, declared, manifests, document)

    @classmethod
    def build(cls, document: Mapping[str, Any]) -> Index:
        return cls.parse(canonical_json(document))

    @property
    def digest(self) -> str:
        return sha256_digest(self.raw)

    @property
    def annotations(self) -> Mapping[str, str]:
        return dict(self.document.get("annotations") or {})

    def descriptor(self, **extra: Any) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.raw), extra)


@dataclass(frozen=True)
class ImageConfig:
    """An image configuration blob with its exact bytes."""

    raw: bytes
    document: Mapping[str, Any]

    @classmethod
    def parse(cls, raw: bytes, what: str = "config") -> ImageConfig:
        return cls(raw, _load_json(raw, what))

    @classmethod
    def build(cls, document: Mapping[str, Any]) -> ImageConfig:
        return cls.parse(canonical_json(document))

    @property
    def digest(self) -> str:
        return sha256_digest(self.raw)

    @property
    def platform(self) -> Platform:
        return Platform.from_json(self.document)

    @property
    def diff_ids(self) -> tuple[str, ...]:
        rootfs = self.document.get("rootfs") or {}
        return tuple(rootfs.get("diff_ids") or ())

    @property
    def labels(self) -> Mapping[str, str]:
        config = self.document.get("config") or {}
        return dict(config.get("Labels") or {})


class BlobStore(Protocol):
    """A source of an image's blobs.

    `open_blob` returns a stream of the blob's bytes that raises DigestMismatchError at end of
    stream when the content does not match the descriptor. `origin` names the registry and
    repository the blobs live in (for cross-repository mounts), or None for local stores.
    """

    origin: tuple[str, str] | None

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[BinaryIO]: ...

    def read_blob(self, descriptor: Descriptor) -> bytes: ...


@dataclass(frozen=True)
class Image:
    """One platform's image: manifest, parsed config, and the store that contains its layers."""

    manifest: Manifest
    config: ImageConfig
    blobs: BlobStore

    @property
    def digest(self) -> str:
        return self.manifest.digest

    @property
    def platform(self) -> Platform:
        return self.config.platform

    def layers(self) -> Iterator[tuple[Descriptor, str]]:
        """Yield each layer descriptor with its diff_id, bottom layer first."""
        diff_ids = self.config.diff_ids
        if len(diff_ids) != len(self.manifest.layers):
            raise ImageError(
                f"image {self.digest}: manifest lists {len(self.manifest.layers)} layers "
                f"but config lists {len(diff_ids)} diff_ids"
            )
        yield from zip(self.manifest.layers, diff_ids, strict=True)


@dataclass(frozen=True)
class ImageIndex:
    """A multi-platform index and its children, in index order.

    A child is an Image, a nested ImageIndex, or a RawManifest for entries suture does not
    interpret (artifacts and unknown media types), which are carried over unchanged.
    """

    index: Index
    children: Sequence[Image | ImageIndex | RawManifest]

    @property
    def digest(self) -> str:
        return self.index.digest


@dataclass(frozen=True)
class RawManifest:
    """A manifest suture carries over without interpreting, with the blobs it references."""

    descriptor: Descriptor
    raw: bytes
    blobs: BlobStore
    references: tuple[Descriptor, ...] = ()


Artifact = Image | ImageIndex
