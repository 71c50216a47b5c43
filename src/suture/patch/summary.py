"""The result of a patch run: the `--summary` JSON document and the table printed on stderr.

JSON shape (keys in this order):
    {"source": {"reference", "digest"}, "result": {"reference", "digest"} or null,
     "platforms": [{"platform", "status", "engine",
                    "packages": [{"name", "architecture", "installed", "fixed", "target",
                                  "vulnerabilities", "status", "reason"}],
                    "errors", "notes"}],
     "bytes_downloaded", "seconds"}

Platform status is "patched", "up-to-date", "failed" or "skipped" ("planned" in a dry run).
Package status is "updated", "up-to-date", "unavailable", "held", "not-installed" or "failed"
("update" in a dry run, where nothing was applied).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from suture.ecosystems.base import PackageStatus, PlannedPackage

PLATFORM_STATUSES = ("patched", "up-to-date", "failed", "skipped", "planned")
PACKAGE_STATUSES = tuple(status.value for status in PackageStatus)

# Package statuses the table counts as "not fixable": the image cannot get the fix from its
# repositories, a hold pins the package, or the report names a package the image lacks.
_NOT_FIXABLE = frozenset({"unavailable", "held", "not-installed"})


@dataclass(frozen=True)
class ImageSummary:
    """An image or index by reference and digest."""

    reference: str
    digest: str

    def to_dict(self) -> dict[str, str]:
        return {"reference": self.reference, "digest": self.digest}


@dataclass(frozen=True)
class PackageSummary:
    """One package's outcome on one platform."""

    name: str
    architecture: str
    installed: str
    fixed: str
    target: str
    vulnerabilities: tuple[str, ...]
    status: str
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in PACKAGE_STATUSES:
            raise ValueError(f"unknown package status {self.status!r} for {self.name}")

    @classmethod
    def from_planned(cls, package: PlannedPackage) -> PackageSummary:
        return cls(
            name=package.name,
            architecture=package.architecture,
            installed=package.installed,
            fixed=package.fixed,
            target=package.target,
            vulnerabilities=tuple(package.vulnerabilities),
            status=package.status.value,
            reason=package.reason,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "architecture": self.architecture,
            "installed": self.installed,
            "fixed": self.fixed,
            "target": self.target,
            "vulnerabilities": list(self.vulnerabilities),
            "status": self.status,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class PackageCounts:
    """Packages of one platform in the four groups the summary table shows."""

    updated: int = 0
    up_to_date: int = 0
    not_fixable: int = 0
    failed: int = 0


@dataclass(frozen=True)
class PlatformSummary:
    """One platform's outcome: status, engine, packages, errors and notes."""

    platform: str
    status: str
    engine: str
    packages: tuple[PackageSummary, ...] = ()
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.status not in PLATFORM_STATUSES:
            raise ValueError(f"unknown platform status {self.status!r} for {self.platform}")

    def counts(self) -> PackageCounts:
        """Count packages as the table shows them.

        A package planned for update counts as updated in a dry run and on a patched platform,
        and as failed on a platform that failed, because its update was not written.
        """
        applied = self.status in ("planned", "patched")
        updated = up_to_date = not_fixable = failed = 0
        for package in self.packages:
            if package.status == "updated" or (package.status == "update" and applied):
                updated += 1
            elif package.status in ("update", "failed"):
                failed += 1
            elif package.status == "up-to-date":
                up_to_date += 1
            elif package.status in _NOT_FIXABLE:
                not_fixable += 1
        return PackageCounts(updated, up_to_date, not_fixable, failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "status": self.status,
            "engine": self.engine,
            "packages": [package.to_dict() for package in self.packages],
            "errors": list(self.errors),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Summary:
    """The whole run: what was read, what was written, and each platform's outcome."""

    source: ImageSummary
    result: ImageSummary | None
    platforms: tuple[PlatformSummary, ...]
    bytes_downloaded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.to_dict(),
            "result": self.result.to_dict() if self.result else None,
            "platforms": [platform.to_dict() for platform in self.platforms],
            "bytes_downloaded": self.bytes_downloaded,
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        """Return the `--summary` document as indented JSON text ending in a newline."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> Summary:
        """Rebuild a Summary from its JSON form; raises KeyError or ValueError if malformed."""
        result = document["result"]
        return cls(
            source=ImageSummary(**document["source"]),
            result=ImageSummary(**result) if result is not None else None,
            platforms=tuple(_platform_from_dict(p) for p in document["platforms"]),
            bytes_downloaded=int(document["bytes_downloaded"]),
            seconds=float(document["seconds"]),
        )


def _platform_from_dict(document: Mapping[str, Any]) -> PlatformSummary:
    packages = tuple(
        PackageSummary(**{**p, "vulnerabilities": tuple(p["vulnerabilities"])})
        for p in document["packages"]
    )
    return PlatformSummary(
        platform=document["platform"],
        status=document["status"],
        engine=document["engine"],
        packages=packages,
        errors=tuple(document["errors"]),
        notes=tuple(document.get("notes", ())),
    )


def render_summary(summary: Summary, console: Console, *, verbose: bool = False) -> None:
    """Print the plain-language summary: one row per platform, package rows when verbose."""
    table = Table(title=f"suture: {summary.source.reference}", title_justify="left")
    table.add_column("platform")
    table.add_column("status")
    for heading in ("updated", "up to date", "not fixable", "failed"):
        table.add_column(heading, justify="right")
    for platform in summary.platforms:
        counts = platform.counts()
        table.add_row(
            platform.platform,
            platform.status,
            str(counts.updated),
            str(counts.up_to_date),
            str(counts.not_fixable),
            str(counts.failed),
        )
    console.print(table)

    for platform in summary.platforms:
        if verbose and platform.packages:
            console.print(_package_table(platform))
        for error in platform.errors:
            console.print(f"{platform.platform}: error: {error}", markup=False, highlight=False)
        if platform.status == "skipped" and platform.notes and not verbose:
            # The first note of a skipped platform is the reason it was skipped.
            console.print(f"{platform.platform}: skipped: {platform.notes[0]}", markup=False,
                          highlight=False)
        if verbose:
            for note in platform.notes:
                console.print(f"{platform.platform}: {note}", markup=False, highlight=False)


def _package_table(platform: PlatformSummary) -> Table:
    table = Table(title=f"packages on {platform.platform}", title_justify="left")
    for heading in ("package", "installed", "target", "status", "vulnerabilities", "reason"):
        table.add_column(heading)
    for package in _ordered(platform.packages):
        name = f"{package.name}:{package.architecture}" if package.architecture else package.name
        table.add_row(
            name,
            package.installed or "-",
            package.target or "-",
            package.status,
            ", ".join(package.vulnerabilities),
            package.reason,
        )
    return table


def _ordered(packages: Iterable[PackageSummary]) -> Sequence[PackageSummary]:
    first = {"updated": 0, "update": 0, "failed": 1}
    return sorted(packages, key=lambda p: (first.get(p.status, 2), p.name, p.architecture))
