"""Read and write oci-archive and docker-archive files.

An oci-archive is a tar of an OCI image layout. A docker-archive is what `docker image save`
writes: `manifest.json` (a list of `Config`, `RepoTags` and `Layers` paths), the config JSON,
uncompressed layer tars and the legacy `repositories` file. Before Docker 25 the files were
`<hex>.json` and `<id>/layer.tar`; since Docker 25 they are `blobs/sha256/<hex>`, and both forms
are read.

Archives are read in place: the tar is indexed once and blobs are served from their byte ranges,
so nothing is extracted. A compressed archive is first decompressed into an unnamed temporary
file. Writes go to a temporary file in the destination directory that is renamed over the
destination only when complete.

Digests: an oci-archive keeps every manifest and blob unchanged, so digests survive a round
trip. A docker-archive stores no manifest. Reading one synthesises an OCI manifest with
uncompressed layers, so the manifest digest differs from the image's digest in a registry, while
the config digest (Docker's image ID) and the diff_ids are preserved. Writing one stores the
config unchanged and each layer uncompressed.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

from suture.errors import DigestMismatchError, ImageError, TransportError
from suture.image.layers import GZIP_MAGIC, ZSTD_MAGIC, open_layer
from suture.image.layout import (
    INDEX_FILE,
    LAYOUT_FILE,
    LAYOUT_VERSION,
    REF_NAME,
    blob_name,
    iter_blobs,
    read_layout_files,
    top_descriptor,
)
from suture.image.model import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Artifact,
    BlobStore,
    Descriptor,
    Image,
    ImageConfig,
    Manifest,
)
from suture.image.store import verifying_reader
from suture.outputs import atomic_output

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_MAX_LINK_HOPS = 16
_MAX_MANIFEST_BYTES = 16 * 1024 * 1024


class TarFiles:
    """The regular files of a tar archive, read from their byte ranges without extraction."""

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        try:
            handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - open for the object's life
        except OSError as error:
            raise TransportError(f"cannot open archive {path}: {error.strerror}") from error
        head = handle.read(4)
        handle.seek(0)
        if head.startswith((GZIP_MAGIC, ZSTD_MAGIC)):
            handle = self._decompress(handle, path)
        self._handle = handle
        self._members = self._index(handle, path)

    @staticmethod
    def _decompress(handle: BinaryIO, path: Path) -> BinaryIO:
        # The unnamed temporary file vanishes when closed, so no cleanup is needed.
        plain = cast(BinaryIO, tempfile.TemporaryFile())  # noqa: SIM115 - returned open
        with handle:
            source = open_layer(handle, "", f"archive {path}")
            while chunk := source.read(_CHUNK):
                plain.write(chunk)
        plain.flush()
        plain.seek(0)
        return plain

    @staticmethod
    def _index(handle: BinaryIO, path: Path) -> dict[str, tarfile.TarInfo]:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            with tarfile.open(fileobj=handle, mode="r:") as archive:
                for info in archive:
                    name = _member_name(info.name)
                    if name:
                        members[name] = info
        except tarfile.TarError as error:
            raise TransportError(f"{path} is not a valid tar archive ({error})") from error
        return members

    def _resolve(self, name: str) -> tarfile.TarInfo | None:
        for _ in range(_MAX_LINK_HOPS):
            info = self._members.get(_member_name(name))
            if info is None:
                return None
            if info.isfile():
                return info
            if info.issym():
                name = posixpath.join(posixpath.dirname(_member_name(info.name)), info.linkname)
            elif info.islnk():
                name = info.linkname
            else:
                return None
        return None

    def exists(self, name: str) -> bool:
        return self._resolve(name) is not None

    def size(self, name: str) -> int:
        info = self._resolve(name)
        if info is None:
            raise ImageError(f"{name} not found in archive {self.where}")
        return info.size

    def open(self, name: str) -> BinaryIO:
        info = self._resolve(name)
        if info is None:
            raise ImageError(f"{name} not found in archive {self.where}")
        return cast(BinaryIO, _RangeReader(self._handle.fileno(), info.offset_data, info.size))

    def read(self, name: str) -> bytes:
        if self.size(name) > _MAX_MANIFEST_BYTES:
            raise ImageError(f"{name} in archive {self.where} is too large for a JSON document")
        with self.open(name) as handle:
            return handle.read()


def _member_name(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/").replace("\\", "/") if name else ""


class _RangeReader(io.RawIOBase):
    """Reads bytes [offset, offset + size) of a file descriptor with pread, sharing the fd."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._position = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        count = min(len(view), self._end - self._position)
        if count <= 0:
            return 0
        data = os.pread(self._fd, count, self._position)
        view[: len(data)] = data
        self._position += len(data)
        return len(data)


class _ArchiveBlobStore:
    """Blobs of a docker-archive, each a member of the tar, verified while streaming."""

    origin: tuple[str, str] | None = None

    def __init__(self, files: TarFiles, names: Mapping[str, str]) -> None:
        self._files = files
        self._names = dict(names)

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[BinaryIO]:
        name = self._names.get(descriptor.digest)
        if name is None:
            raise ImageError(f"blob {descriptor.digest} not found in archive {self._files.where}")
        return verifying_reader(self._files.open(name), descriptor,
                                f"{name} in archive {self._files.where}")

    def read_blob(self, descriptor: Descriptor) -> bytes:
        with self.open_blob(descriptor) as stream:
            return stream.read()


