"""The default apply engine for dpkg: unpack `.deb` payloads into a staging tree, run nothing.

It does what `dpkg --force-confold -i` does to the filesystem and the database (checked against
dpkg 1.21.22 with `dpkg --root`), without running maintainer scripts or triggers:
- payload entries keep their modes, numeric owners, symlinks and hardlinks;
- each path's parent directory is resolved through the image's symlinks and those staged
  earlier, so `/bin/x` lands at `/usr/bin/x` when `/bin -> usr/bin`. A symlink is never
  replaced by a directory, and existing directories keep their mode and owner, as in dpkg;
- diversions in `/var/lib/dpkg/diversions` move a path unless the package owns the diversion;
- conffiles follow dpkg's decision table (see `decide_conffile`);
- paths the old version listed and the new one does not are whited out unless another
  package lists them; directories only when they end up empty, and obsolete conffiles never.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from suture.ecosystems.base import PackageStatus, PlannedPackage
from suture.ecosystems.dpkg import cacerts, dbwrite, maintscripts
from suture.ecosystems.dpkg.database import DpkgDatabase, InstalledPackage, read_database
from suture.ecosystems.dpkg.dbwrite import PackageUpdate, write_database
from suture.ecosystems.dpkg.debfile import DataMember, DebFile
from suture.ecosystems.dpkg.dpkgconf import (
    PathFilter,
    divert,
    read_diversions,
    read_path_filters,
    should_skip,
)
from suture.ecosystems.dpkg.mergedview import MergedView, StagingTree
from suture.errors import PackageError
from suture.image.fsview import FileSystemView, FileType
from suture.image.merged import MergedFileSystem

__all__ = ["AppliedPackage", "ApplyResult", "ConffileAction", "MergedView", "StagingTree",
           "apply_updates", "decide_conffile"]

logger = logging.getLogger(__name__)

NEW_CONFFILE = dbwrite.NEW_CONFFILE


class ConffileAction(StrEnum):
    """The fate of one conffile on upgrade."""

    INSTALL = "install"
    KEEP = "keep"
    KEEP_AND_DIST = "keep-and-dist"


@dataclass(frozen=True)
class AppliedPackage:
    """One package the engine wrote: versions, the conffiles it kept and what it skipped."""

    name: str
    architecture: str
    old_version: str
    new_version: str
    status: PackageStatus
    files_written: int
    paths_removed: int
    conffiles_kept: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of `apply_updates`: per-package records and notes for the summary."""

    packages: tuple[AppliedPackage, ...]
    notes: tuple[str, ...] = ()


def decide_conffile(old_md5: str | None, current_md5: str | None, new_md5: str) -> ConffileAction:
    """Decide a conffile's fate as dpkg's configure step does with `--force-confold`.

    `old_md5` is the md5 the database records (None for a conffile the old version did not
    have), `current_md5` that of the image's file (None when absent), `new_md5` that of the new
    version's file. A file equal to the new one, or a new conffile with nothing in its way, is
    installed. A file the user did not change is replaced when the package changed it. A file
    the user changed or deleted is kept, and when the package changed it too the new version is
    written beside it as `<name>.dpkg-dist`, so a deleted conffile stays deleted.
    """
    if current_md5 == new_md5:
        return ConffileAction.KEEP
    if old_md5 is None or old_md5 == NEW_CONFFILE:
        return ConffileAction.INSTALL if current_md5 is None else ConffileAction.KEEP_AND_DIST
    user_edited = old_md5 != current_md5
    dist_edited = old_md5 != new_md5
    if not user_edited:
        return ConffileAction.INSTALL if dist_edited else ConffileAction.KEEP
    return ConffileAction.KEEP_AND_DIST if dist_edited else ConffileAction.KEEP


