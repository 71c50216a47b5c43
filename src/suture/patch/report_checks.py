"""Matching scanner reports to an image's platforms, and checking that they fit the image.

A report directory contains one report per platform, matched by the architecture each report
names. A report that contradicts the image (another distribution, release or architecture) is
an error, because planning from it would patch the wrong packages. An installed version in the
report that differs from the image's database is only a warning: the image is what gets patched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from suture.ecosystems.base import Finding, PackageStatus, Plan, PlannedPackage
from suture.ecosystems.dpkg.database import DpkgDatabase
from suture.ecosystems.dpkg.detect import OsRelease
from suture.errors import ReportError
from suture.image.model import Platform
from suture.reports import Report, read_report

log = logging.getLogger(__name__)

# Architecture names scanners use (uname, dpkg, rpm), mapped to OCI platform architectures.
_ARCH_ALIASES = {
    "x86_64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm", "armv7l": "arm",
    "i386": "386", "i686": "386", "ppc64el": "ppc64le",
}


def load_reports(path: Path, scanner: str) -> list[Report]:
    """Read one report file, or every `*.json` report in a directory (one per platform)."""
    if not path.exists():
        raise ReportError(f"report {path} not found: check the -r/--report path")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".json")
        if not files:
            raise ReportError(f"report directory {path} contains no .json reports")
        return [read_report(file, scanner) for file in files]
    return [read_report(path, scanner)]


def same_architecture(name: str, platform: Platform) -> bool:
    """Return whether a scanner's architecture name is the platform's architecture."""
    normal = _ARCH_ALIASES.get(name.lower(), name.lower())
    return normal == platform.architecture


def report_for_platform(
    reports: Sequence[Report], platform: Platform, single_platform: bool
) -> Report | None:
    """Return the report that applies to `platform`, or None.

    A report naming an architecture applies to that architecture only. A single report naming
    none applies to every platform; so does a single report for a single-platform image, whose
    architecture check then happens in `check_report`.
    """
    for report in reports:
        if report.architecture and same_architecture(report.architecture, platform):
            return report
    if len(reports) == 1 and (not reports[0].architecture or single_platform):
        return reports[0]
    return None


def check_report(
    report: Report, os_release: OsRelease, platform: Platform, ignore_errors: bool
) -> None:
    """Raise ReportError when the report's OS or architecture contradicts the image.

    With `ignore_errors` the contradiction is logged as a warning instead.
    """
    problems = []
    image_ids = [i for i in (os_release.id, *os_release.id_like) if i]
    if report.os_family and image_ids and report.os_id not in image_ids:
        problems.append(
            f"the report is for {report.os_family} {report.os_version}".rstrip()
            + f" but the image is {os_release.id} {os_release.version_id}".rstrip()
        )
    elif report.os_family and report.os_id == os_release.id and not report.matches_os(
        os_release.id, os_release.version_id
    ):
        problems.append(
            f"the report is for {report.os_family} {report.os_version} but the image is "
            f"{os_release.id} {os_release.version_id}"
        )
    if report.architecture and not same_architecture(report.architecture, platform):
        problems.append(
            f"the report is for {report.architecture} but the image is {platform.architecture}"
        )
    if not problems:
        return
    where = f"report {report.path}" if report.path else "report"
    message = f"{where} does not match the image: " + "; ".join(problems)
    if ignore_errors:
        log.warning("%s (continuing because of --ignore-errors)", message)
        return
    raise ReportError(message + ". Pass the report made for this image")


def warn_version_drift(findings: Sequence[Finding], database: DpkgDatabase) -> None:
    """Log one warning per package whose installed version in the report differs from the
    image's database."""
    warned: set[str] = set()
    for finding in findings:
        if finding.package in warned or not finding.installed_version:
            continue
        installed = database.find(finding.package, finding.architecture or None)
        if installed is not None and installed.version != finding.installed_version:
            warned.add(finding.package)
            log.warning(
                "report lists %s %s but the image has %s; planning from the image's version",
                finding.package, finding.installed_version, installed.version,
            )


def no_fix_entries(report: Report) -> list[PlannedPackage]:
    """Return one `unavailable` package per package whose findings have no known fix.

    Packages that also have a fixable finding are left to the planner.
    """
    fixable = {f.package for f in report.findings}
    vulnerabilities: dict[str, list[str]] = {}
    installed: dict[str, str] = {}
    architecture: dict[str, str] = {}
    for finding in report.no_fix:
        if finding.package in fixable:
            continue
        vulnerabilities.setdefault(finding.package, []).append(finding.vulnerability_id)
        installed[finding.package] = finding.installed_version
        architecture[finding.package] = finding.architecture
    return [
        PlannedPackage(
            name=name, architecture=architecture[name], installed=installed[name], fixed="",
            target="", status=PackageStatus.UNAVAILABLE,
            vulnerabilities=tuple(dict.fromkeys(ids)), reason="no fix available",
        )
        for name, ids in sorted(vulnerabilities.items())
    ]


def plan_failures(plan: Plan) -> list[str]:
    """Return one line for each package that a finding requests a fix for and cannot be updated."""
    failures = []
    for package in plan.packages:
        if package.status is PackageStatus.FAILED or (
            package.status is PackageStatus.UNAVAILABLE and package.fixed
        ):
            reason = f": {package.reason}" if package.reason else ""
            failures.append(
                f"package {package.name} cannot be updated to {package.fixed or 'a fix'}{reason}"
            )
    return failures
