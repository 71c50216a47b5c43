"""Read-only merged root filesystems: one built from an image's layers, one over a directory.

`MergedFileSystem` streams each layer once, bottom layer first, and applies the OCI whiteout
rules (image-spec layer.md): `.wh.NAME` hides NAME and everything under it in lower layers, and
`.wh..wh..opq` in a directory hides every lower-layer entry in that directory. Whiteouts affect
lower layers only, so entries of the same layer survive their directory's opaque marker. A
non-directory in an upper layer replaces a directory of the same path with all its contents, as
overlayfs does.

Metadata is kept for every path. Contents are kept only for the paths the caller names; other
regular files are read on demand by streaming their layer again.

With a listing cache directory, the member list of each layer and the contents kept from it are
saved after the layer was read and verified, keyed by its digest, diff_id and limits. A later
view of a layer with the same key is built from that file without decompressing the layer.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import posixpath
import stat
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, cast

from suture.errors import DigestMismatchError, ImageError
from suture.image.fsview import FileEntry, FileType
from suture.image.layers import DEFAULT_LIMITS, LayerLimits, LayerMember, LayerReader
from suture.image.model import Descriptor, Image

logger = logging.getLogger(__name__)

MAX_SYMLINK_HOPS = 40  # the Linux limit (MAXSYMLINKS), so resolution agrees with the kernel
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# Files read on demand up to this size are cached, up to the total below.
_CACHE_FILE_LIMIT = 1024 * 1024
_CACHE_TOTAL_LIMIT = 64 * 1024 * 1024
_DRAIN_STEP = 1024 * 1024
# The first line of a listing cache file. A change of the format changes the version.
_LISTING_MAGIC = b"suture-layer-listing 1\n"


def normalise_path(path: str) -> str:
    """Return `path` as an absolute path with no `.`, `..` or empty components.

    `..` at the root stays at the root, as the kernel resolves it.
    """
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def resolve_path(path: str, lookup: Callable[[str], FileEntry | None]) -> str:
    """Resolve every symlink in `path` inside the root, using `lookup` for exact paths.

    `lookup` returns the entry at a path whose components are already resolved. A component that
    does not exist is kept as is. Raises ImageError after MAX_SYMLINK_HOPS symlinks.
    """
    pending = deque(path.split("/"))
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue

        entry = lookup("/" + "/".join([*resolved, part]))
        if entry is None or entry.type is not FileType.SYMLINK:
            resolved.append(part)
            continue

        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise ImageError(f"too many levels of symbolic links while resolving {path}")
        if entry.linkname.startswith("/"):
            resolved = []
        pending.extendleft(reversed(entry.linkname.split("/")))
    return "/" + "/".join(resolved)


@dataclass(frozen=True)
class _Source:
    """Location of a regular file's content: layer number and member index in that layer."""

    layer: int
    index: int


@dataclass
class _Pending:
    """An entry of the layer being read, applied after the layer's whiteouts."""

    entry: FileEntry
    source: _Source | None
    content: bytes | None


