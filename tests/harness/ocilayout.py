"""Write OCI image layouts from root filesystem directories, independently of suture.

Fixture images must not be produced by the code under test, so this module
writes layer tars, configs, manifests and `index.json` itself with tarfile,
gzip, hashlib and json (OCI image-spec v1.0: image-layout.md, manifest.md,
config.md, layer.md for whiteouts).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.harness.digests import sha256_file

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_ANNOTATION = "org.opencontainers.image.ref.name"

# Paths whose contents never go into an image (device nodes, kernel file systems).
SKIPPED_CONTENTS = ("dev", "proc", "sys", "run")


@dataclass(frozen=True)
class Layer:
    """One layer: paths (relative to the root, sorted on write) plus whiteouts."""

    root: Path
    paths: tuple[str, ...]
    whiteouts: tuple[str, ...] = ()
    opaque_dirs: tuple[str, ...] = ()
    comment: str = ""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Mapping[str, str] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform:
            data["platform"] = dict(self.platform)
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data


def iso_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def walk_tree(root: Path) -> list[str]:
    """List every path under `root` relative to it, skipping contents of /dev, /proc, ..."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir in SKIPPED_CONTENTS:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            found.append(name if rel_dir == "." else f"{rel_dir}/{name}")
    return sorted(found)


def _signature(path: Path) -> tuple[object, ...]:
    info = path.lstat()
    kind = stat.S_IFMT(info.st_mode)
    extra: object = None
    if stat.S_ISLNK(info.st_mode):
        extra = os.readlink(path)
    elif stat.S_ISREG(info.st_mode):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        extra = digest.hexdigest()
    return (kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, extra)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Record type, mode, owner and content hash of every path under `root`."""
    return {rel: _signature(root / rel) for rel in walk_tree(root)}


def diff_layer(before: Mapping[str, tuple[object, ...]], root: Path, comment: str = "") -> Layer:
    """Build the layer that turns the `before` snapshot into the tree now at `root`.

    Added or changed paths are included with their parent directories; removed
    paths become whiteouts, except under a directory that is itself removed.
    """
    after = snapshot(root)
    changed = {rel for rel, sig in after.items() if before.get(rel) != sig}
    with_parents = set(changed)
    for rel in changed:
        parent = os.path.dirname(rel)
        while parent:
            with_parents.add(parent)
            parent = os.path.dirname(parent)
    removed = sorted(rel for rel in before if rel not in after)
    removed_set = set(removed)
    whiteouts = tuple(rel for rel in removed if os.path.dirname(rel) not in removed_set)
    return Layer(root=root, paths=tuple(sorted(with_parents)), whiteouts=whiteouts, comment=comment)


def full_layer(root: Path, comment: str = "") -> Layer:
    return Layer(root=root, paths=tuple(walk_tree(root)), comment=comment)


def _tar_layer(layer: Layer, out: Path, epoch: int) -> None:
    """Write the layer as an uncompressed, sorted, numeric-owner PAX tar."""
    entries: list[tuple[str, str]] = [(rel, "path") for rel in layer.paths]
    for rel in layer.whiteouts:
        parent, name = os.path.split(rel)
        entries.append((os.path.join(parent, f".wh.{name}"), "whiteout"))
    for rel in layer.opaque_dirs:
        entries.append((os.path.join(rel, ".wh..wh..opq"), "whiteout"))
    entries.sort()

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as archive:
        for name, kind in entries:
            if kind == "whiteout":
                info = tarfile.TarInfo(name)
                info.mtime = epoch
                archive.addfile(info)
                continue
            source = layer.root / name
            info = archive.gettarinfo(str(source), arcname=name)
            if info.type in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
                continue
            info.uname = ""
            info.gname = ""
            info.mtime = min(int(info.mtime), epoch)
            if info.isreg():
                with source.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)


class LayoutWriter:
    """Collects blobs in `<dest>/blobs/sha256` and writes `index.json` last."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.blobs = dest / "blobs" / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}', encoding="utf-8")

    def add_bytes(self, data: bytes, media_type: str) -> Descriptor:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        target = self.blobs / digest.split(":", 1)[1]
        if not target.exists():
            target.write_bytes(data)
        return Descriptor(media_type, digest, len(data))

    def add_json(self, value: Any, media_type: str) -> Descriptor:
        data = json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return self.add_bytes(data, media_type)

    def add_file(self, path: Path, media_type: str) -> Descriptor:
        digest = "sha256:" + sha256_file(path)
        target = self.blobs / digest.split(":", 1)[1]
        size = path.stat().st_size
        if not target.exists():
            shutil.copyfile(path, target)
        return Descriptor(media_type, digest, size)

    def add_layer(self, layer: Layer, epoch: int) -> tuple[Descriptor, str]:
        """Tar and gzip `layer`; return its blob descriptor and uncompressed diff ID."""
        with tempfile.TemporaryDirectory(dir=self.dest) as work:
            tar_path = Path(work) / "layer.tar"
            _tar_layer(layer, tar_path, epoch)
            diff_id = "sha256:" + sha256_file(tar_path)
            gz_path = Path(work) / "layer.tar.gz"
            with (
                tar_path.open("rb") as raw,
                gz_path.open("wb") as out,
                gzip.GzipFile(fileobj=out, mode="wb", filename="", mtime=0, compresslevel=6) as gz,
            ):
                shutil.copyfileobj(raw, gz, 1 << 20)
            return self.add_file(gz_path, MEDIA_LAYER_GZIP), diff_id

    def add_blob_from(self, layout: Path, descriptor: Descriptor) -> None:
        source = layout / "blobs" / "sha256" / descriptor.digest.split(":", 1)[1]
        target = self.blobs / descriptor.digest.split(":", 1)[1]
        if not target.exists():
            shutil.copyfile(source, target)

    def write_index(self, manifests: Sequence[Descriptor], annotations: Mapping[str, str]) -> None:
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [m.to_json() for m in manifests],
        }
        if annotations:
            index["annotations"] = dict(annotations)
        tmp = self.dest / "index.json.tmp"
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
        tmp.rename(self.dest / "index.json")


