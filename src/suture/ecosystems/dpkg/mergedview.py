"""The image as the patch layer will leave it: staged entries over the image's merged view.

The unpack engine, the database writer and the CA regeneration all read through this view. A
path staged earlier in the same run (a symlink, a whiteout, a rewritten file) therefore counts
exactly as it will once the layer is applied.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from suture.errors import EcosystemError
from suture.image.fsview import FileEntry, FileSystemView, FileType
from suture.patch.staging import StagedEntry

_MAX_SYMLINK_HOPS = 40


class StagingTree(Protocol):
    """The parts of `suture.patch.staging.Staging` the engine uses."""

    def add_file(
        self,
        path: str,
        *,
        data: bytes | None = None,
        source: Path | None = None,
        stream: BinaryIO | None = None,
        mode: int = 0o644,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
    ) -> StagedEntry: ...

    def add_directory(
        self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, mtime: int | None = None
    ) -> StagedEntry: ...

    def add_symlink(
        self, path: str, target: str, uid: int = 0, gid: int = 0, mtime: int | None = None,
        mode: int = 0o777,
    ) -> StagedEntry: ...

    def add_hardlink(self, path: str, target: str) -> StagedEntry: ...

    def add_whiteout(self, path: str) -> None: ...

    def lstat(self, path: str) -> StagedEntry | None: ...

    def hides(self, path: str) -> bool: ...

    def read(self, path: str) -> bytes: ...

    def listdir(self, path: str) -> list[str]: ...

    def entries(self) -> list[StagedEntry]: ...


@dataclass(frozen=True)
class Node:
    """An entry of the merged view: its type, symlink target, ownership and mtime.

    `mtime` is None for a staged entry that gets the layer build's fixed time.
    """

    type: FileType
    linkname: str = ""
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int | None = None


class MergedView:
    """The image as the patch layer will leave it: staged entries over the image's view."""

    def __init__(self, fs: FileSystemView, staging: StagingTree) -> None:
        self.fs = fs
        self.staging = staging

    def lstat(self, path: str) -> Node | None:
        if path == "/":
            return Node(FileType.DIRECTORY)
        staged = self.staging.lstat(path)
        if staged is not None:
            if staged.whiteout:
                return None
            return Node(staged.type, staged.linkname, staged.mode, staged.uid, staged.gid,
                        staged.mtime)
        if self.staging.hides(path):
            return None
        entry = self.fs.lstat(path)
        if entry is None:
            return None
        return Node(entry.type, entry.linkname, entry.mode, entry.uid, entry.gid, entry.mtime)

    def resolve(self, path: str, *, follow_final: bool = True) -> str:
        """Resolve symlinks in `path` as a chroot would; `..` never climbs above `/`."""
        pending = [part for part in path.split("/") if part]
        pending.reverse()
        result = "/"
        hops = 0
        while pending:
            name = pending.pop()
            if name == ".":
                continue
            if name == "..":
                result = posixpath.dirname(result)
                continue
            candidate = posixpath.join(result, name)
            node = self.lstat(candidate)
            if node is not None and node.type is FileType.SYMLINK and (pending or follow_final):
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise EcosystemError(
                        f"too many levels of symlinks resolving {path} in the image"
                    )
                if node.linkname.startswith("/"):
                    result = "/"
                pending.extend(reversed([p for p in node.linkname.split("/") if p]))
                continue
            result = candidate
        return result

    def read(self, path: str) -> bytes | None:
        resolved = self.resolve(path)
        staged = self.staging.lstat(resolved)
        if staged is not None:
            if staged.whiteout or staged.type not in (FileType.FILE, FileType.HARDLINK):
                return None
            return self.staging.read(resolved)
        if self.staging.hides(resolved):
            return None
        return self.fs.read(resolved)

    def listdir(self, path: str) -> list[str]:
        names: set[str] = set()
        staged = self.staging.lstat(path)
        if not (staged is not None and staged.opaque) and not self.staging.hides(path):
            names.update(self.fs.listdir(path))
        names.update(self.staging.listdir(path))
        prefix = "/" if path == "/" else path + "/"
        return sorted(name for name in names if self.lstat(prefix + name) is not None)

    def as_filesystem(self) -> FileSystemView:
        """Return this view as a `FileSystemView`, for readers such as `read_database`."""
        return _ViewFileSystem(self)


class _ViewFileSystem:
    """A `FileSystemView` over a MergedView; staged entries without an mtime report 0."""

    def __init__(self, view: MergedView) -> None:
        self._view = view

    def lstat(self, path: str) -> FileEntry | None:
        node = self._view.lstat(path)
        if node is None:
            return None
        return FileEntry(path, node.type, node.mode, node.uid, node.gid, 0, node.mtime or 0,
                         node.linkname)

    def read(self, path: str) -> bytes | None:
        return self._view.read(path)

    def listdir(self, path: str) -> list[str]:
        return self._view.listdir(path)

    def resolve(self, path: str) -> str:
        return self._view.resolve(path)

    def paths(self) -> list[str]:
        staged = [entry.path for entry in self._view.staging.entries() if not entry.whiteout]
        merged = set(staged)
        merged.update(path for path in self._view.fs.paths() if self._view.lstat(path) is not None)
        return sorted(merged)