class MergedFileSystem:
    """The merged root filesystem of an image, implementing FileSystemView."""

    def __init__(self, image: Image | None = None, limits: LayerLimits = DEFAULT_LIMITS) -> None:
        self._image = image
        self._limits = limits
        self._entries: dict[str, FileEntry] = {
            "/": FileEntry("/", FileType.DIRECTORY, 0o755, 0, 0, 0, 0)
        }
        self._children: dict[str, set[str]] = {"/": set()}
        self._contents: dict[str, bytes] = {}
        self._sources: dict[str, _Source] = {}
        self._cache: dict[_Source, bytes] = {}
        self._cache_bytes = 0

    @classmethod
    def from_image(cls, image: Image, keep_content: Callable[[str], bool] | None = None, *,
                   limits: LayerLimits = DEFAULT_LIMITS,
                   listing_cache: Path | None = None) -> MergedFileSystem:
        """Index every layer of `image` in one pass, verifying each layer's digest and diff_id.

        Contents are kept for paths where `keep_content(path)` is true. The predicate receives
        the path as stored in the layer, before symlinks are resolved. With `listing_cache`, a
        layer listed there before is not read again. Kept files whose contents the listing
        lacks are then loaded in one pass over their layer.
        """
        view = cls(image, limits)
        keep = keep_content or (lambda _path: False)
        missing: list[str] = []
        for number, (descriptor, diff_id) in enumerate(image.layers()):
            what = f"layer {number + 1} ({descriptor.digest}) of image {image.digest}"
            cache_file = (_listing_path(listing_cache, descriptor, diff_id, limits)
                          if listing_cache is not None else None)
            listing = _load_listing(cache_file) if cache_file is not None else None
            replayed = _replay(listing, keep, cache_file) if listing is not None else None
            if replayed is not None:
                members, lacking = replayed
                view._apply_layer(number, members, keep)
                missing.extend(lacking)
                logger.debug("indexed %s from its cached listing %s", what, cache_file)
                continue

            recorder = _Recorder(keep)
            with image.blobs.open_blob(descriptor) as stream:
                reader = LayerReader(stream, descriptor.media_type, what=what, limits=limits)
                view._apply_layer(number, recorder.record(reader), keep)
                _drain(stream)
            if reader.diff_id != diff_id:
                raise DigestMismatchError(
                    f"{what}: uncompressed content has digest {reader.diff_id}, but the image "
                    f"config lists diff_id {diff_id}"
                )
            if cache_file is not None:
                _save_listing(cache_file, recorder)
            logger.debug("indexed %s: %d bytes uncompressed", what, reader.uncompressed_size)
        if missing:
            view.load_contents(missing)
        return view

    @classmethod
    def from_layers(cls, layers: Iterable[Iterable[LayerMember]],
                    keep_content: Callable[[str], bool] | None = None) -> MergedFileSystem:
        """Merge already-opened layers, bottom first; contents not kept cannot be read later."""
        view = cls()
        keep = keep_content or (lambda _path: False)
        for number, members in enumerate(layers):
            view._apply_layer(number, members, keep)
        return view

    # Building

    def _apply_layer(self, number: int, members: Iterable[LayerMember],
                     keep: Callable[[str], bool]) -> None:
        pending: list[_Pending] = []
        opaque: list[str] = []
        whiteouts: list[str] = []
        layer_files: dict[str, _Pending] = {}

        for member in members:
            parent, name = posixpath.split(member.path)
            if name == OPAQUE_MARKER:
                opaque.append(parent)
                continue
            if name.startswith(WHITEOUT_PREFIX):
                if len(name) > len(WHITEOUT_PREFIX):
                    whiteouts.append(posixpath.join(parent, name[len(WHITEOUT_PREFIX):]))
                continue

            item = _Pending(member.entry(number), None, None)
            if member.type is FileType.FILE:
                item.source = _Source(number, member.index)
                if member.fileobj is not None and keep(member.path):
                    item.content = member.fileobj.read()
                layer_files[member.path] = item
            elif member.type is FileType.HARDLINK:
                self._link_hardlink(item, layer_files.get(member.linkname), keep)
            pending.append(item)

        # Whiteouts hide lower layers only, so they apply before this layer's own entries.
        for directory in opaque:
            for child in list(self._children.get(directory, ())):
                self._remove(posixpath.join(directory, child))
        for path in whiteouts:
            self._remove(path)
        for item in pending:
            self._add(item)

    def _link_hardlink(self, item: _Pending, target: _Pending | None,
                       keep: Callable[[str], bool]) -> None:
        if target is None:
            # A tar hardlink can only name an earlier member of the same archive.
            logger.debug("layer %d: hardlink %s names %s, which is not an earlier file of the "
                         "layer; reading it follows the merged view", item.entry.layer,
                         item.entry.path, item.entry.linkname)
            return
        item.source = target.source
        item.entry = replace(item.entry, size=target.entry.size)
        if keep(item.entry.path) and target.content is not None:
            item.content = target.content

    def _add(self, item: _Pending) -> None:
        path = item.entry.path
        if path == "/":
            if item.entry.type is FileType.DIRECTORY:
                self._entries["/"] = item.entry
            return

        self._ensure_parents(path, item.entry.layer)
        existing = self._entries.get(path)
        replaces_directory = existing is not None and not (
            existing.type is FileType.DIRECTORY and item.entry.type is FileType.DIRECTORY
        )
        if replaces_directory:
            self._remove(path)
        self._entries[path] = item.entry
        parent, name = posixpath.split(path)
        self._children[parent].add(name)
        if item.entry.type is FileType.DIRECTORY:
            self._children.setdefault(path, set())

        self._contents.pop(path, None)
        self._sources.pop(path, None)
        if item.content is not None:
            self._contents[path] = item.content
        if item.source is not None:
            self._sources[path] = item.source

    def _ensure_parents(self, path: str, layer: int) -> None:
        # NOTE: a non-directory parent, including a symlink such as /lib -> usr/lib, is replaced
        # by a directory, as Docker's overlay2 driver does. containerd instead follows such a
        # symlink, so an image relying on either behaviour can differ between runtimes.
        parent = posixpath.dirname(path)
        missing: list[str] = []
        while parent != "/":
            entry = self._entries.get(parent)
            if entry is not None and entry.type is FileType.DIRECTORY:
                break
            missing.append(parent)
            parent = posixpath.dirname(parent)
        for directory in reversed(missing):
            if directory in self._entries:
                self._remove(directory)
            self._entries[directory] = FileEntry(directory, FileType.DIRECTORY, 0o755, 0, 0, 0,
                                                 0, layer=layer)
            self._children[directory] = set()
            up, name = posixpath.split(directory)
            self._children[up].add(name)

    def _remove(self, path: str) -> None:
        if path == "/" or path not in self._entries:
            return
        parent, name = posixpath.split(path)
        self._children.get(parent, set()).discard(name)
        stack = [path]
        while stack:
            current = stack.pop()
            self._entries.pop(current, None)
            self._contents.pop(current, None)
            self._sources.pop(current, None)
            for child in self._children.pop(current, ()):
                stack.append(posixpath.join(current, child))

    # FileSystemView

    def lstat(self, path: str) -> FileEntry | None:
        path = normalise_path(path)
        if path == "/":
            return self._entries["/"]
        parent, name = posixpath.split(path)
        try:
            resolved_parent = resolve_path(parent, self._entries.get)
        except ImageError:
            return None
        return self._entries.get(posixpath.join(resolved_parent, name))

    def resolve(self, path: str) -> str:
        return resolve_path(path, self._entries.get)

    def read(self, path: str) -> bytes | None:
        return self._read(path, 0)

    def listdir(self, path: str) -> list[str]:
        try:
            resolved = self.resolve(path)
        except ImageError:
            return []
        return sorted(self._children.get(resolved, ()))

    def paths(self) -> list[str]:
        return sorted(path for path in self._entries if path != "/")

    # Contents

    def _read(self, path: str, hops: int) -> bytes | None:
        try:
            resolved = self.resolve(path)
        except ImageError:
            return None
        entry = self._entries.get(resolved)
        if entry is None or entry.type not in (FileType.FILE, FileType.HARDLINK):
            return None
        if resolved in self._contents:
            return self._contents[resolved]

        source = self._sources.get(resolved)
        if source is not None:
            return self._read_member(source, resolved)
        if entry.type is FileType.HARDLINK and hops < MAX_SYMLINK_HOPS:
            return self._read(entry.linkname, hops + 1)
        return None

    def load_contents(self, paths: Iterable[str]) -> None:
        """Keep the contents of `paths`, streaming each layer that holds some of them once.

        This is the batch form of `read` for callers that learn which files they need only after
        the view was built: N files of one layer cost one pass over it instead of N.
        """
        wanted: dict[int, dict[int, list[str]]] = {}
        for path in paths:
            try:
                resolved = self.resolve(path)
            except ImageError:
                continue
            source = self._sources.get(resolved)
            if source is None or resolved in self._contents:
                continue
            wanted.setdefault(source.layer, {}).setdefault(source.index, []).append(resolved)

        for layer, members in sorted(wanted.items()):
            found = self._read_members(layer, set(members))
            for index, data in found.items():
                for path in members[index]:
                    self._contents[path] = data

    def _read_member(self, source: _Source, path: str) -> bytes:
        cached = self._cache.get(source)
        if cached is not None:
            return cached
        logger.debug("reading %s from layer %d on demand", path, source.layer + 1)
        data = self._read_members(source.layer, {source.index}).get(source.index)
        if data is None:
            raise ImageError(f"layer {source.layer + 1} of image {self._image_digest()}: member "
                             f"{source.index} ({path}) is missing on a second read; the layer "
                             "changed since it was indexed")

        if len(data) <= _CACHE_FILE_LIMIT and self._cache_bytes + len(data) <= _CACHE_TOTAL_LIMIT:
            self._cache[source] = data
            self._cache_bytes += len(data)
        return data

    def _read_members(self, layer: int, indexes: set[int]) -> dict[int, bytes]:
        if self._image is None:
            raise ImageError("content was not kept and this view has no image to read it from; "
                             "name the path in keep_content")
        descriptor: Descriptor = self._image.manifest.layers[layer]
        what = f"layer {layer + 1} ({descriptor.digest}) of image {self._image.digest}"
        found: dict[int, bytes] = {}
        with self._image.blobs.open_blob(descriptor) as stream:
            reader = LayerReader(stream, descriptor.media_type, what=what, limits=self._limits)
            for member in reader:
                if member.index in indexes and member.fileobj is not None:
                    found[member.index] = member.fileobj.read()
                    if len(found) == len(indexes):
                        break
            # Reading the compressed blob to its end makes the store verify its digest.
            _drain(stream)
        return found

    def _image_digest(self) -> str:
        return self._image.digest if self._image is not None else "(none)"


