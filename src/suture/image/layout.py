"""Read and write OCI image layouts (image-spec image-layout.md).

A layout is a directory with an `oci-layout` file, blobs under `blobs/<algorithm>/<hex>` and an
`index.json` whose entries name their tag in the `org.opencontainers.image.ref.name` annotation.

Writes copy only missing blobs, each through a temporary file that is verified and renamed into
place, and replace `index.json` last, also by rename. A write that fails part way leaves the
previous `index.json`, so every ref that was readable before still is. At worst unreferenced
blobs remain, which the spec allows.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from suture.errors import DigestMismatchError, ImageError, TransportError
from suture.image.model import (
    DOCKER_CONFIG,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    Artifact,
    BlobStore,
    Descriptor,
    Image,
    ImageConfig,
    ImageIndex,
    Index,
    Manifest,
    RawManifest,
    verify_digest,
)
from suture.image.store import verifying_reader
from suture.outputs import atomic_output

logger = logging.getLogger(__name__)

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_FILE = "oci-layout"
LAYOUT_VERSION = "1.0.0"
INDEX_FILE = "index.json"
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# Documents read whole into memory: manifests, indexes and configs. Real ones are a few KiB.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024

_ALGORITHM_RE = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*$")
_ENCODED_RE = re.compile(r"^[a-zA-Z0-9=_-]+$")
_CHUNK = 1024 * 1024


def blob_name(digest: str) -> str:
    """Return the layout-relative path of a blob, `blobs/<algorithm>/<encoded>`.

    Raises ImageError for a digest whose parts could form another path, since digests come from
    untrusted manifests.
    """
    algorithm, _, encoded = digest.partition(":")
    if not _ALGORITHM_RE.match(algorithm) or not _ENCODED_RE.match(encoded):
        raise ImageError(f"invalid digest {digest!r}")
    return f"blobs/{algorithm}/{encoded}"


class LayoutFiles(Protocol):
    """Read access to the files of a layout, on disk or inside an archive."""

    where: str

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> BinaryIO: ...


class DirectoryFiles:
    """The files of a layout directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def open(self, name: str) -> BinaryIO:
        try:
            return (self.root / name).open("rb")
        except FileNotFoundError as error:
            raise ImageError(f"{name} not found in OCI layout {self.where}") from error
        except OSError as error:
            raise TransportError(
                f"cannot read {name} in OCI layout {self.where}: {error.strerror}"
            ) from error


class LayoutBlobStore:
    """Blobs of an OCI layout or archive; every stream verifies its digest at end of stream."""

    origin: tuple[str, str] | None = None

    def __init__(self, files: LayoutFiles) -> None:
        self.files = files

    def path(self, digest: str) -> Path | None:
        """Return the file of a blob when the layout is a directory that has it."""
        if isinstance(self.files, DirectoryFiles):
            path = self.files.root / blob_name(digest)
            return path if path.is_file() else None
        return None

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[BinaryIO]:
        name = blob_name(descriptor.digest)
        if not self.files.exists(name):
            raise ImageError(f"blob {descriptor.digest} ({descriptor.media_type}) not found in "
                             f"{self.files.where}; the layout is incomplete")
        return verifying_reader(self.files.open(name), descriptor,
                                f"blob {descriptor.digest} in {self.files.where}")

    def read_blob(self, descriptor: Descriptor) -> bytes:
        with self.open_blob(descriptor) as stream:
            return stream.read()


# Reading


def read_layout(path: Path, tag: str | None = None) -> Artifact:
    """Read the image or index that `tag` names in the layout at `path`.

    With no tag, a layout holding exactly one manifest yields it; otherwise the error lists the
    refs to choose from. A tag of the form `sha256:...` selects an entry by digest.
    """
    path = Path(path)
    if not path.is_dir():
        raise TransportError(f"OCI layout {path} not found or not a directory")
    return read_layout_files(DirectoryFiles(path), tag)


def read_layout_files(files: LayoutFiles, tag: str | None) -> Artifact:
    """Read the image or index that `tag` names from the files of a layout."""
    if not files.exists(LAYOUT_FILE):
        raise TransportError(f"{files.where} is not an OCI image layout: {LAYOUT_FILE} is missing")
    if not files.exists(INDEX_FILE):
        raise TransportError(f"OCI layout {files.where} has no {INDEX_FILE}")
    with files.open(INDEX_FILE) as handle:
        index = Index.parse(handle.read(MAX_DOCUMENT_BYTES), OCI_INDEX,
                            f"{INDEX_FILE} of {files.where}")

    descriptor = _select_entry(index, tag, files.where)
    store = LayoutBlobStore(files)
    artifact = assemble_artifact(descriptor, store.read_blob, store, f"{files.where}")
    if isinstance(artifact, RawManifest):
        raise ImageError(f"{files.where}: ref {tag or descriptor.digest} is a "
                         f"{descriptor.media_type}, not an image or image index")
    return artifact


