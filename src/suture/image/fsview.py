"""The read-only view of an image's merged root filesystem that the ecosystems and engines use.

Paths are absolute POSIX paths inside the image (`/etc/os-release`), already normalised: no `.`
or `..` components, no trailing slash. The view never follows a symlink out of the image root.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class FileType(StrEnum):
    """Kind of filesystem entry, as recorded in a tar header."""

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


@dataclass(frozen=True)
class FileEntry:
    """Metadata of one path in the merged view, from the top-most layer that has it.

    `mode` contains permission bits only (including setuid, setgid and sticky). `linkname` is the
    symlink target as stored, or for a hardlink the absolute path it links to. `layer` is the
    0-based index of the layer the entry came from.
    """

    path: str
    type: FileType
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    linkname: str = ""
    layer: int = 0


class FileSystemView(Protocol):
    """Read access to a merged root filesystem."""

    def lstat(self, path: str) -> FileEntry | None:
        """Return the entry at `path` without following a final symlink, or None if absent."""
        ...

    def read(self, path: str) -> bytes | None:
        """Return the contents of the regular file at `path` (following symlinks and hardlinks
        inside the image), or None if there is no regular file there."""
        ...

    def listdir(self, path: str) -> list[str]:
        """Return the sorted names directly under the directory `path` ([] if not a directory)."""
        ...

    def resolve(self, path: str) -> str:
        """Return `path` with every symlink in it resolved inside the image root.

        A final component that does not exist is kept as is; `..` never climbs above `/`.
        """
        ...

    def paths(self) -> list[str]:
        """Return every path in the view, sorted."""
        ...