class _Recorder:
    """Member list and kept contents of one layer as it is read, for the listing cache."""

    def __init__(self, keep: Callable[[str], bool]) -> None:
        self._keep = keep
        self.members: list[list[object]] = []
        self.contents = bytearray()

    def record(self, members: Iterable[LayerMember]) -> Iterator[LayerMember]:
        for member in members:
            offset = -1
            size = 0
            if member.type is FileType.FILE and member.fileobj is not None and self._keep(
                    member.path):
                data = member.fileobj.read()
                offset, size = len(self.contents), len(data)
                self.contents += data
                member = replace(member, fileobj=io.BytesIO(data))
            self.members.append([member.path, member.type.value, member.mode, member.uid,
                                 member.gid, member.size, member.mtime, member.linkname,
                                 member.index, offset, size])
            yield member


def _listing_path(root: Path, descriptor: Descriptor, diff_id: str,
                  limits: LayerLimits) -> Path:
    key = json.dumps([descriptor.digest, descriptor.media_type, diff_id, repr(limits)])
    return root / hashlib.sha256(key.encode()).hexdigest()


def _save_listing(path: Path, recorder: _Recorder) -> None:
    """Write the listing through a temporary file and a rename, so readers see all or nothing."""
    header = json.dumps(recorder.members, separators=(",", ":")).encode()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(_LISTING_MAGIC)
                handle.write(len(header).to_bytes(8, "big"))
                handle.write(header)
                handle.write(recorder.contents)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError as error:
        logger.debug("failed to cache the layer listing at %s: %s", path, error)


