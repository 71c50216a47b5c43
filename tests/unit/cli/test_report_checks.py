"""Tests for matching reports to platforms and checking them against the image."""

from __future__ import annotations

import pytest

from suture.ecosystems.base import Finding, PackageStatus, Plan, PlannedPackage
from suture.ecosystems.dpkg.detect import OsRelease
from suture.errors import ReportError
from suture.image.model import Platform
from suture.patch.report_checks import (
    check_report,
    no_fix_entries,
    plan_failures,
    report_for_platform,
    same_architecture,
)
from suture.reports import Report

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")
BOOKWORM = OsRelease(id="debian", version_id="12", version_codename="bookworm")


def report(arch: str | None = "amd64", family: str = "debian", version: str = "12.5",
           no_fix: tuple[Finding, ...] = ()) -> Report:
    finding = Finding("zlib1g", "1:1.2.13.dfsg-1", "1:1.2.13.dfsg-1+deb12u1", "CVE-2026-0001")
    return Report(findings=(finding,), scanner="trivy", os_family=family, os_version=version,
                  architecture=arch, no_fix=no_fix, path=f"{arch}.json")


@pytest.mark.parametrize(
    ("name", "platform", "expected"),
    [("amd64", AMD64, True), ("x86_64", AMD64, True), ("aarch64", ARM64, True),
     ("arm64", AMD64, False), ("AMD64", AMD64, True)],
)
def test_same_architecture(name: str, platform: Platform, expected: bool) -> None:
    assert same_architecture(name, platform) is expected


def test_report_directory_matches_by_architecture() -> None:
    reports = [report("amd64"), report("aarch64")]
    assert report_for_platform(reports, ARM64, single_platform=False) is reports[1]
    assert report_for_platform(reports, AMD64, single_platform=False) is reports[0]


def test_single_report_without_architecture_applies_everywhere() -> None:
    reports = [report(None)]
    assert report_for_platform(reports, ARM64, single_platform=False) is reports[0]


def test_single_report_names_one_platform_of_index() -> None:
    reports = [report("amd64")]
    assert report_for_platform(reports, ARM64, single_platform=False) is None


def test_single_image_gets_its_report_for_checking() -> None:
    reports = [report("arm64")]
    assert report_for_platform(reports, AMD64, single_platform=True) is reports[0]


def test_check_report_matching_passes() -> None:
    check_report(report(), BOOKWORM, AMD64, ignore_errors=False)


def test_check_report_other_family_names_both() -> None:
    with pytest.raises(ReportError) as caught:
        check_report(report(family="ubuntu", version="22.04"), BOOKWORM, AMD64, False)
    assert "ubuntu 22.04" in str(caught.value)
    assert "debian 12" in str(caught.value)


def test_check_report_other_release() -> None:
    with pytest.raises(ReportError, match=r"debian 11\.9"):
        check_report(report(version="11.9"), BOOKWORM, AMD64, False)


def test_check_report_other_architecture() -> None:
    with pytest.raises(ReportError, match="arm64"):
        check_report(report("arm64"), BOOKWORM, AMD64, False)


def test_check_report_ignore_errors_warns(caplog: pytest.LogCaptureFixture) -> None:
    check_report(report("arm64"), BOOKWORM, AMD64, ignore_errors=True)
    assert "does not match the image" in caplog.text


def test_no_fix_entries_skip_fixable_packages() -> None:
    no_fix = (
        Finding("zlib1g", "1:1.2.13.dfsg-1", "", "CVE-2026-0002"),
        Finding("libc6", "2.36-9", "", "CVE-2026-0003"),
        Finding("libc6", "2.36-9", "", "CVE-2026-0004"),
    )
    entries = no_fix_entries(report(no_fix=no_fix))
    assert [e.name for e in entries] == ["libc6"]
    assert entries[0].vulnerabilities == ("CVE-2026-0003", "CVE-2026-0004")
    assert entries[0].status is PackageStatus.UNAVAILABLE
    assert entries[0].reason == "no fix available"


def test_plan_failures_lists_unreachable_fixes() -> None:
    packages = (
        PlannedPackage("a", "amd64", "1", "2", "", PackageStatus.UNAVAILABLE,
                       reason="repository has only 1.5"),
        PlannedPackage("b", "amd64", "1", "", "", PackageStatus.UNAVAILABLE,
                       reason="no fix available"),
        PlannedPackage("c", "amd64", "1", "2", "2", PackageStatus.UPDATE),
        PlannedPackage("d", "amd64", "1", "2", "", PackageStatus.HELD),
    )
    failures = plan_failures(Plan("dpkg", "debian bookworm", packages))
    assert failures == ["package a cannot be updated to 2: repository has only 1.5"]