# oci-archive


def read_oci_archive(path: Path, tag: str | None = None) -> Artifact:
    """Read the image or index that `tag` names in an oci-archive (a tar of an OCI layout)."""
    return read_layout_files(TarFiles(Path(path)), tag)


def write_oci_archive(path: Path, artifact: Artifact, tag: str | None = None) -> str:
    """Write `artifact` as the only entry of a new oci-archive at `path`; return its digest.

    An existing file at `path` is replaced as a whole, as skopeo does, once the new one is
    complete.
    """
    top = top_descriptor(artifact)
    entry: dict[str, Any] = top.to_json()
    if tag is not None:
        entry["annotations"] = {REF_NAME: tag}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}

    with _atomic_tar(Path(path), "oci-archive") as archive:
        layout_version = json.dumps({"imageLayoutVersion": LAYOUT_VERSION}).encode()
        _add_bytes(archive, LAYOUT_FILE, layout_version)
        _add_directory(archive, "blobs")
        added: set[str] = set()
        for descriptor, source in iter_blobs(artifact):
            if descriptor.digest in added:
                continue
            name = blob_name(descriptor.digest)
            if not added:
                _add_directory(archive, posixpath.dirname(name))
            if isinstance(source, bytes):
                _add_bytes(archive, name, source, descriptor)
            else:
                _add_blob(archive, name, source, descriptor)
            added.add(descriptor.digest)
        _add_bytes(archive, INDEX_FILE, json.dumps(index, indent=2).encode() + b"\n")
    logger.debug("wrote %s to oci-archive %s (%d blobs)", top.digest, path, len(added))
    return top.digest


# docker-archive


