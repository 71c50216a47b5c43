"""The installed-package database of dpkg, read from an image's filesystem.

Two forms exist, alone or together:
- `/var/lib/dpkg/status`: one deb822 stanza per package, written by dpkg itself;
- `/var/lib/dpkg/status.d/<file>`: one file per package, written by image builders such as
  distroless (Bazel rules_distroless). The file name is not always the package name, so entries
  are matched by their `Package:` field. `*.md5sums` files there belong to their package and are
  not stanzas. Entries in status.d carry no `Status:` field and count as installed.

Every stanza keeps its exact text and every field in order, so that the apply step can rewrite
only what an update changes.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from debian.deb822 import Deb822

from suture.errors import EcosystemError, UnsupportedImageError
from suture.image.fsview import FileSystemView, FileType

logger = logging.getLogger(__name__)

STATUS_PATH = "/var/lib/dpkg/status"
STATUS_D_PATH = "/var/lib/dpkg/status.d"
CHISEL_MANIFEST_PATH = "/var/lib/chisel/manifest.wall"

_SOURCE_RE = re.compile(r"^(?P<name>\S+)(?:\s*\((?P<version>[^)]+)\))?\s*$")


class DatabaseForm(StrEnum):
    """Form of an image's dpkg database: one status file, status.d entries, or both."""

    STATUS = "status"
    STATUS_D = "status.d"
    BOTH = "both"


@dataclass(frozen=True)
class InstalledPackage:
    """One stanza of the dpkg database.

    `status` is the `Status:` field (`want flag state`, "install ok installed" for status.d
    entries, which have none). `installed` is true for `install ok installed` and for a held
    package, `hold ok installed`; every other state (config-files, half-installed, unpacked,
    deinstall) counts as not installed. `source` and `source_version` default to the package's
    own name and version when the stanza has no `Source:` field or no version in it.
    `conffiles` maps each conffile path to its md5, and `obsolete_conffiles` contains the paths
    dpkg marked `obsolete`. `file` is the database file the stanza came from.
    """

    name: str
    version: str
    architecture: str
    status: str
    installed: bool
    held: bool
    source: str
    source_version: str
    conffiles: Mapping[str, str]
    fields: Mapping[str, str]
    raw: str
    file: str
    obsolete_conffiles: frozenset[str] = frozenset()

    @property
    def key(self) -> str:
        """The `name:arch` key used across plans and downloads."""
        return f"{self.name}:{self.architecture}"

    @property
    def multi_arch(self) -> str:
        """The `Multi-Arch:` field (`same`, `foreign`, `allowed`), or "no" when absent."""
        return self.fields.get("Multi-Arch", "no").strip() or "no"


@dataclass(frozen=True)
class DpkgDatabase:
    """The installed packages of one image, in database order."""

    form: DatabaseForm
    packages: tuple[InstalledPackage, ...]
    native_architecture: str = ""
    foreign_architectures: tuple[str, ...] = ()

    def find(self, name: str, architecture: str | None = None) -> InstalledPackage | None:
        """Return the installed package `name` (for `architecture`, if given), or None.

        Without an architecture, the native-architecture or `all` entry is preferred over a
        foreign one, as dpkg does for a bare package name.
        """
        matches = [
            p
            for p in self.packages
            if p.name == name and (architecture is None or p.architecture == architecture)
        ]
        if not matches:
            return None
        for package in matches:
            if package.architecture in (self.native_architecture, "all"):
                return package
        return matches[0]

    @property
    def installed(self) -> tuple[InstalledPackage, ...]:
        """Packages whose status is `install ok installed` (or status.d entries)."""
        return tuple(p for p in self.packages if p.installed)


def split_stanzas(text: str) -> list[str]:
    """Split deb822 text into stanzas, each with its exact text (lines and final newline).

    Blank lines (empty or whitespace only) separate stanzas and belong to none of them.
    """
    stanzas: list[str] = []
    current: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.strip():
            current.append(line)
        elif current:
            stanzas.append("".join(current))
            current = []
    if current:
        stanzas.append("".join(current))
    return stanzas


