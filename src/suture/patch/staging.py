"""The staging tree: the content of the future patch layer, before it becomes a tar.

A `Staging` records what the patch layer adds, replaces and deletes on top of the image: regular
files, directories, symlinks, hardlinks and whiteouts (deletions of lower-layer paths, written as
`.wh.<name>` entries by the OCI image-spec layer.md rules). Metadata is kept in memory and file
contents are copied into files under `workdir`, so a large package never sits in memory whole.

Paths are normalised absolute POSIX paths (`/usr/bin/perl`). A path with a `..` component, a NUL
byte or a component starting with `.wh.` (reserved for whiteouts) raises UnsafePathError, because
it would escape the root or change meaning once the layer is applied.

Rules for overlapping entries, chosen so the layer reads the same in every OCI runtime:
- adding an entry at a whited-out path cancels the whiteout. A directory added there becomes an
  opaque directory, so the deleted lower contents stay deleted.
- adding an entry below a whited-out path turns that whiteout into an opaque directory.
- a whiteout or `remove` of a path also drops every staged entry below it.
- a non-directory replacing a staged directory drops the staged entries below it.
"""

from __future__ import annotations

import itertools
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, cast

from suture.errors import DigestMismatchError, ImageError, UnsafePathError
from suture.image.fsview import FileType
from suture.image.layers import LayerMember, LayerReader

logger = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"

# Mode, owner and group of directories staging has to create itself (inside a whited-out path).
_DEFAULT_DIRECTORY_MODE = 0o755
_CHUNK = 1 << 20


def normalize_path(path: str) -> str:
    """Return `path` as a normalised absolute POSIX path, or raise UnsafePathError.

    `usr/bin/x`, `./usr/bin/x` and `/usr//bin/x/` all give `/usr/bin/x`. The root itself, `..`
    components, NUL bytes and `.wh.` names are rejected.
    """
    if "\x00" in path:
        raise UnsafePathError(f"path {path!r} contains a NUL byte")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts:
        raise UnsafePathError(f"path {path!r} names the root directory, not an entry in it")
    for part in parts:
        if part == "..":
            raise UnsafePathError(f"path {path!r} contains '..' and could escape the root")
        if part.startswith(WHITEOUT_PREFIX):
            raise UnsafePathError(
                f"path {path!r} uses the reserved whiteout prefix {WHITEOUT_PREFIX!r}"
            )
    return "/" + "/".join(parts)


def _ancestors(path: str) -> list[str]:
    """Return the ancestors of `path` below the root, outermost first."""
    parts = path.split("/")[1:-1]
    return ["/" + "/".join(parts[: count + 1]) for count in range(len(parts))]


@dataclass(frozen=True)
class StagedEntry:
    """One entry of the staging tree.

    `type` is FILE, DIRECTORY, SYMLINK or HARDLINK. `mode` contains permission bits only. `mtime`
    None means a generated entry that gets the build's fixed timestamp. `linkname` is the symlink
    target as given, or for a hardlink the absolute staged path it links to. `content` is the file
    under the workdir holding a regular file's bytes. A whiteout entry (`whiteout` true) has type
    FILE and no content. `opaque` marks a directory that hides every lower-layer entry below it.
    """

    path: str
    type: FileType
    mode: int
    uid: int
    gid: int
    mtime: int | None
    size: int = 0
    linkname: str = ""
    content: Path | None = None
    whiteout: bool = False
    opaque: bool = False


