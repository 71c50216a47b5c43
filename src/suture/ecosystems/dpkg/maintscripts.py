"""Describe the maintainer-script and trigger work the unpack engine does not do.

The unpack engine runs nothing from a package, so `preinst`, `postinst` and triggers never run.
This module reads those control members as text and reports, for the summary, what they would
have done: which commands a script calls, which triggers a package activates or waits for, and
whether the shared-library names changed (the one case where a stale `ld.so.cache` matters,
because the cache maps library names to files and a changed file under the same name stays
valid).
"""

from __future__ import annotations

import logging
import posixpath
import re
from collections.abc import Sequence

from suture.ecosystems.dpkg.debfile import DebFile
from suture.image.fsview import FileSystemView

logger = logging.getLogger(__name__)

SCRIPTS = ("preinst", "postinst")

# Lines that do no work on their own: the shebang, comments, shell options, exits, case labels
# and the bare keywords of shell control flow.
_NO_WORK_RE = re.compile(
    r"^(#.*|set( -[a-z]+)+|exit( 0)?|;;|esac|fi|done|then|else|\}|\{|:|true|"
    r"case .* in|[-a-z|*\"' ]+\))$"
)
_COMMAND_RE = re.compile(r"(?:^|[;&|(`]\s*|\bthen\s+|\bdo\s+)([a-z][a-z0-9_.+-]*)")
# Commands worth naming in the summary because they change the system.
_NOTABLE_COMMANDS = frozenset({
    "update-alternatives", "update-ca-certificates", "ldconfig", "systemctl",
    "deb-systemd-helper", "deb-systemd-invoke", "invoke-rc.d", "update-rc.d", "adduser",
    "addgroup", "useradd", "groupadd", "dpkg-maintscript-helper", "dpkg-trigger", "chown",
    "chmod", "mkdir", "ln", "rm", "mv", "cp", "install", "dpkg-statoverride", "update-mime",
    "update-desktop-database", "gtk-update-icon-cache", "glib-compile-schemas", "py3compile",
    "pycompile", "update-initramfs", "locale-gen", "mandb", "db_get", "db_input", "db_go",
    "debconf-set-selections", "tzdata", "ucf", "ucfr", "depmod", "setcap", "pam-auth-update",
    "update-shells", "add-shell", "remove-shell", "install-info", "update-catalog", "perl",
    "python3",
})
_LIBRARY_RE = re.compile(r"^/(usr/)?lib(32|64|x32)?/(.+/)?[^/]+\.so(\.[0-9][0-9.]*)?$")
_LD_CACHE = "/etc/ld.so.cache"
_LDCONFIG_PATHS = ("/sbin/ldconfig", "/usr/sbin/ldconfig")


def script_commands(text: str) -> list[str]:
    """Return the notable commands a shell script calls, in first-seen order.

    An empty list means the script does no work worth reporting (comments, `set -e`, `exit 0`).
    A script that does other work returns `["(shell code)"]`. This reads text; it never runs it.
    """
    found: list[str] = []
    other_work = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _NO_WORK_RE.match(line):
            continue
        names = [name for name in _COMMAND_RE.findall(line) if name in _NOTABLE_COMMANDS]
        for name in names:
            if name not in found:
                found.append(name)
        if not names:
            other_work = True
    if other_work and not found:
        found.append("(shell code)")
    return found


def trigger_lines(text: str) -> tuple[list[str], list[str]]:
    """Return (activated, interested) trigger names from a `triggers` control file."""
    activated: list[str] = []
    interested: list[str] = []
    for raw in text.splitlines():
        parts = raw.split("#", 1)[0].split()
        if len(parts) != 2:
            continue
        directive, name = parts
        if directive.startswith("activate"):
            activated.append(name)
        elif directive.startswith("interest"):
            interested.append(name)
    return activated, interested


def library_names(paths: Sequence[str]) -> set[str]:
    """Return the file names of shared libraries among `paths` (`libz.so.1`, `libz.so.1.2.13`)."""
    return {posixpath.basename(path) for path in paths if _LIBRARY_RE.match(path)}


def uses_ld_cache(fs: FileSystemView) -> bool:
    """Return whether the image has an `ld.so.cache` or an `ldconfig` to build one.

    Distroless images have neither: their dynamic loader searches the default directories,
    so a library name change needs no cache update there.
    """
    return any(_entry(fs, path) is not None for path in (_LD_CACHE, *_LDCONFIG_PATHS))


def _entry(fs: FileSystemView, path: str) -> object:
    parent = fs.resolve(posixpath.dirname(path))
    return fs.lstat(posixpath.join(parent, posixpath.basename(path)))


def describe_skipped_work(
    deb: DebFile, old_paths: Sequence[str], new_paths: Sequence[str],
    fs: FileSystemView | None = None,
) -> list[str]:
    """Return summary notes on what `deb`'s scripts and triggers would have done.

    `old_paths` and `new_paths` are the paths the installed and the new version own; they decide
    whether `ld.so.cache` is still valid. `fs`, the image before the update, refines that. A
    library path the image already has is not a new name, because the md5sums lists that
    distroless images keep omit symlinks such as `libz.so.1`. An image with no cache and no
    `ldconfig` gets no notes about the cache.
    """
    notes: list[str] = []
    for script in SCRIPTS:
        data = deb.control_files.get(script)
        if data is None:
            continue
        commands = script_commands(data.decode("utf-8", errors="replace"))
        if commands:
            notes.append(f"{deb.name}: {script} not run (it calls {', '.join(commands)})")

    activated, interested = trigger_lines(
        deb.control_files.get("triggers", b"").decode("utf-8", errors="replace")
    )
    has_cache = fs is None or uses_ld_cache(fs)
    library_change = _library_change(old_paths, new_paths, fs) if has_cache else ""
    for trigger in activated:
        if trigger in ("ldconfig", "libc-upgrade") and not has_cache:
            continue
        if trigger in ("ldconfig", "libc-upgrade") and not library_change:
            notes.append(
                f"{deb.name}: trigger {trigger} not run; ld.so.cache stays valid because no "
                "shared library file name changed"
            )
        elif trigger not in ("ldconfig", "libc-upgrade"):
            notes.append(f"{deb.name}: trigger {trigger} not run")
    if interested:
        # A package that handles triggers does that work in its postinst, which did not run.
        notes.append(
            f"{deb.name}: handles the triggers {', '.join(interested)}, and its postinst "
            "did not run"
        )
    if library_change:
        notes.append(f"{deb.name}: {library_change}; ld.so.cache was not regenerated, so run "
                     "ldconfig in the image or patch with an engine that runs scripts")
    return notes


def _library_change(
    old_paths: Sequence[str], new_paths: Sequence[str], fs: FileSystemView | None
) -> str:
    # Library paths of the new version that the image already has keep their cache entries.
    present = set()
    if fs is not None:
        present = {
            posixpath.basename(path) for path in new_paths
            if _LIBRARY_RE.match(path) and _entry(fs, path) is not None
        }
    if not old_paths:
        added = sorted(library_names(new_paths) - present)
        return f"new shared libraries {', '.join(added)}" if added else ""
    old_names = library_names(old_paths) | present
    new_names = library_names(new_paths)
    added = sorted(new_names - old_names)
    removed = sorted(old_names - new_names)
    parts = []
    if added:
        parts.append(f"new shared library names {', '.join(added)}")
    if removed:
        parts.append(f"removed shared library names {', '.join(removed)}")
    return " and ".join(parts)