def apply_updates(
    fs: FileSystemView,
    database: DpkgDatabase,
    updates: Sequence[tuple[PlannedPackage, Path]],
    staging: StagingTree,
    *,
    payload_cache: Path | None = None,
) -> ApplyResult:
    """Unpack each `.deb` of `updates` into `staging` and rewrite the dpkg database there.

    `fs` is the image as it is, `database` its dpkg database. With `payload_cache`, decompressed
    payloads are kept there for later runs (see `DebFile`). Raises PackageError for an unsafe
    or malformed package, or one that is not the planned package and version. Nothing from the
    image or the packages is executed.
    """
    view = MergedView(fs, staging)
    if _stages_database(staging):
        # A staging seeded with an earlier patch layer already holds newer database files than
        # the image, so the installed versions and conffile md5s are read through it.
        database = read_database(view.as_filesystem())
    diversions = read_diversions(view)
    filters = read_path_filters(view)
    debs = [(planned, _open_planned(planned, path, payload_cache)) for planned, path in updates]
    _preload_contents(fs, database, [deb for _, deb in debs], diversions)
    works: list[PackageUpdate] = []
    written_paths: set[str] = set()

    # Every payload is unpacked first, so the removal pass sees every path the new versions own.
    for _, deb in debs:
        work = PackageUpdate(deb=deb, old=_find_installed(database, deb))
        _unpack_payload(view, staging, work, diversions, filters, written_paths)
        works.append(work)

    other_lists = _read_other_lists(view, database, works)
    owned_by_others = {line for lines in other_lists.values() for line in lines}
    for work in works:
        owned_by_others.update(work.list_paths)
    removed_counts = [
        _remove_old_paths(view, staging, work, owned_by_others, written_paths, diversions)
        for work in works
    ]

    write_database(view, staging, database, works)
    _release_taken_over_paths(view, staging, other_lists, works)

    notes: list[str] = []
    applied: list[AppliedPackage] = []
    for (planned, _), work, removed in zip(debs, works, removed_counts, strict=True):
        package_notes = maintscripts.describe_skipped_work(
            work.deb, work.old_paths, work.list_paths, fs
        )
        notes.extend(package_notes)
        applied.append(
            AppliedPackage(
                name=work.deb.name,
                architecture=work.deb.architecture,
                old_version=work.old.version if work.old is not None else planned.installed,
                new_version=work.deb.version,
                status=PackageStatus.UPDATED,
                files_written=work.files_written,
                paths_removed=removed,
                conffiles_kept=tuple(work.conffiles_kept),
                notes=tuple(package_notes),
            )
        )

    if any(work.deb.name == cacerts.PACKAGE for work in works):
        notes.extend(cacerts.regenerate(view, staging))
    return ApplyResult(packages=tuple(applied), notes=tuple(notes))


def _preload_contents(
    fs: FileSystemView,
    database: DpkgDatabase,
    debs: Sequence[DebFile],
    diversions: Mapping[str, tuple[str, str]],
) -> None:
    """Load the image files the engine compares, in one pass over each layer that contains them.

    These are the old and new conffiles of every package, at their own and their diverted
    paths, and the certificates when ca-certificates is updated. Read one by one, each would
    stream its whole layer again. A path missing here is still read on demand.
    """
    if not isinstance(fs, MergedFileSystem):
        return
    paths: set[str] = set()
    for deb in debs:
        conffiles = [path for path, _ in deb.conffile_entries()]
        old = _find_installed(database, deb)
        if old is not None:
            conffiles.extend(old.conffiles)
        for path in conffiles:
            paths.add(path)
            paths.add(divert(path, deb.name, diversions))
    if any(deb.name == cacerts.PACKAGE for deb in debs):
        paths.add(cacerts.CONF_PATH)
        directories = (cacerts.CERTS_DIR, cacerts.LOCAL_CERTS_DIR, cacerts.ETC_CERTS_DIR)
        paths.update(path for path in fs.paths() if path.startswith(
            tuple(directory + "/" for directory in directories)))
    fs.load_contents(sorted(paths))


def _stages_database(staging: StagingTree) -> bool:
    paths = (dbwrite.STATUS_PATH, dbwrite.STATUS_D_PATH)
    return any(staging.lstat(path) is not None or staging.listdir(path) for path in paths)


