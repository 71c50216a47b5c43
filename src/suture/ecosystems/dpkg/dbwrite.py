"""Write the dpkg database the way dpkg itself leaves it after installing a package.

Checked against dpkg 1.21.22 (Debian bookworm) by installing packages with `dpkg --root` and
comparing the files it wrote:
- a `status` stanza lists the known fields in dpkg's own order (`fieldinfos` in dpkg's
  lib/dpkg/parse.c), then every other control field in the order of the control file;
- `Essential` and `Protected` are written only when they are `yes`;
- `Conffiles` lists the package's conffiles in control order with the md5 of the file the new
  version ships, then the conffiles earlier versions had and this one dropped, marked `obsolete`;
- `info/<pkg>.list` contains every payload path in archive order, `/.` for the root, then the
  obsolete conffiles;
- info files are named `<pkg>:<arch>` only for `Multi-Arch: same` packages.
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from suture.ecosystems.dpkg.database import DatabaseForm, DpkgDatabase, InstalledPackage
from suture.ecosystems.dpkg.debfile import DebFile
from suture.errors import EcosystemError
from suture.image.fsview import FileType

if TYPE_CHECKING:
    from suture.ecosystems.dpkg.mergedview import MergedView, StagingTree

logger = logging.getLogger(__name__)

STATUS_PATH = "/var/lib/dpkg/status"
STATUS_D_PATH = "/var/lib/dpkg/status.d"
INFO_DIR = "/var/lib/dpkg/info"
INSTALLED_STATUS = "install ok installed"
NEW_CONFFILE = "newconffile"

# dpkg's fieldinfos order; fields not listed follow Triggers-Awaited in control-file order.
_FIELD_ORDER = (
    "Package",
    "Essential",
    "Protected",
    "Status",
    "Priority",
    "Section",
    "Installed-Size",
    "Origin",
    "Maintainer",
    "Bugs",
    "Architecture",
    "Multi-Arch",
    "Source",
    "Version",
    "Config-Version",
    "Replaces",
    "Provides",
    "Depends",
    "Pre-Depends",
    "Recommends",
    "Suggests",
    "Breaks",
    "Conflicts",
    "Enhances",
    "Conffiles",
    "Filename",
    "Size",
    "MD5sum",
    "MSDOS-Filename",
    "Description",
    "Triggers-Pending",
    "Triggers-Awaited",
)
_FIELD_RANK = {name.lower(): rank for rank, name in enumerate(_FIELD_ORDER)}
_BOOLEAN_FIELDS = frozenset({"essential", "protected"})
_DEPENDENCY_FIELDS = frozenset(
    {"replaces", "provides", "depends", "pre-depends", "recommends", "suggests", "breaks",
     "conflicts", "enhances"}
)
# Fields the control file of a .deb may carry that make no sense in the status database.
_DROPPED_FIELDS = frozenset({"status", "conffiles", "config-version", "triggers-pending",
                             "triggers-awaited", "filename", "size", "md5sum", "msdos-filename"})
_FIELD_RE = re.compile(r"^([^\s:][^:]*):(.*)$")


@dataclass(frozen=True)
class ConffileRecord:
    """One line of the `Conffiles` field: a path, its md5 and the flags dpkg appends.

    `md5` is `newconffile` for a conffile dpkg has not installed yet, which is how it records
    the `remove-on-upgrade` conffiles a package lists but does not ship.
    """

    path: str
    md5: str
    obsolete: bool = False
    remove_on_upgrade: bool = False


def parse_fields(text: str) -> list[tuple[str, str]]:
    """Split one deb822 stanza into (name, value) pairs, keeping continuation lines verbatim.

    Values are trimmed as dpkg trims them: no space after the colon, none at the very end.
    Raises EcosystemError for a line that is neither a field nor a continuation.
    """
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if not fields:
                raise EcosystemError(f"control text starts with a continuation line: {line!r}")
            name, value = fields[-1]
            fields[-1] = (name, f"{value}\n{line}")
            continue
        match = _FIELD_RE.match(line)
        if match is None:
            raise EcosystemError(f"invalid control line {line!r}; expected 'Field: value'")
        fields.append((match[1].strip(), match[2].lstrip()))
    # Like dpkg, trim trailing whitespace of the whole value only: the first line of a
    # multi-line Description keeps its trailing space.
    return [(name, value.rstrip()) for name, value in fields]


def build_status_stanza(
    control_text: str,
    conffiles: Sequence[ConffileRecord],
    status: str = INSTALLED_STATUS,
) -> str:
    """Return the `status` stanza dpkg writes for an installed package, ending in one newline."""
    fields: list[tuple[str, str]] = []
    for name, value in parse_fields(control_text):
        key = name.lower()
        if key in _DROPPED_FIELDS:
            continue
        if key in _BOOLEAN_FIELDS:
            if value.lower() != "yes":
                continue
            value = "yes"
        if key in _DEPENDENCY_FIELDS and "\n" in value:
            # dpkg re-serialises relationship fields on one line.
            value = " ".join(value.split())
        fields.append((name, value))
    fields.append(("Status", status))
    if conffiles:
        lines = [
            f" {c.path} {c.md5}"
            + (" obsolete" if c.obsolete else "")
            + (" remove-on-upgrade" if c.remove_on_upgrade else "")
            for c in conffiles
        ]
        fields.append(("Conffiles", "\n" + "\n".join(lines)))

    unknown_rank = len(_FIELD_ORDER)
    ordered = sorted(
        enumerate(fields), key=lambda item: (_FIELD_RANK.get(item[1][0].lower(), unknown_rank),
                                             item[0])
    )
    lines = []
    for _, (name, value) in ordered:
        lines.append(f"{name}:{value}" if value.startswith("\n") else f"{name}: {value}")
    return "\n".join(lines) + "\n"


def replace_stanzas(
    text: str,
    replacements: Mapping[tuple[str, str], str],
    additions: Sequence[str] = (),
) -> str:
    """Return `text` (a status file) with stanzas replaced and new ones inserted.

    `replacements` maps (package, architecture) to the new stanza text. Every other stanza and
    every separator stays byte for byte. `additions` are inserted before the first stanza whose
    package name sorts after theirs, the order dpkg keeps. Raises EcosystemError when a
    replacement names a package the file does not contain.
    """
    spans = _stanza_spans(text)
    pieces: list[str] = []
    position = 0
    found: set[tuple[str, str]] = set()
    pending = sorted(additions, key=_stanza_sort_key)
    for start, end in spans:
        stanza = text[start:end]
        key = _stanza_key(stanza)
        while pending and _stanza_sort_key(pending[0]) < (key[0], key[1]):
            pieces.append(text[position:start])
            pieces.append(_terminated(pending.pop(0)) + "\n")
            position = start
        pieces.append(text[position:start])
        replacement = replacements.get(key)
        if replacement is None:
            pieces.append(stanza)
        else:
            found.add(key)
            pieces.append(_terminated(replacement))
        position = end
    tail = text[position:]
    if pending:
        if text and not text.endswith("\n\n"):
            tail += "\n" if text.endswith("\n") else "\n\n"
        tail += "\n".join(_terminated(stanza) for stanza in pending) + "\n"
    pieces.append(tail)

    missing = set(replacements) - found
    if missing:
        names = ", ".join(f"{name}:{arch}" for name, arch in sorted(missing))
        raise EcosystemError(
            f"{STATUS_PATH}: no stanza for {names}; the database changed while patching"
        )
    return "".join(pieces)


def info_name(package: str, architecture: str, multi_arch: str) -> str:
    """Return the info file stem dpkg uses: `<pkg>:<arch>` for Multi-Arch: same, else `<pkg>`."""
    if multi_arch.strip().lower() == "same":
        return f"{package}:{architecture}"
    return package


def render_list(paths: Sequence[str]) -> bytes:
    """Return the `.list` file content for `paths` (already in dpkg's order)."""
    return "".join(f"{path}\n" for path in paths).encode()


def render_md5sums(entries: Sequence[tuple[str, str]]) -> bytes:
    """Return an md5sums file (`<md5>  <path without leading slash>`) for (path, md5) pairs."""
    return "".join(f"{md5}  {path.lstrip('/')}\n" for path, md5 in entries).encode()


def _terminated(stanza: str) -> str:
    return stanza if stanza.endswith("\n") else stanza + "\n"


def _stanza_spans(text: str) -> list[tuple[int, int]]:
    # Each span covers a stanza's lines including its last newline; separators stay outside.
    spans: list[tuple[int, int]] = []
    start: int | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        if line.strip():
            if start is None:
                start = offset
        elif start is not None:
            spans.append((start, offset))
            start = None
        offset += len(line)
    if start is not None:
        spans.append((start, offset))
    return spans


def _stanza_key(stanza: str) -> tuple[str, str]:
    fields = dict((name.lower(), value) for name, value in parse_fields(stanza))
    return (fields.get("package", ""), fields.get("architecture", ""))


def _stanza_sort_key(stanza: str) -> tuple[str, str]:
    return _stanza_key(stanza)



_SCRIPT_MODE = 0o755
_DATA_MODE = 0o644


@dataclass
class PackageUpdate:
    """The result of unpacking one package, as the database writer needs it.

    `list_paths` are the payload paths in archive order (`/.` for the root), `file_paths` those
    that are not directories. `md5_entries` are
    (path, md5) for regular files and hardlinks in archive order. `conffile_md5s` maps each
    conffile in control order to the md5 of the file the new version ships. `old_paths` are
    the paths the installed version owned.
    """

    deb: DebFile
    old: InstalledPackage | None
    list_paths: list[str] = field(default_factory=list)
    file_paths: set[str] = field(default_factory=set)
    md5_entries: list[tuple[str, str]] = field(default_factory=list)
    conffile_md5s: dict[str, str] = field(default_factory=dict)
    conffiles_kept: list[str] = field(default_factory=list)
    old_paths: list[str] = field(default_factory=list)
    files_written: int = 0

    def conffile_records(self) -> list[ConffileRecord]:
        """Return the `Conffiles` records dpkg 1.21 writes for this upgrade.

        Shipped conffiles carry the new file's md5. A `remove-on-upgrade` conffile keeps the
        md5 the old version recorded (`newconffile` if none). Conffiles of the old version that
        the new one does not mention follow, marked obsolete.
        """
        old_md5s = dict(self.old.conffiles) if self.old is not None else {}
        records: list[ConffileRecord] = []
        for path, remove in self.deb.conffile_entries():
            if remove:
                records.append(ConffileRecord(path, old_md5s.get(path, NEW_CONFFILE),
                                              remove_on_upgrade=True))
            else:
                records.append(ConffileRecord(path, self.conffile_md5s.get(path, NEW_CONFFILE)))
        mentioned = {record.path for record in records}
        for path, md5 in old_md5s.items():
            if path not in mentioned:
                records.append(ConffileRecord(path, md5, obsolete=True))
        return records

    def md5sums(self) -> bytes:
        """Return the `.md5sums` content: the package's own file, or one made like dpkg's."""
        shipped = self.deb.control_files.get("md5sums")
        if shipped is not None:
            return shipped
        return render_md5sums([(path, md5) for path, md5 in self.md5_entries if md5])


def write_database(
    view: MergedView,
    staging: StagingTree,
    database: DpkgDatabase,
    updates: Sequence[PackageUpdate],
) -> None:
    """Stage the database files dpkg would leave after installing `updates`.

    A full `status` file gets only the changed stanzas replaced. A distroless `status.d` entry
    is rewritten under its own name, with its `.md5sums` companion when it has one. The
    `info/` files are rewritten only where the image keeps that directory.
    """
    status_replacements: dict[tuple[str, str], str] = {}
    status_additions: list[str] = []
    has_info = _is_directory(view, INFO_DIR)

    for update in updates:
        deb = update.deb
        old = update.old
        records = update.conffile_records()
        if old is not None and old.file.startswith(STATUS_D_PATH + "/"):
            _write_status_d_entry(view, staging, update, old.file, records)
        elif old is not None:
            status_replacements[(old.name, old.architecture)] = build_status_stanza(
                deb.control_text, records)
        elif database.form is DatabaseForm.STATUS_D:
            _write_status_d_entry(view, staging, update, f"{STATUS_D_PATH}/{deb.name}", records)
        else:
            status_additions.append(build_status_stanza(deb.control_text, records))
        if has_info:
            _write_info_files(view, staging, update, records)

    if status_replacements or status_additions:
        current = view.read(STATUS_PATH)
        text = current.decode("utf-8") if current is not None else ""
        new_text = replace_stanzas(text, status_replacements, status_additions)
        _stage_generated(view, staging, STATUS_PATH, new_text.encode(), _DATA_MODE)


def _write_status_d_entry(
    view: MergedView,
    staging: StagingTree,
    update: PackageUpdate,
    path: str,
    records: Sequence[ConffileRecord],
) -> None:
    # Image builders such as distroless copy the control file as is. An entry with a Status
    # field follows dpkg's format, so it is rewritten in that format.
    old_raw = update.old.raw if update.old is not None else ""
    if any(name.lower() == "status" for name, _ in parse_fields(old_raw)):
        text = build_status_stanza(update.deb.control_text, records)
    else:
        text = update.deb.control_text if update.deb.control_text.endswith("\n") else (
            update.deb.control_text + "\n")
    _stage_generated(view, staging, path, text.encode(), _DATA_MODE)
    companion = path + ".md5sums"
    if update.old is None:
        has_companions = any(name.endswith(".md5sums") for name in view.listdir(STATUS_D_PATH))
    else:
        has_companions = view.lstat(companion) is not None
    if has_companions:
        _stage_generated(view, staging, companion, update.md5sums(), _DATA_MODE)


def _write_info_files(
    view: MergedView,
    staging: StagingTree,
    update: PackageUpdate,
    records: Sequence[ConffileRecord],
) -> None:
    deb = update.deb
    stem = info_name(deb.name, deb.architecture, deb.control.get("Multi-Arch", ""))
    files: dict[str, bytes] = {}
    for member, data in deb.control_files.items():
        if member == "control":
            continue
        files[member] = data
    obsolete = [r.path for r in records if r.obsolete]
    files["list"] = render_list([*update.list_paths, *obsolete])
    files["md5sums"] = update.md5sums()
    for member, data in sorted(files.items()):
        mode = _SCRIPT_MODE if member in _SCRIPTS else _DATA_MODE
        _stage_generated(view, staging, f"{INFO_DIR}/{stem}.{member}", data, mode)

    # Control members of the old version that the new one lacks must go, or dpkg would run a
    # stale maintainer script or trigger later.
    old_stems = set()
    if update.old is not None:
        old_stems = {update.old.name, f"{update.old.name}:{update.old.architecture}"}
    for name in view.listdir(INFO_DIR):
        for old_stem in old_stems:
            prefix = old_stem + "."
            if not name.startswith(prefix):
                continue
            member = name[len(prefix):]
            if "." in member or (old_stem == stem and member in files):
                continue
            staging.add_whiteout(f"{INFO_DIR}/{name}")


_SCRIPTS = frozenset({"preinst", "postinst", "prerm", "postrm", "config"})


def _stage_generated(
    view: MergedView, staging: StagingTree, path: str, data: bytes, mode: int
) -> None:
    # Generated files keep the mode and owner of the file they replace; their mtime is left to
    # the layer build's fixed time.
    node = view.lstat(path)
    if node is not None and node.type is FileType.FILE:
        mode, uid, gid = node.mode, node.uid, node.gid
    else:
        uid = gid = 0
    staging.add_file(path, data=data, mode=mode, uid=uid, gid=gid, mtime=None)


def _is_directory(view: MergedView, path: str) -> bool:
    node = view.lstat(view.resolve(posixpath.dirname(path)) + "/" + posixpath.basename(path))
    return node is not None and node.type is FileType.DIRECTORY
