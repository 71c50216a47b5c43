"""The interface every package ecosystem (dpkg now; apk and rpm later) implements.

Data flows one way. Findings (from a report) or an update-all request go into `plan` with the
image's filesystem view, then the plan's packages are fetched, and an engine applies them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from suture.image.fsview import FileSystemView


@dataclass(frozen=True)
class Finding:
    """One scanner finding: a package, the version the scanner saw, and a version that fixes it.

    `fixed_version` is empty when the report lists no fix. `architecture` is empty when the
    report does not say.
    """

    package: str
    installed_version: str
    fixed_version: str
    vulnerability_id: str
    architecture: str = ""
    ecosystem: str = ""


class PackageStatus(StrEnum):
    """Outcome of planning or applying one package."""

    UPDATE = "update"
    UPDATED = "updated"
    UP_TO_DATE = "up-to-date"
    UNAVAILABLE = "unavailable"
    HELD = "held"
    NOT_INSTALLED = "not-installed"
    FAILED = "failed"


@dataclass(frozen=True)
class PlannedPackage:
    """One package in a plan.

    `installed` is empty for a package the plan adds. `fixed` is the version the findings ask
    for (empty for update-all). `target` is the version to install (empty unless status is
    UPDATE). `reason` explains the status in words ("required by libssl3", "repository has only
    3.0.11-1~deb12u2", "new dependency of X").
    """

    name: str
    architecture: str
    installed: str
    fixed: str
    target: str
    status: PackageStatus
    vulnerabilities: tuple[str, ...] = ()
    reason: str = ""


@dataclass(frozen=True)
class PackageFile:
    """A package to download: where, its size, and the hash the signed index lists for it."""

    name: str
    version: str
    architecture: str
    url: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Plan:
    """The packages planned for one image, with the files to fetch for those being updated."""

    ecosystem: str
    distribution: str
    packages: tuple[PlannedPackage, ...]
    downloads: Mapping[str, PackageFile] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def updates(self) -> tuple[PlannedPackage, ...]:
        return tuple(p for p in self.packages if p.status is PackageStatus.UPDATE)


@dataclass(frozen=True)
class PlanOptions:
    """User settings that change how repositories are found and trusted."""

    mirrors: Sequence[tuple[str, str]] = ()
    extra_sources: Sequence[str] = ()
    allow_insecure_repositories: bool = False
    host_apt_dir: Path = Path("/etc/apt")
    cache_dir: Path | None = None


class Ecosystem(Protocol):
    """A package manager family suture can patch."""

    name: str

    def detect(self, fs: FileSystemView) -> bool:
        """Return whether the image's filesystem uses this ecosystem's package database."""
        ...

    def plan(
        self, fs: FileSystemView, findings: Sequence[Finding] | None, options: PlanOptions
    ) -> Plan:
        """Plan updates for `findings`, or for every package when `findings` is None."""
        ...
