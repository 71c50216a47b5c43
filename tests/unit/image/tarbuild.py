"""Build small layer tars in memory for the image tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from suture.image.model import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Descriptor,
    Image,
    ImageConfig,
    ImageIndex,
    Index,
    Manifest,
    RawManifest,
)
from suture.image.store import FileBlobStore


@dataclass(frozen=True)
class Member:
    """One tar member to write: a file (data), directory, symlink or hardlink."""

    name: str
    data: bytes | None = None
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644
    size: int | None = None


def file(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    return Member(name, data, tarfile.REGTYPE, mode=mode)


def directory(name: str, mode: int = 0o755) -> Member:
    return Member(name, None, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Member:
    return Member(name, None, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Member:
    return Member(name, None, tarfile.LNKTYPE, linkname=target)


def make_tar(members: Sequence[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.kind
            info.mode = member.mode
            info.linkname = member.linkname
            info.mtime = 1_700_000_000
            data = member.data or b""
            info.size = member.size if member.size is not None else len(data)
            if member.kind == tarfile.REGTYPE:
                archive.addfile(info, io.BytesIO(data))
            else:
                info.size = 0
                archive.addfile(info)
    return buffer.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zstd_bytes(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def make_image(directory: Path, layers: Sequence[bytes], compression: str = "gzip",
               architecture: str = "amd64") -> Image:
    """Return an Image whose layers are the given uncompressed tars, stored as files."""
    media_type = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]
    compress = {"gzip": gzip_bytes, "zstd": zstd_bytes, "none": lambda data: data}[compression]
    paths: dict[str, Path] = {}
    descriptors = []
    for tar in layers:
        blob = compress(tar)
        descriptor = Descriptor.for_bytes(media_type, blob)
        path = directory / descriptor.digest.replace(":", "-")
        path.write_bytes(blob)
        paths[descriptor.digest] = path
        descriptors.append(descriptor)
    config = ImageConfig.build({
        "architecture": architecture, "os": "linux",
        "rootfs": {"type": "layers",
                   "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest() for tar in layers]},
    })
    config_path = directory / f"config-{architecture}.json"
    config_path.write_bytes(config.raw)
    paths[config.digest] = config_path
    manifest = Manifest.build({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": Descriptor.for_bytes(OCI_CONFIG, config.raw).to_json(),
        "layers": [descriptor.to_json() for descriptor in descriptors],
    })
    return Image(manifest, config, FileBlobStore(paths, None))


def make_index(directory: Path, images: Sequence[Image]) -> ImageIndex:
    """Return an index of `images` (amd64 then arm64, by position) plus an attestation manifest."""
    paths: dict[str, Path] = {}
    entries = []
    for image, arch in zip(images, ("amd64", "arm64"), strict=False):
        entries.append(image.manifest.descriptor(platform={"os": "linux", "architecture": arch}))
    attestation_layer = b'{"predicateType":"https://spdx.dev/Document"}'
    empty = b"{}"
    for blob in (attestation_layer, empty):
        path = directory / ("att-" + hashlib.sha256(blob).hexdigest())
        path.write_bytes(blob)
        paths["sha256:" + hashlib.sha256(blob).hexdigest()] = path
    attestation = Manifest.build({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": Descriptor.for_bytes(OCI_CONFIG, empty).to_json(),
        "layers": [Descriptor.for_bytes("application/vnd.in-toto+json",
                                        attestation_layer).to_json()],
    })
    attestation_descriptor = attestation.descriptor(
        platform={"os": "unknown", "architecture": "unknown"},
        annotations={"vnd.docker.reference.type": "attestation-manifest",
                     "vnd.docker.reference.digest": images[0].digest},
    )
    entries.append(attestation_descriptor)
    index = Index.build({"schemaVersion": 2, "mediaType": OCI_INDEX,
                         "manifests": [entry.to_json() for entry in entries],
                         "annotations": {"org.example.kept": "yes"}})
    raw = RawManifest(attestation_descriptor, attestation.raw, FileBlobStore(paths, None),
                      (attestation.config, *attestation.layers))
    return ImageIndex(index, (*images, raw))