def _open_planned(planned: PlannedPackage, path: Path, payload_cache: Path | None) -> DebFile:
    deb = DebFile(path, payload_cache)
    if deb.name != planned.name:
        raise PackageError(
            f"{path}: contains package {deb.name}, but the plan expects {planned.name}; "
            "clear the package cache and run again"
        )
    if planned.target and deb.version != planned.target:
        raise PackageError(
            f"{path}: contains {deb.name} {deb.version}, but the plan expects version "
            f"{planned.target}; clear the package cache and run again"
        )
    if planned.architecture and deb.architecture not in (planned.architecture, "all"):
        raise PackageError(
            f"{path}: {deb.name} is built for {deb.architecture}, but the image needs "
            f"{planned.architecture}"
        )
    return deb


def _find_installed(database: DpkgDatabase, deb: DebFile) -> InstalledPackage | None:
    found = database.find(deb.name, deb.architecture)
    if found is None:
        # An `all` package may replace an architecture-specific one and the reverse.
        found = database.find(deb.name)
    return found


def _destination(view: MergedView, path: str, parents: dict[str, str] | None = None) -> str:
    """Return where `path` lands: its parent resolved through symlinks, its name kept.

    `parents` caches resolved parent directories. The caller clears it whenever an entry it
    stages can change how a path resolves.
    """
    directory, name = posixpath.split(path)
    parent = parents.get(directory) if parents is not None else None
    if parent is None:
        parent = view.resolve(directory)
        if parents is not None:
            parents[directory] = parent
    return posixpath.join(parent, name)


