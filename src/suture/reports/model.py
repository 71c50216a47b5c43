"""The scanner-independent result of reading a report: OS, image and findings."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from suture.ecosystems.base import Finding

# Scanner names for an OS family, mapped to the os-release ID the image itself reports.
_OS_RELEASE_IDS = {
    "redhat": "rhel",
    "amazon": "amzn",
    "amazonlinux": "amzn",
    "cbl-mariner": "mariner",
    "alma": "almalinux",
    "oracle": "ol",
    "oraclelinux": "ol",
    "rockylinux": "rocky",
    "opensuse.leap": "opensuse-leap",
    "opensuse.tumbleweed": "opensuse-tumbleweed",
    "suse linux enterprise server": "sles",
    "suse linux enterprise micro": "sl-micro",
}

# Package type (purl type and ecosystem name) of each OS family, keyed by os-release ID.
_PACKAGE_TYPES = {
    "debian": "deb",
    "ubuntu": "deb",
    "alpine": "apk",
    "wolfi": "apk",
    "chainguard": "apk",
    "rhel": "rpm",
    "centos": "rpm",
    "rocky": "rpm",
    "almalinux": "rpm",
    "fedora": "rpm",
    "amzn": "rpm",
    "ol": "rpm",
    "mariner": "rpm",
    "azurelinux": "rpm",
    "photon": "rpm",
    "opensuse-leap": "rpm",
    "opensuse-tumbleweed": "rpm",
    "sles": "rpm",
    "sl-micro": "rpm",
}

_LEADING_VERSION = re.compile(r"\d+(?:\.\d+)*")


def os_release_id(family: str) -> str:
    """Return the os-release ID for an OS family name as a scanner spells it."""
    name = family.strip().lower()
    return _OS_RELEASE_IDS.get(name, name)


def package_type_for(family: str) -> str:
    """Return the package type ("deb", "apk", "rpm") of an OS family, or "" if unknown."""
    return _PACKAGE_TYPES.get(os_release_id(family), "")


def _versions_agree(report_version: str, image_version: str) -> bool:
    # Scanners give a point release ("12.11") where os-release has the major one ("12"), or the
    # other way round, so one dotted number must be a prefix of the other. Versions without a
    # leading number (testing, sid) cannot be compared and agree with anything.
    left = _LEADING_VERSION.match(report_version.strip())
    right = _LEADING_VERSION.match(image_version.strip())
    if left is None or right is None:
        return True
    a = left.group().split(".")
    b = right.group().split(".")
    shorter = min(len(a), len(b))
    return a[:shorter] == b[:shorter]


@dataclass(frozen=True)
class Report:
    """Findings read from one scanner report, with the OS and image the report describes.

    `findings` contains one entry per (package, architecture, vulnerability) with a fixed version.
    `no_fix` contains findings with no known fix, which are counted and skipped.
    `os_family` is the scanner's name for the OS ("debian", "redhat", "cbl-mariner");
    `os_id` gives the matching os-release ID. `image_digest` is the digest the scanner
    recorded for the image (a repository digest when it gives one). `notes` explain what was
    left out ("ignored 8 language-package findings (node-pkg)").
    """

    findings: tuple[Finding, ...]
    scanner: str
    os_family: str
    os_version: str
    architecture: str | None = None
    image_reference: str | None = None
    image_digest: str | None = None
    no_fix: tuple[Finding, ...] = ()
    notes: tuple[str, ...] = ()
    path: str = field(default="", compare=False)

    @property
    def os_id(self) -> str:
        return os_release_id(self.os_family)

    @property
    def package_type(self) -> str:
        return package_type_for(self.os_family)

    @property
    def vulnerability_ids(self) -> tuple[str, ...]:
        """Return the distinct ids of fixable vulnerabilities, in report order."""
        return tuple(dict.fromkeys(f.vulnerability_id for f in self.findings))

    def matches_os(self, os_id: str, version_id: str) -> bool:
        """Return whether an image with this os-release ID and VERSION_ID fits the report."""
        if self.os_id != os_release_id(os_id):
            return False
        return _versions_agree(self.os_version, version_id)