@dataclass(frozen=True)
class ImageSpec:
    """What goes into one image config besides its layers."""

    architecture: str
    epoch: int
    os: str = "linux"
    variant: str | None = None
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    cmd: tuple[str, ...] | None = ("bash",)
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def platform(self) -> dict[str, str]:
        platform = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            platform["variant"] = self.variant
        return platform


def write_image(writer: LayoutWriter, layers: Iterable[Layer], spec: ImageSpec) -> Descriptor:
    """Write the layers, config and manifest of one image; return the manifest descriptor."""
    created = iso_time(spec.epoch)
    layer_descriptors: list[Descriptor] = []
    diff_ids: list[str] = []
    history: list[dict[str, Any]] = []
    for layer in layers:
        descriptor, diff_id = writer.add_layer(layer, spec.epoch)
        layer_descriptors.append(descriptor)
        diff_ids.append(diff_id)
        history.append({"created": created, "created_by": layer.comment or "suture test harness"})

    container_config: dict[str, Any] = {"Env": list(spec.env)}
    if spec.cmd is not None:
        container_config["Cmd"] = list(spec.cmd)
    if spec.labels:
        container_config["Labels"] = dict(spec.labels)
    config: dict[str, Any] = {
        "created": created,
        "architecture": spec.architecture,
        "os": spec.os,
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    }
    if spec.variant:
        config["variant"] = spec.variant
    config_descriptor = writer.add_json(config, MEDIA_CONFIG)

    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": config_descriptor.to_json(),
        "layers": [d.to_json() for d in layer_descriptors],
    }
    if spec.annotations:
        manifest["annotations"] = dict(spec.annotations)
    descriptor = writer.add_json(manifest, MEDIA_MANIFEST)
    return Descriptor(MEDIA_MANIFEST, descriptor.digest, descriptor.size, platform=spec.platform)


def read_index(layout: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((layout / "index.json").read_text(encoding="utf-8"))
    return data


def read_blob_json(layout: Path, digest: str) -> dict[str, Any]:
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def copy_image_blobs(writer: LayoutWriter, layout: Path, manifest_digest: str) -> None:
    """Copy one image's manifest, config and layers from `layout` into `writer`."""
    manifest = read_blob_json(layout, manifest_digest)
    blobs = [manifest["config"], *manifest["layers"]]
    for blob in blobs:
        writer.add_blob_from(layout, Descriptor(blob["mediaType"], blob["digest"], blob["size"]))
    writer.add_blob_from(layout, Descriptor(MEDIA_MANIFEST, manifest_digest, 0))