def parse_stanza(raw: str, file: str, *, default_status: str = "") -> InstalledPackage:
    """Parse one database stanza; raise EcosystemError when a required field is missing."""
    paragraph = Deb822(raw)
    fields = MappingProxyType(dict(paragraph))
    name = fields.get("Package", "").strip()
    version = fields.get("Version", "").strip()
    if not name:
        raise EcosystemError(f"{file}: a stanza has no Package field; the dpkg database is damaged")
    if not version and "Status" not in fields:
        raise EcosystemError(f"{file}: package {name} has no Version field")

    status = " ".join(fields.get("Status", default_status).split())
    words = status.split()
    want, flag, state = words if len(words) == 3 else ("", "", "")
    source, source_version = _parse_source(fields.get("Source", ""), name, version)
    conffiles, obsolete = _parse_conffiles(fields.get("Conffiles", ""))
    return InstalledPackage(
        name=name,
        version=version,
        architecture=fields.get("Architecture", "").strip(),
        status=status,
        installed=want in ("install", "hold") and flag == "ok" and state == "installed",
        held=want == "hold",
        source=source,
        source_version=source_version,
        conffiles=MappingProxyType(conffiles),
        fields=fields,
        raw=raw,
        file=file,
        obsolete_conffiles=frozenset(obsolete),
    )


def _parse_source(value: str, name: str, version: str) -> tuple[str, str]:
    match = _SOURCE_RE.match(value.strip())
    if not value.strip() or match is None:
        return (name, version)
    return (match["name"], (match["version"] or version).strip())


def _parse_conffiles(value: str) -> tuple[dict[str, str], list[str]]:
    # Each line is `path md5 [obsolete] [remove-on-upgrade]`; a path may contain no spaces
    # because dpkg itself splits on them.
    conffiles: dict[str, str] = {}
    obsolete: list[str] = []
    for line in value.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        conffiles[parts[0]] = parts[1]
        if "obsolete" in parts[2:]:
            obsolete.append(parts[0])
    return conffiles, obsolete


def read_database(fs: FileSystemView) -> DpkgDatabase:
    """Read the dpkg database of an image.

    Raises UnsupportedImageError for an image with no dpkg database (including Ubuntu chiseled
    images that carry only a chisel manifest) and EcosystemError for a damaged one.
    """
    packages: list[InstalledPackage] = []
    has_status = False
    has_status_d = False

    status_text = _read_text(fs, STATUS_PATH)
    if status_text is not None:
        has_status = True
        for raw in split_stanzas(status_text):
            packages.append(parse_stanza(raw, STATUS_PATH))

    status_d = fs.lstat(STATUS_D_PATH)
    if status_d is not None and status_d.type is FileType.DIRECTORY:
        for entry in fs.listdir(STATUS_D_PATH):
            if entry.endswith(".md5sums"):
                continue
            path = f"{STATUS_D_PATH}/{entry}"
            text = _read_text(fs, path)
            if text is None:
                continue
            has_status_d = True
            for raw in split_stanzas(text):
                packages.append(parse_stanza(raw, path, default_status="install ok installed"))

    if not has_status and not has_status_d:
        if fs.lstat(CHISEL_MANIFEST_PATH) is not None:
            raise UnsupportedImageError(
                f"the image has a chisel manifest ({CHISEL_MANIFEST_PATH}) but no dpkg database; "
                "Ubuntu chiseled images without a dpkg status are not supported yet"
            )
        raise UnsupportedImageError(
            f"the image has no dpkg database ({STATUS_PATH} or {STATUS_D_PATH}/); "
            "it is not a Debian or Ubuntu image that suture can patch"
        )

    form = (
        DatabaseForm.BOTH
        if has_status and has_status_d
        else (DatabaseForm.STATUS if has_status else DatabaseForm.STATUS_D)
    )
    native = _native_architecture(fs, packages)
    foreign = tuple(
        sorted({p.architecture for p in packages if p.architecture not in ("all", native, "")})
    )
    logger.debug("read %d dpkg entries (%s), native architecture %s", len(packages), form, native)
    return DpkgDatabase(
        form=form,
        packages=tuple(packages),
        native_architecture=native,
        foreign_architectures=foreign,
    )


def _read_text(fs: FileSystemView, path: str) -> str | None:
    data = fs.read(path)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise EcosystemError(f"{path} in the image is not valid UTF-8: {error}") from error


def _native_architecture(fs: FileSystemView, packages: list[InstalledPackage]) -> str:
    # dpkg's own architecture is the native one. Images without dpkg (distroless) fall back to
    # libc6 and base-files, then to the most common architecture other than `all`.
    for name in ("dpkg", "libc6", "base-files"):
        for package in packages:
            if package.name == name and package.architecture not in ("", "all"):
                return package.architecture
    counts = Counter(p.architecture for p in packages if p.architecture not in ("", "all"))
    if counts:
        return counts.most_common(1)[0][0]
    return ""
