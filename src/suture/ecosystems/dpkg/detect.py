"""Detection of an image's Debian-family distribution and release codename.

The first source is `/etc/os-release` (or `/usr/lib/os-release`, see os-release(5)), which gives
`ID`, `ID_LIKE`, `VERSION_ID` and `VERSION_CODENAME`. Debian testing, sid and some distroless
images have no codename there. For them the codename comes from `/etc/debian_version`, else
from the version of the installed `base-files` package, whose major number is the release.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from suture.ecosystems.dpkg.database import DpkgDatabase
from suture.image.fsview import FileSystemView

OS_RELEASE_PATHS = ("/etc/os-release", "/usr/lib/os-release")
DEBIAN_VERSION_PATH = "/etc/debian_version"

# Debian release numbers and their codenames, from https://www.debian.org/releases/.
DEBIAN_CODENAMES = {
    "8": "jessie",
    "9": "stretch",
    "10": "buster",
    "11": "bullseye",
    "12": "bookworm",
    "13": "trixie",
    "14": "forky",
    "15": "duke",
}


@dataclass(frozen=True)
class OsRelease:
    """The fields of os-release(5) that suture uses; `id_like` is split into words."""

    id: str = ""
    id_like: tuple[str, ...] = ()
    version_id: str = ""
    version_codename: str = ""
    pretty_name: str = ""

    @property
    def family(self) -> str:
        """`debian` or `ubuntu` for the distribution or the one it derives from, else ""."""
        for name in (self.id, *self.id_like):
            if name in ("ubuntu", "debian"):
                return name
        return ""


@dataclass(frozen=True)
class Distribution:
    """A detected distribution: its family (`debian`, `ubuntu`) and release codename."""

    family: str
    codename: str
    os_release: OsRelease
    debian_version: str = ""

    def __str__(self) -> str:
        name = self.os_release.id or self.family
        return f"{name} {self.codename}".strip()


def parse_os_release(text: str) -> OsRelease:
    """Parse os-release(5) text: `KEY=value` lines with shell-style quoting."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip("\"'")]
        values[key.strip()] = " ".join(words)
    codename = values.get("VERSION_CODENAME", "") or values.get("UBUNTU_CODENAME", "")
    if not codename:
        # Older releases put the codename only in VERSION, as in `9 (stretch)`.
        match = re.search(r"\(([a-z]+)\)", values.get("VERSION", ""))
        codename = match.group(1) if match else ""
    return OsRelease(
        id=values.get("ID", "").lower(),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        version_id=values.get("VERSION_ID", ""),
        version_codename=codename,
        pretty_name=values.get("PRETTY_NAME", ""),
    )


def read_os_release(fs: FileSystemView) -> OsRelease:
    """Read the image's os-release file; return an empty OsRelease when it has none."""
    for path in OS_RELEASE_PATHS:
        data = fs.read(path)
        if data is not None:
            return parse_os_release(data.decode("utf-8", errors="replace"))
    return OsRelease()


def read_debian_version(fs: FileSystemView) -> str:
    """Return the first line of `/etc/debian_version` (`12.5`, `trixie/sid`), or ""."""
    data = fs.read(DEBIAN_VERSION_PATH)
    if data is None:
        return ""
    lines = data.decode("utf-8", errors="replace").strip().splitlines()
    return lines[0].strip() if lines else ""


def codename_from_debian_version(text: str) -> str:
    """Map `/etc/debian_version` or a base-files version to a Debian codename, or ""."""
    text = text.strip()
    if not text:
        return ""
    # Testing and sid write `trixie/sid`; the codename before the slash is the release.
    if "/" in text:
        return text.split("/", 1)[0]
    match = re.match(r"(\d+)", text)
    if match:
        return DEBIAN_CODENAMES.get(match.group(1), "")
    return ""


def detect_distribution(fs: FileSystemView, database: DpkgDatabase | None = None) -> Distribution:
    """Detect the family and codename of an image; fields it cannot find are left empty."""
    os_release = read_os_release(fs)
    debian_version = read_debian_version(fs)
    family = os_release.family
    if not family and debian_version:
        family = "debian"

    codename = os_release.version_codename
    if not codename and family == "debian":
        codename = codename_from_debian_version(debian_version)
        if not codename and database is not None:
            base_files = database.find("base-files")
            if base_files is not None:
                codename = codename_from_debian_version(base_files.version)
    return Distribution(
        family=family, codename=codename, os_release=os_release, debian_version=debian_version
    )