def read_docker_archive(path: Path, ref: str | None = None) -> Image:
    """Read one image of a docker-archive, chosen by `ref` (a RepoTag or `@N`, the N-th image).

    With no ref, an archive holding exactly one image yields it.
    """
    files = TarFiles(Path(path))
    if not files.exists("manifest.json"):
        raise TransportError(f"{path} is not a docker-archive: manifest.json is missing")
    try:
        entries = json.loads(files.read("manifest.json"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ImageError(f"manifest.json in {path} is invalid JSON ({error})") from error
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ImageError(f"manifest.json in {path} is not a list of images")
    entry = _select_docker_entry(entries, ref, path)

    config_name = str(entry.get("Config") or "")
    layer_names = [str(name) for name in entry.get("Layers") or []]
    if not config_name:
        raise ImageError(f"manifest.json in {path} names no Config for {ref or 'the image'}")
    config = ImageConfig.parse(files.read(config_name), f"config {config_name} in {path}")
    diff_ids = config.diff_ids
    if len(diff_ids) != len(layer_names):
        raise ImageError(f"{path}: manifest.json lists {len(layer_names)} layers but the config "
                         f"lists {len(diff_ids)} diff_ids")

    names = {config.digest: config_name}
    layers = []
    for layer_name, diff_id in zip(layer_names, diff_ids, strict=True):
        descriptor = _layer_descriptor(files, layer_name, diff_id)
        names[descriptor.digest] = layer_name
        layers.append(descriptor.to_json())
    manifest = Manifest.build({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.digest, "size": len(config.raw)},
        "layers": layers,
    })
    return Image(manifest, config, cast(BlobStore, _ArchiveBlobStore(files, names)))


def _select_docker_entry(entries: list[dict[str, Any]], ref: str | None,
                         path: Path) -> dict[str, Any]:
    tags = [tag for entry in entries for tag in entry.get("RepoTags") or []]
    if ref is None:
        if len(entries) == 1:
            return entries[0]
        raise ImageError(f"docker-archive {path} contains {len(entries)} images; name one of: "
                         f"{', '.join(tags) or '@0 ... @' + str(len(entries) - 1)}")
    if ref.startswith("@") and ref[1:].isdigit():
        number = int(ref[1:])
        if number >= len(entries):
            raise ImageError(f"docker-archive {path} has no image {ref}; it has {len(entries)}")
        return entries[number]
    wanted = _familiar(ref)
    for entry in entries:
        if any(_familiar(tag) == wanted for tag in entry.get("RepoTags") or []):
            return entry
    raise ImageError(f"docker-archive {path} has no image tagged {ref!r}; it has: "
                     f"{', '.join(tags) or 'no tags'}")


def _familiar(reference: str) -> str:
    # Docker writes RepoTags in the short form: `debian:bookworm`, not docker.io/library/...
    for prefix in ("docker.io/library/", "docker.io/", "library/"):
        if reference.startswith(prefix):
            reference = reference[len(prefix):]
            break
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        reference += ":latest"
    return reference


def _layer_descriptor(files: TarFiles, name: str, diff_id: str) -> Descriptor:
    size = files.size(name)
    with files.open(name) as handle:
        head = handle.read(4)
    if not head.startswith((GZIP_MAGIC, ZSTD_MAGIC)):
        # An uncompressed layer's digest is its diff_id; the store verifies it while streaming.
        return Descriptor(OCI_LAYER, diff_id, size)

    media_type = OCI_LAYER_GZIP if head.startswith(GZIP_MAGIC) else OCI_LAYER_ZSTD
    hasher = hashlib.sha256()
    with files.open(name) as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return Descriptor(media_type, "sha256:" + hasher.hexdigest(), size)


def write_docker_archive(path: Path, image: Image, repo_tags: Sequence[str] = ()) -> str:
    """Write `image` as a docker-archive that `docker image load` accepts; return its image ID.

    Layers are stored uncompressed, as `docker save` stores them, under `blobs/sha256/<diff_id>`
    (the Docker 25 names). The image ID is the config digest, which is kept.
    """
    path = Path(path)
    tags = [_familiar(tag) for tag in repo_tags]
    config_name = blob_name(image.config.digest)
    layer_names: list[str] = []

    with _atomic_tar(path, "docker-archive") as archive:
        _add_directory(archive, "blobs")
        _add_directory(archive, "blobs/sha256")
        _add_bytes(archive, config_name, image.config.raw)
        for number, (descriptor, diff_id) in enumerate(image.layers(), start=1):
            name = blob_name(diff_id)
            if name not in layer_names:
                what = f"layer {number} ({descriptor.digest}) of image {image.digest}"
                _add_uncompressed_layer(archive, name, image.blobs, descriptor, diff_id, what,
                                        path.parent)
            layer_names.append(name)

        manifest = [{"Config": config_name, "RepoTags": tags, "Layers": layer_names}]
        _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
        # The legacy file maps repository and tag to the top layer's ID; `docker load` reads
        # manifest.json instead when it exists.
        top_layer = image.config.diff_ids[-1].partition(":")[2] if image.config.diff_ids else ""
        repositories: dict[str, dict[str, str]] = {}
        for tag in tags:
            repository, _, name = tag.rpartition(":")
            repositories.setdefault(repository, {})[name] = top_layer
        _add_bytes(archive, "repositories", json.dumps(repositories).encode())
    logger.debug("wrote image %s to docker-archive %s as %s", image.config.digest, path, tags)
    return image.config.digest


def _add_uncompressed_layer(archive: tarfile.TarFile, name: str, blobs: BlobStore,
                            descriptor: Descriptor, diff_id: str, what: str,
                            scratch: Path) -> None:
    # tar needs the size before the data, so a compressed layer is expanded to a scratch file.
    with tempfile.TemporaryFile(dir=scratch) as plain, blobs.open_blob(descriptor) as stream:
        hasher = hashlib.sha256()
        source = open_layer(stream, descriptor.media_type, what)
        while chunk := source.read(_CHUNK):
            hasher.update(chunk)
            plain.write(chunk)
        while stream.read(_CHUNK):
            pass
        if "sha256:" + hasher.hexdigest() != diff_id:
            raise DigestMismatchError(f"{what}: uncompressed content has digest "
                                      f"sha256:{hasher.hexdigest()}, config lists {diff_id}")
        info = tarfile.TarInfo(name)
        info.size = plain.tell()
        info.mode = 0o644
        plain.seek(0)
        archive.addfile(info, plain)


# Tar writing helpers


@contextmanager
def _atomic_tar(path: Path, kind: str) -> Iterator[tarfile.TarFile]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TransportError(f"cannot write {kind} {path}: {error.strerror or error}; check that "
                             "its directory exists and is writable") from error
    try:
        with (
            atomic_output(path) as handle,
            tarfile.open(fileobj=handle, mode="w", format=tarfile.PAX_FORMAT) as archive,
        ):
            yield archive
    except OSError as error:
        raise TransportError(f"cannot write {kind} {path}: {error.strerror or error}") from error


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    return info


def _add_directory(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    archive.addfile(info)


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes,
               descriptor: Descriptor | None = None) -> None:
    if descriptor is not None and "sha256:" + hashlib.sha256(data).hexdigest() != descriptor.digest:
        raise DigestMismatchError(f"blob {descriptor.digest}: content does not match its digest")
    archive.addfile(_tar_info(name, len(data)), io.BytesIO(data))


def _add_blob(archive: tarfile.TarFile, name: str, blobs: BlobStore,
              descriptor: Descriptor) -> None:
    with blobs.open_blob(descriptor) as stream:
        hashing = _HashingReader(stream)
        archive.addfile(_tar_info(name, descriptor.size), cast(BinaryIO, hashing))
        # Reading past the end lets the store's own end-of-stream check run.
        if stream.read(1):
            raise DigestMismatchError(f"blob {descriptor.digest}: longer than {descriptor.size} "
                                      "bytes")
    if hashing.digest() != descriptor.digest:
        raise DigestMismatchError(f"blob {descriptor.digest}: content has digest "
                                  f"{hashing.digest()}")


class _HashingReader(io.RawIOBase):
    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        data = self._source.read(len(view))
        self._hash.update(data)
        view[: len(data)] = data
        return len(data)

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()