class Staging:
    """The entries of the future patch layer, with file contents stored under `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self._content_dir = self.workdir / "content"
        self._content_dir.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, StagedEntry] = {}
        # Indexes that keep whiteouts and hardlink bookkeeping proportional to the paths
        # involved: the child paths of every path that has staged entries at or below it, and
        # the hardlinks that name each file.
        self._children: dict[str, set[str]] = {}
        self._links: dict[str, set[str]] = {}
        self._counter = itertools.count()

    # Adding entries

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
    ) -> StagedEntry:
        """Stage a regular file whose bytes come from exactly one of `data`, `source` or `stream`.

        The bytes are copied into the workdir at once, so the caller may change or delete
        `source` afterwards. `stream` is read to its end.
        """
        given = [value is not None for value in (data, source, stream)]
        if given.count(True) != 1:
            raise ValueError("add_file needs exactly one of data, source or stream")
        path = normalize_path(path)
        self._prepare_parents(path)

        content = self._content_dir / f"{next(self._counter):08d}"
        if data is not None:
            content.write_bytes(data)
        elif source is not None:
            shutil.copyfile(source, content)
        else:
            with content.open("wb") as target:
                shutil.copyfileobj(cast(BinaryIO, stream), target, _CHUNK)
        size = content.stat().st_size

        entry = StagedEntry(path, FileType.FILE, _permissions(mode), _owner(uid), _owner(gid),
                            mtime, size=size, content=content)
        self._put(entry)
        return entry

    def add_directory(
        self,
        path: str,
        mode: int = _DEFAULT_DIRECTORY_MODE,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
        *,
        opaque: bool = False,
    ) -> StagedEntry:
        """Stage a directory, keeping the staged entries already below it.

        With `opaque`, or when `path` was whited out, the directory hides every lower-layer entry
        below it.
        """
        path = normalize_path(path)
        self._prepare_parents(path)
        existing = self._entries.get(path)
        if existing is not None:
            opaque = opaque or existing.whiteout or existing.opaque
        entry = StagedEntry(path, FileType.DIRECTORY, _permissions(mode), _owner(uid),
                            _owner(gid), mtime, opaque=opaque)
        self._put(entry)
        return entry

    def add_symlink(
        self,
        path: str,
        target: str,
        uid: int = 0,
        gid: int = 0,
        mtime: int | None = None,
        mode: int = 0o777,
    ) -> StagedEntry:
        """Stage a symlink to `target`, stored as given (relative or absolute inside the image)."""
        if not target or "\x00" in target:
            raise UnsafePathError(f"symlink {path!r}: invalid target {target!r}")
        path = normalize_path(path)
        self._prepare_parents(path)
        entry = StagedEntry(path, FileType.SYMLINK, _permissions(mode), _owner(uid),
                            _owner(gid), mtime, linkname=target)
        self._put(entry)
        return entry

    def add_hardlink(self, path: str, target: str) -> StagedEntry:
        """Stage a hardlink at `path` to the staged regular file `target`.

        The link takes the target's metadata. A target that is itself a hardlink is followed, so
        every link names the file that carries the content.
        """
        path = normalize_path(path)
        target = normalize_path(target)
        file = self._hardlink_target(target)
        if file is None:
            raise ImageError(
                f"hardlink {path} -> {target}: the target is not a regular file in the staging "
                f"tree; stage the target file first"
            )
        if file.path == path:
            raise ImageError(f"hardlink {path} links to itself")
        self._prepare_parents(path)
        entry = StagedEntry(path, FileType.HARDLINK, file.mode, file.uid, file.gid, file.mtime,
                            size=0, linkname=file.path)
        self._put(entry)
        return entry

    def add_whiteout(self, path: str) -> None:
        """Record the deletion of the image's entry at `path` and drop staged entries below it."""
        path = normalize_path(path)
        if any(self._is_whiteout(ancestor) for ancestor in _ancestors(path)):
            return
        self._drop_tree(path)
        self._store(StagedEntry(path, FileType.FILE, 0, 0, 0, None, whiteout=True))

    def remove(self, path: str) -> None:
        """Drop the staged entry at `path` and every staged entry below it; the image is unchanged.

        A whiteout at `path` is dropped too, so the image's entry shows through again.
        """
        self._drop_tree(normalize_path(path))

    def load_layer(self, stream: BinaryIO, media_type: str, diff_id: str | None = None) -> None:
        """Seed the staging with the entries of a previous patch layer.

        Regular files, directories, symlinks, hardlinks, `.wh.` whiteouts and opaque markers
        become the same staged entries. Device nodes and FIFOs raise ImageError because suture
        never writes them. When `diff_id` is given, the uncompressed layer must match it.
        """
        what = f"previous patch layer ({media_type})"
        reader = LayerReader(stream, media_type, what=what)
        for member in reader:
            self._load_member(member, what)
        if diff_id is not None and reader.diff_id != diff_id:
            raise DigestMismatchError(
                f"{what}: uncompressed content has digest {reader.diff_id}, expected {diff_id}"
            )

    # Reading entries

    def lstat(self, path: str) -> StagedEntry | None:
        """Return the staged entry at `path` (a whiteout entry included), or None."""
        return self._entries.get(normalize_path(path))

    def entries(self) -> list[StagedEntry]:
        """Return every staged entry, sorted by path."""
        return [self._entries[path] for path in sorted(self._entries)]

    def hides(self, path: str) -> bool:
        """Return whether this layer deletes the image's lower-layer entry at `path`.

        True when `path` or an ancestor is a whiteout, or when `path` is not staged and lies
        below an opaque directory.
        """
        path = normalize_path(path)
        if self._is_whiteout(path):
            return True
        for ancestor in _ancestors(path):
            entry = self._entries.get(ancestor)
            if entry is not None and entry.whiteout:
                return True
            if entry is not None and entry.opaque and path not in self._entries:
                return True
        return False

    def open(self, path: str) -> BinaryIO:
        """Open the bytes of the staged regular file (or hardlink to one) at `path`."""
        normalized = normalize_path(path)
        file = self._hardlink_target(normalized)
        if file is None or file.content is None:
            raise ImageError(f"staging: {normalized} is not a staged regular file")
        return file.content.open("rb")

    def read(self, path: str) -> bytes:
        """Return the bytes of the staged regular file (or hardlink to one) at `path`."""
        with self.open(path) as handle:
            return handle.read()

    def listdir(self, path: str) -> list[str]:
        """Return the sorted names directly under `path` that have staged entries at or below.

        Whiteout entries are included. `path` may be `/`.
        """
        directory = "/" if path.strip("/") == "" else normalize_path(path)
        return sorted(child.rsplit("/", 1)[1] for child in self._children.get(directory, ()))

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and normalize_path(path) in self._entries

    # Internals

    def _is_whiteout(self, path: str) -> bool:
        entry = self._entries.get(path)
        return entry is not None and entry.whiteout

    def _hardlink_target(self, path: str) -> StagedEntry | None:
        entry = self._entries.get(path)
        if entry is not None and entry.type is FileType.HARDLINK:
            entry = self._entries.get(entry.linkname)
        if entry is None or entry.whiteout or entry.type is not FileType.FILE:
            return None
        return entry

    def _prepare_parents(self, path: str) -> None:
        # An entry below a whiteout needs the whiteout turned into an opaque directory: the
        # deleted lower contents stay hidden and the new entry gets a parent to live in.
        below_whiteout = False
        for ancestor in _ancestors(path):
            entry = self._entries.get(ancestor)
            if entry is not None and entry.whiteout:
                self._store(StagedEntry(ancestor, FileType.DIRECTORY, _DEFAULT_DIRECTORY_MODE,
                                        0, 0, None, opaque=True))
                below_whiteout = True
                continue
            if entry is None:
                if below_whiteout:
                    self._store(StagedEntry(ancestor, FileType.DIRECTORY,
                                            _DEFAULT_DIRECTORY_MODE, 0, 0, None))
                continue
            if entry.type is not FileType.DIRECTORY:
                raise ImageError(
                    f"staging: cannot add {path} because {ancestor} is a staged {entry.type}, "
                    f"not a directory"
                )

    def _put(self, entry: StagedEntry) -> None:
        existing = self._entries.get(entry.path)
        if existing is not None and existing.type is FileType.DIRECTORY:
            if entry.type is not FileType.DIRECTORY:
                self._drop_tree(entry.path)
        elif existing is not None:
            self._pop(entry.path)
            self._discard_content(existing)
        self._store(entry)

    def _store(self, entry: StagedEntry) -> None:
        """Set the entry at its path, keeping the child and hardlink indexes current."""
        self._pop(entry.path)
        self._entries[entry.path] = entry
        if entry.type is FileType.HARDLINK:
            self._links.setdefault(entry.linkname, set()).add(entry.path)
        path = entry.path
        while path != "/":
            parent = path.rsplit("/", 1)[0] or "/"
            siblings = self._children.setdefault(parent, set())
            if path in siblings:
                break
            siblings.add(path)
            path = parent

    def _pop(self, path: str) -> StagedEntry | None:
        """Remove and return the entry at `path`; the child index is cleaned by `_drop_tree`."""
        entry = self._entries.pop(path, None)
        if entry is not None and entry.type is FileType.HARDLINK:
            links = self._links.get(entry.linkname)
            if links is not None:
                links.discard(path)
                if not links:
                    del self._links[entry.linkname]
        return entry

    def _drop_tree(self, path: str) -> None:
        removed: list[StagedEntry] = []
        pending = [path]
        while pending:
            current = pending.pop()
            entry = self._pop(current)
            if entry is not None:
                removed.append(entry)
            pending.extend(self._children.pop(current, ()))

        # Prune index nodes left without staged entries, so listdir reports only live names.
        while path != "/":
            parent = path.rsplit("/", 1)[0] or "/"
            siblings = self._children.get(parent)
            if siblings is None:
                break
            siblings.discard(path)
            if siblings or parent in self._entries or parent == "/":
                break
            del self._children[parent]
            path = parent

        for entry in removed:
            self._discard_content(entry)

    def _discard_content(self, entry: StagedEntry) -> None:
        """Delete the content file of a removed entry unless hardlinks still name it.

        Hardlinks name the file's path, so a file that is still linked keeps its bytes: the
        first link becomes the file and the others link to it.
        """
        if entry.content is None:
            return
        links = sorted(self._links.pop(entry.path, ()))
        if not links:
            entry.content.unlink(missing_ok=True)
            return
        first, *rest = links
        self._store(replace(entry, path=first, type=FileType.FILE, linkname=""))
        for link in rest:
            self._store(replace(self._entries[link], linkname=first))

    def _load_member(self, member: LayerMember, what: str) -> None:
        directory, _, base = member.path.rpartition("/")
        if base == OPAQUE_MARKER:
            self._mark_opaque(directory or "/")
            return
        if base.startswith(WHITEOUT_PREFIX):
            self.add_whiteout(f"{directory}/{base[len(WHITEOUT_PREFIX):]}")
            return

        if member.type is FileType.FILE:
            if member.fileobj is None:
                raise ImageError(f"{what}: entry {member.path} has no content")
            self.add_file(member.path, stream=member.fileobj, mode=member.mode, uid=member.uid,
                          gid=member.gid, mtime=member.mtime)
        elif member.type is FileType.DIRECTORY:
            self.add_directory(member.path, member.mode, member.uid, member.gid, member.mtime)
        elif member.type is FileType.SYMLINK:
            self.add_symlink(member.path, member.linkname, member.uid, member.gid, member.mtime,
                             member.mode)
        elif member.type is FileType.HARDLINK:
            self.add_hardlink(member.path, member.linkname)
        else:
            raise ImageError(
                f"{what}: entry {member.path} has unsupported type {member.type}; suture layers "
                f"contain only files, directories, links and whiteouts"
            )

    def _mark_opaque(self, directory: str) -> None:
        path = normalize_path(directory)
        entry = self._entries.get(path)
        if entry is not None and entry.type is FileType.DIRECTORY:
            self._store(replace(entry, opaque=True))
        else:
            self.add_directory(path, opaque=True)


def _permissions(mode: int) -> int:
    return mode & 0o7777


def _owner(value: int) -> int:
    if value < 0:
        raise ValueError(f"invalid numeric owner {value}")
    return value