def _load_listing(path: Path) -> tuple[list[list[object]], bytes] | None:
    """Return the members and contents saved at `path`, or None if it is absent or invalid."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    start = len(_LISTING_MAGIC) + 8
    try:
        if not data.startswith(_LISTING_MAGIC):
            raise ValueError("unknown format")
        length = int.from_bytes(data[len(_LISTING_MAGIC):start], "big")
        members = json.loads(data[start:start + length])
        if not isinstance(members, list):
            raise ValueError("members are not a list")
    except ValueError as error:
        logger.debug("ignoring the invalid layer listing %s: %s", path, error)
        return None
    return members, data[start + length:]


def _replay(listing: tuple[list[list[object]], bytes], keep: Callable[[str], bool],
            path: Path | None) -> tuple[list[LayerMember], list[str]] | None:
    """Return the layer members of a cached listing and the kept paths it has no content of.

    Returns None for a listing whose rows are invalid, so the layer is read again.
    """
    try:
        return _replay_rows(*listing, keep)
    except (ValueError, TypeError) as error:
        logger.debug("ignoring the invalid layer listing %s: %s", path, error)
        return None


def _replay_rows(rows: list[list[object]], contents: bytes,
                 keep: Callable[[str], bool]) -> tuple[list[LayerMember], list[str]]:
    members: list[LayerMember] = []
    lacking: list[str] = []
    for row in rows:
        path, kind, mode, uid, gid, size, mtime, linkname, index, offset, length = row
        member = LayerMember(
            path=str(path), type=FileType(str(kind)), mode=int(cast(int, mode)),
            uid=int(cast(int, uid)), gid=int(cast(int, gid)), size=int(cast(int, size)),
            mtime=int(cast(int, mtime)), linkname=str(linkname), index=int(cast(int, index)),
        )
        if member.type is FileType.FILE and keep(member.path):
            start = int(cast(int, offset))
            if start < 0:
                lacking.append(member.path)
            else:
                end = start + int(cast(int, length))
                member = replace(member, fileobj=io.BytesIO(contents[start:end]))
        members.append(member)
    return members, lacking


def _drain(stream: BinaryIO) -> None:
    while stream.read(_DRAIN_STEP):
        pass


class DirectoryFileSystem:
    """FileSystemView over an unpacked root filesystem directory, never leaving `root`.

    Symlinks are resolved by this class inside `root` rather than by the operating system, so
    an absolute symlink in the tree points into the tree, not at the host.
    """

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        if not self._root.is_dir():
            raise ImageError(f"root filesystem {root} is not a directory")

    def _host_path(self, path: str) -> Path:
        return self._root / path.lstrip("/")

    def _lookup(self, path: str) -> FileEntry | None:
        host = self._host_path(path)
        try:
            info = os.lstat(host)
        except (FileNotFoundError, NotADirectoryError):
            return None
        kind = _file_type(info.st_mode)
        linkname = os.readlink(host) if kind is FileType.SYMLINK else ""
        return FileEntry(
            path=path, type=kind, mode=stat.S_IMODE(info.st_mode), uid=info.st_uid,
            gid=info.st_gid, size=info.st_size if kind is FileType.FILE else 0,
            mtime=int(info.st_mtime), linkname=linkname,
        )

    def lstat(self, path: str) -> FileEntry | None:
        path = normalise_path(path)
        if path == "/":
            return self._lookup("/")
        parent, name = posixpath.split(path)
        try:
            resolved_parent = resolve_path(parent, self._lookup)
        except ImageError:
            return None
        return self._lookup(posixpath.join(resolved_parent, name))

    def resolve(self, path: str) -> str:
        return resolve_path(path, self._lookup)

    def read(self, path: str) -> bytes | None:
        try:
            resolved = self.resolve(path)
        except ImageError:
            return None
        entry = self._lookup(resolved)
        if entry is None or entry.type is not FileType.FILE:
            return None
        descriptor = os.open(self._host_path(resolved), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(descriptor, "rb") as handle:
            return handle.read()

    def listdir(self, path: str) -> list[str]:
        try:
            resolved = self.resolve(path)
        except ImageError:
            return []
        entry = self._lookup(resolved)
        if entry is None or entry.type is not FileType.DIRECTORY:
            return []
        return sorted(os.listdir(self._host_path(resolved)))

    def paths(self) -> list[str]:
        found: list[str] = []
        for directory, subdirectories, files in os.walk(self._root):
            relative = os.path.relpath(directory, self._root)
            prefix = "/" if relative == "." else "/" + relative + "/"
            found.extend(prefix + name for name in subdirectories + files)
        return sorted(found)


def _file_type(mode: int) -> FileType:
    if stat.S_ISDIR(mode):
        return FileType.DIRECTORY
    if stat.S_ISLNK(mode):
        return FileType.SYMLINK
    if stat.S_ISCHR(mode):
        return FileType.CHAR
    if stat.S_ISBLK(mode):
        return FileType.BLOCK
    if stat.S_ISFIFO(mode):
        return FileType.FIFO
    return FileType.FILE