def _select_entry(index: Index, tag: str | None, where: str) -> Descriptor:
    refs = [entry.annotations.get(REF_NAME, entry.digest) for entry in index.manifests]
    if tag is None:
        if len(index.manifests) == 1:
            return index.manifests[0]
        if not index.manifests:
            raise ImageError(f"OCI layout {where} contains no images")
        raise ImageError(f"OCI layout {where} contains {len(refs)} images; name one of: "
                         f"{', '.join(refs)}")

    if tag.startswith("sha256:"):
        matches = [entry for entry in index.manifests if entry.digest == tag]
    else:
        matches = [entry for entry in index.manifests if entry.annotations.get(REF_NAME) == tag]
    if not matches:
        raise ImageError(f"OCI layout {where} has no image tagged {tag!r}; it has: "
                         f"{', '.join(refs) or 'nothing'}")
    if len({entry.digest for entry in matches}) > 1:
        raise ImageError(f"OCI layout {where} has several different images tagged {tag!r}")
    return matches[0]


def assemble_artifact(descriptor: Descriptor, fetch_manifest: Callable[[Descriptor], bytes],
                      blobs: BlobStore, where: str) -> Image | ImageIndex | RawManifest:
    """Build the model of the manifest `descriptor` names, fetching children recursively.

    `fetch_manifest` returns the verified bytes of a manifest or index. An image manifest becomes
    an Image unless it is an attestation or artifact (its config is not an image config, or its
    platform is `unknown/unknown`), which becomes a RawManifest, as does any unknown media type.
    """
    what = f"manifest {descriptor.digest} in {where}"
    if descriptor.size > MAX_DOCUMENT_BYTES:
        raise ImageError(f"{what} is {descriptor.size} bytes, too large for a manifest")
    raw = fetch_manifest(descriptor)
    verify_digest(raw, descriptor.digest, what)

    if descriptor.media_type in INDEX_TYPES:
        index = Index.parse(raw, descriptor.media_type, what)
        children = [assemble_artifact(child, fetch_manifest, blobs, where)
                    for child in index.manifests]
        return ImageIndex(index, tuple(children))

    if descriptor.media_type in MANIFEST_TYPES and not _is_attestation(descriptor):
        manifest = Manifest.parse(raw, descriptor.media_type, what)
        if manifest.config.media_type in IMAGE_CONFIG_TYPES:
            if manifest.config.size > MAX_DOCUMENT_BYTES:
                raise ImageError(f"{what}: config is {manifest.config.size} bytes, too large "
                                 "for an image config")
            config_raw = blobs.read_blob(manifest.config)
            config = ImageConfig.parse(config_raw, f"config {manifest.config.digest} in {where}")
            return Image(manifest, config, blobs)

    return RawManifest(descriptor, raw, blobs, _references(raw))


def _is_attestation(descriptor: Descriptor) -> bool:
    platform = descriptor.platform
    if platform is not None and (platform.os, platform.architecture) == ("unknown", "unknown"):
        return True
    return descriptor.annotations.get("vnd.docker.reference.type") == "attestation-manifest"


def _references(raw: bytes) -> tuple[Descriptor, ...]:
    # Blobs an uninterpreted manifest points at, so that copying it copies them too.
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return ()
    if not isinstance(document, dict):
        return ()
    found: list[Descriptor] = []
    candidates: list[Any] = [document.get("config")]
    for key in ("layers", "blobs"):
        value = document.get(key)
        if isinstance(value, list):
            candidates.extend(value)
    for candidate in candidates:
        if isinstance(candidate, dict):
            try:
                found.append(Descriptor.from_json(candidate))
            except ImageError:
                continue
    return tuple(found)


# Writing


