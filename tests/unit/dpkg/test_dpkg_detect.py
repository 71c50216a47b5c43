"""Detecting the distribution and release from os-release, debian_version and base-files."""

from __future__ import annotations

from typing import Any

from suture.ecosystems.dpkg.database import read_database
from suture.ecosystems.dpkg.detect import (
    codename_from_debian_version,
    detect_distribution,
    parse_os_release,
)

BOOKWORM = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""

MINT = """\
NAME="Linux Mint"
ID=linuxmint
ID_LIKE="ubuntu debian"
VERSION_ID="21.2"
UBUNTU_CODENAME=jammy
"""

SID = """\
PRETTY_NAME="Debian GNU/Linux trixie/sid"
NAME="Debian GNU/Linux"
ID=debian
"""


def test_parse_os_release_debian() -> None:
    release = parse_os_release(BOOKWORM)
    assert release.id == "debian"
    assert release.version_id == "12"
    assert release.version_codename == "bookworm"
    assert release.family == "debian"


def test_parse_os_release_derivative() -> None:
    release = parse_os_release(MINT)
    assert release.id_like == ("ubuntu", "debian")
    assert release.family == "ubuntu"
    assert release.version_codename == "jammy"


def test_codename_from_debian_version() -> None:
    assert codename_from_debian_version("12.5") == "bookworm"
    assert codename_from_debian_version("trixie/sid") == "trixie"
    assert codename_from_debian_version("12.4+deb12u5") == "bookworm"
    assert codename_from_debian_version("") == ""


def test_detect_sid_falls_back_to_debian_version(memory_fs: type[Any]) -> None:
    fs = memory_fs({"/etc/os-release": SID, "/etc/debian_version": "trixie/sid\n"})
    distribution = detect_distribution(fs)
    assert distribution.family == "debian"
    assert distribution.codename == "trixie"


def test_detect_falls_back_to_base_files(memory_fs: type[Any]) -> None:
    status = (
        "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 12.4+deb12u5\n"
    )
    fs = memory_fs({"/usr/lib/os-release": SID, "/var/lib/dpkg/status": status})
    distribution = detect_distribution(fs, read_database(fs))
    assert distribution.codename == "bookworm"