class _HashingReader:
    """Passes reads through to `stream` and keeps the md5 of what went by."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self.digest = hashlib.md5(usedforsecurity=False)

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.digest.update(data)
        return data


def _unpack_payload(
    view: MergedView,
    staging: StagingTree,
    work: PackageUpdate,
    diversions: Mapping[str, tuple[str, str]],
    filters: Sequence[PathFilter],
    written_paths: set[str],
) -> None:
    deb = work.deb
    conffiles = set(deb.conffiles())
    old_conffiles = dict(work.old.conffiles) if work.old is not None else {}
    final_paths: dict[str, str] = {}
    kept_data: dict[str, bytes] = {}
    # Resolved parent directories, by path. Only staging a symlink, or a file over one, changes
    # how a path resolves (a symlink is never replaced by a directory), so both clear this memo.
    parents: dict[str, str] = {}

    for member, fileobj in deb.iter_data():
        if member.path == "/":
            work.list_paths.append("/.")
            continue
        work.list_paths.append(member.path)
        if member.type is not FileType.DIRECTORY:
            work.file_paths.add(member.path)
        if should_skip(filters, member.path, member.type):
            # dpkg lists a filtered path as owned but writes nothing there.
            continue
        destination = _destination(view, divert(member.path, deb.name, diversions), parents)
        existing = view.lstat(destination)
        if existing is not None and existing.type is FileType.SYMLINK:
            parents.clear()

        if member.type is FileType.DIRECTORY:
            resolved = view.resolve(destination)
            target = view.lstat(resolved)
            if target is None:
                staging.add_directory(resolved, member.mode, member.uid, member.gid, member.mtime)
                written_paths.add(resolved)
                work.files_written += 1
            elif target.type is not FileType.DIRECTORY:
                raise PackageError(
                    f"{deb.path}: directory {member.path} would replace the image's "
                    f"{target.type} at {resolved}; dpkg would fail here too"
                )
            final_paths[member.path] = resolved
            continue

        if existing is not None and existing.type is FileType.DIRECTORY:
            raise PackageError(
                f"{deb.path}: {member.type} {member.path} would replace the image's directory "
                f"{destination}; dpkg would fail here too"
            )
        final_paths[member.path] = destination

        if member.type is FileType.SYMLINK:
            parents.clear()
            staging.add_symlink(destination, member.linkname, member.uid, member.gid,
                                member.mtime, member.mode or 0o777)
        elif member.type is FileType.HARDLINK:
            _add_hardlink(staging, deb, member, final_paths, kept_data, destination)
            work.md5_entries.append((member.path, _hardlink_md5(work, member.linkname)))
        elif fileobj is None:
            raise PackageError(f"{deb.path}: regular file {member.path} has no content")
        elif member.path in conffiles:
            data = fileobj.read()
            md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            work.conffile_md5s[member.path] = md5
            work.md5_entries.append((member.path, md5))
            written = _place_conffile(view, staging, work, member, data, md5, destination,
                                      old_conffiles.get(member.path))
            if written is None:
                kept_data[member.path] = data
                continue
            final_paths[member.path] = written
            destination = written
        else:
            reader = _HashingReader(fileobj)
            staging.add_file(destination, stream=reader,  # type: ignore[arg-type]
                             mode=member.mode, uid=member.uid, gid=member.gid,
                             mtime=member.mtime)
            work.md5_entries.append((member.path, reader.digest.hexdigest()))
        written_paths.add(destination)
        work.files_written += 1

    _remove_retired_conffiles(view, staging, work, diversions)


def _remove_retired_conffiles(
    view: MergedView,
    staging: StagingTree,
    work: PackageUpdate,
    diversions: Mapping[str, tuple[str, str]],
) -> None:
    """Delete the `remove-on-upgrade` conffiles, keeping a user-changed one as `.dpkg-old`.

    This is what dpkg 1.21 does on upgrade: an unchanged file is removed, a changed one is
    renamed to `<name>.dpkg-old`.
    """
    old_md5s = dict(work.old.conffiles) if work.old is not None else {}
    for path, remove in work.deb.conffile_entries():
        if not remove:
            continue
        destination = view.resolve(_destination(view, divert(path, work.deb.name, diversions)))
        node = view.lstat(destination)
        current = view.read(destination)
        if node is None or current is None:
            continue
        if hashlib.md5(current, usedforsecurity=False).hexdigest() != old_md5s.get(path):
            staging.add_file(destination + ".dpkg-old", data=current, mode=node.mode,
                             uid=node.uid, gid=node.gid, mtime=node.mtime)
        staging.add_whiteout(destination)


def _hardlink_md5(work: PackageUpdate, target: str) -> str:
    for path, md5 in work.md5_entries:
        if path == target:
            return md5
    return ""


def _add_hardlink(
    staging: StagingTree,
    deb: DebFile,
    member: DataMember,
    final_paths: Mapping[str, str],
    kept_data: Mapping[str, bytes],
    destination: str,
) -> None:
    target = final_paths.get(member.linkname)
    staged = staging.lstat(target) if target is not None else None
    if target is not None and staged is not None and not staged.whiteout:
        staging.add_hardlink(destination, target)
        return
    data = kept_data.get(member.linkname)
    if data is None:
        raise PackageError(
            f"{deb.path}: hardlink {member.path} points to {member.linkname}, which was not "
            "written; the package is invalid"
        )
    # The target is a conffile the user changed and that stays as is, so the link gets its own
    # copy of the package's bytes rather than a link into a lower layer.
    staging.add_file(destination, data=data, mode=member.mode, uid=member.uid, gid=member.gid,
                     mtime=member.mtime)


def _place_conffile(
    view: MergedView,
    staging: StagingTree,
    work: PackageUpdate,
    member: DataMember,
    data: bytes,
    new_md5: str,
    destination: str,
    old_md5: str | None,
) -> str | None:
    """Write a conffile or its `.dpkg-dist`; return the path of the conffile if it was written.

    Like dpkg's conffile handling, a symlink at the conffile's path is followed: the file it
    points to is compared and replaced, and the symlink stays.
    """
    real_path = view.resolve(destination)
    current = view.read(real_path)
    current_md5 = None if current is None else hashlib.md5(
        current, usedforsecurity=False).hexdigest()
    action = decide_conffile(old_md5, current_md5, new_md5)
    if action is ConffileAction.INSTALL:
        staging.add_file(real_path, data=data, mode=member.mode, uid=member.uid,
                         gid=member.gid, mtime=member.mtime)
        return real_path
    if action is ConffileAction.KEEP_AND_DIST:
        work.conffiles_kept.append(member.path)
        staging.add_file(real_path + ".dpkg-dist", data=data, mode=member.mode, uid=member.uid,
                         gid=member.gid, mtime=member.mtime)
        logger.info("%s: kept the modified %s, new version written to %s.dpkg-dist",
                    work.deb.label, member.path, real_path)
    return None


def _read_old_paths(view: MergedView, work: PackageUpdate) -> list[str] | None:
    """Return the paths the installed version owns, from its `.list` or distroless md5sums."""
    old = work.old
    if old is None:
        return None
    candidates = [
        dbwrite.info_name(old.name, old.architecture, old.multi_arch),
        old.name,
        f"{old.name}:{old.architecture}",
    ]
    for stem in candidates:
        data = view.read(f"{dbwrite.INFO_DIR}/{stem}.list")
        if data is not None:
            return [line for line in data.decode("utf-8", errors="replace").splitlines() if line]
    if old.file.startswith(dbwrite.STATUS_D_PATH + "/"):
        data = view.read(old.file + ".md5sums")
        if data is not None:
            return ["/" + line.split(None, 1)[1].strip()
                    for line in data.decode("utf-8", errors="replace").splitlines()
                    if len(line.split(None, 1)) == 2]
    return None


def _read_other_lists(
    view: MergedView, database: DpkgDatabase, works: Sequence[PackageUpdate]
) -> dict[str, list[str]]:
    """Return `.list` path -> lines for every installed package that is not being updated."""
    updated = {id(work.old) for work in works if work.old is not None}
    lists: dict[str, list[str]] = {}
    for package in database.packages:
        if id(package) in updated:
            continue
        stems = [dbwrite.info_name(package.name, package.architecture, package.multi_arch),
                 package.name, f"{package.name}:{package.architecture}"]
        for stem in dict.fromkeys(stems):
            list_path = f"{dbwrite.INFO_DIR}/{stem}.list"
            data = view.read(list_path)
            if data is not None:
                lists[list_path] = data.decode("utf-8", errors="replace").splitlines()
                break
    return lists


def _release_taken_over_paths(
    view: MergedView,
    staging: StagingTree,
    other_lists: Mapping[str, list[str]],
    works: Sequence[PackageUpdate],
) -> None:
    """Drop the files an updated package took over from other packages' `.list` files.

    dpkg 1.21 does this when a package replaces files of another ("Replacing files in old
    package"); that package's `.md5sums` stays as it is.
    """
    taken = {path for work in works for path in work.file_paths}
    for list_path, lines in other_lists.items():
        kept = [line for line in lines if line not in taken]
        if len(kept) == len(lines):
            continue
        # NOTE: dpkg forgets a package whose every file was taken over; such a package stays
        # recorded here, with the files it has left.
        node = view.lstat(list_path)
        mode, uid, gid = (node.mode, node.uid, node.gid) if node else (0o644, 0, 0)
        staging.add_file(list_path, data=dbwrite.render_list(kept), mode=mode, uid=uid,
                         gid=gid, mtime=None)


def _remove_old_paths(
    view: MergedView,
    staging: StagingTree,
    work: PackageUpdate,
    owned: set[str],
    written_paths: set[str],
    diversions: Mapping[str, tuple[str, str]],
) -> int:
    """Whiteout what the old version owned and nothing owns now; return how many paths."""
    old_paths = _read_old_paths(view, work)
    work.old_paths = old_paths or []
    if not old_paths:
        return 0
    keep = set(work.list_paths) | set(work.conffile_md5s)
    if work.old is not None:
        keep.update(work.old.conffiles)
    removed = 0
    directories: list[str] = []
    for path in old_paths:
        if path in ("/.", "/") or path in keep or path in owned:
            continue
        destination = _destination(view, divert(path, work.deb.name, diversions))
        if destination in owned or destination in written_paths:
            continue
        node = view.lstat(destination)
        if node is None:
            continue
        if node.type is FileType.DIRECTORY:
            directories.append(destination)
            continue
        staging.add_whiteout(destination)
        removed += 1

    # dpkg removes a directory it no longer lists only when it is empty; deepest first, so a
    # parent emptied by its children goes too.
    for directory in sorted(set(directories), key=lambda p: p.count("/"), reverse=True):
        if not view.listdir(directory):
            staging.add_whiteout(directory)
            removed += 1
    return removed