def iter_blobs(artifact: Image | ImageIndex | RawManifest) -> Iterator[
        tuple[Descriptor, BlobStore | bytes]]:
    """Yield every blob of an artifact in the order a writer must store them.

    Configs and layers come before the manifest that names them, and manifests before the index
    that names them. Each item is the descriptor with either its bytes or the store to read it.
    """
    if isinstance(artifact, Image):
        yield artifact.manifest.config, artifact.config.raw
        for layer in artifact.manifest.layers:
            yield layer, artifact.blobs
        yield artifact.manifest.descriptor(), artifact.manifest.raw
    elif isinstance(artifact, ImageIndex):
        for child in artifact.children:
            yield from iter_blobs(child)
        yield artifact.index.descriptor(), artifact.index.raw
    else:
        for reference in artifact.references:
            yield reference, artifact.blobs
        yield artifact.descriptor, artifact.raw


def top_descriptor(artifact: Artifact) -> Descriptor:
    """Return the descriptor of an image's manifest or an index."""
    if isinstance(artifact, Image):
        return artifact.manifest.descriptor()
    return artifact.index.descriptor()


def write_layout(path: Path, artifact: Artifact, tag: str | None = None) -> str:
    """Write `artifact` into the layout at `path` under `tag` and return its digest.

    The layout is created if missing. An existing entry with the same ref name is replaced and
    every other entry is kept.
    """
    path = Path(path)
    try:
        return _write_layout(path, artifact, tag)
    except OSError as error:
        raise TransportError(f"cannot write OCI layout {path}: {error.strerror or error}; check "
                             "that the directory exists and is writable") from error


def _write_layout(path: Path, artifact: Artifact, tag: str | None) -> str:
    path.mkdir(parents=True, exist_ok=True)
    layout_file = path / LAYOUT_FILE
    if not layout_file.exists():
        _write_atomic(layout_file, json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode())

    written = 0
    for descriptor, source in iter_blobs(artifact):
        target = path / blob_name(descriptor.digest)
        if target.is_file() and target.stat().st_size == descriptor.size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, bytes):
            verify_digest(source, descriptor.digest, f"blob {descriptor.digest}")
            _write_atomic(target, source)
        else:
            with source.open_blob(descriptor) as stream:
                copy_verified(stream, target, descriptor)
        written += 1

    top = top_descriptor(artifact)
    # Two writers of the same layout would otherwise both read the old index.json and the
    # second rename would drop the first one's entry.
    with _locked_directory(path):
        _update_index(path, top, tag)
    logger.debug("wrote %s to OCI layout %s as %s (%d new blobs)", top.digest, path, tag, written)
    return top.digest


def _update_index(path: Path, top: Descriptor, tag: str | None) -> None:
    index_path = path / INDEX_FILE
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    if index_path.exists():
        existing = Index.parse(index_path.read_bytes(), OCI_INDEX, f"{index_path}")
        document = dict(existing.document)
        document.setdefault("mediaType", OCI_INDEX)

    entries = [entry for entry in document.get("manifests") or []
               if not _is_replaced(entry, top, tag)]
    entry = {"mediaType": top.media_type, "digest": top.digest, "size": top.size}
    if tag is not None:
        entry["annotations"] = {REF_NAME: tag}
    entries.append(entry)
    document["manifests"] = entries
    _write_atomic(index_path, json.dumps(document, indent=2).encode() + b"\n")


@contextmanager
def _locked_directory(path: Path) -> Iterator[None]:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _is_replaced(entry: object, top: Descriptor, tag: str | None) -> bool:
    # A tagged write replaces the entry with that ref name. An untagged write replaces an
    # untagged entry of the same digest, so that writing twice does not list it twice.
    if not isinstance(entry, dict):
        return False
    ref_name = (entry.get("annotations") or {}).get(REF_NAME)
    if tag is not None:
        return bool(ref_name == tag)
    return ref_name is None and entry.get("digest") == top.digest


def copy_verified(stream: BinaryIO, target: Path, descriptor: Descriptor) -> None:
    """Copy `stream` into `target` through a temporary file, renaming only if the digest matches.

    The source stream may verify too; hashing here keeps the check independent of the store.
    """
    algorithm, _, expected = descriptor.digest.partition(":")
    if algorithm not in hashlib.algorithms_available:
        raise ImageError(f"blob {descriptor.digest}: unsupported digest algorithm {algorithm!r}")
    hasher = hashlib.new(algorithm)
    with atomic_output(target) as handle:
        while chunk := stream.read(_CHUNK):
            hasher.update(chunk)
            handle.write(chunk)
        if hasher.hexdigest() != expected:
            raise DigestMismatchError(f"blob {descriptor.digest}: content has digest "
                                      f"{algorithm}:{hasher.hexdigest()}; not written to {target}")


def _write_atomic(target: Path, data: bytes) -> None:
    with atomic_output(target) as handle:
        handle.write(data)
