"""Report model: OS matching and version ordering for several listed fixes."""

from __future__ import annotations

import pytest

from suture.reports import Report
from suture.reports._versions import compare_deb, compare_rpm, select_fixed_version


def _report(family: str, version: str) -> Report:
    return Report(findings=(), scanner="trivy", os_family=family, os_version=version)


@pytest.mark.parametrize(
    ("family", "version", "os_id", "version_id", "matches"),
    [
        ("debian", "12.11", "debian", "12", True),
        ("debian", "12", "debian", "12", True),
        ("debian", "11.3", "debian", "12", False),
        ("debian", "12", "ubuntu", "12", False),
        ("ubuntu", "22.04", "ubuntu", "22.04", True),
        ("ubuntu", "20.04", "ubuntu", "22.04", False),
        ("alpine", "3.22.0", "alpine", "3.22.0", True),
        ("alpine", "3.21.3", "alpine", "3.22.0", False),
        ("redhat", "8.7", "rhel", "8.7", True),
        ("amazon", "2 (Karoo)", "amzn", "2", True),
        ("cbl-mariner", "2.0.20220527", "mariner", "2.0", True),
        ("debian", "trixie/sid", "debian", "", True),
    ],
)
def test_report_matches_os(
    family: str, version: str, os_id: str, version_id: str, matches: bool
) -> None:
    assert _report(family, version).matches_os(os_id, version_id) is matches


@pytest.mark.parametrize(
    ("family", "package_type"),
    [("debian", "deb"), ("ubuntu", "deb"), ("alpine", "apk"), ("redhat", "rpm"), ("plan9", "")],
)
def test_report_package_type(family: str, package_type: str) -> None:
    assert _report(family, "1").package_type == package_type


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("1.0", "1.0", 0),
        ("1.0", "1.1", -1),
        ("1:1.0", "2.0", 1),
        ("1.0~rc1", "1.0", -1),
        ("3.0.17-1~deb12u2", "3.0.17-1", -1),
        ("7.88.1-10+deb12u6", "7.88.1-10+deb12u5", 1),
    ],
)
def test_compare_deb(a: str, b: str, order: int) -> None:
    assert compare_deb(a, b) == order


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("1.0-1", "1.0-1", 0),
        ("1.0-1", "1.0-2", -1),
        ("1.10-1", "1.9-1", 1),
        ("1:1.0-1", "2.0-1", 1),
        ("0:0.7-21.el8_9.1", "0.7-20.el8", 1),
        ("1.0~rc1-1", "1.0-1", -1),
        ("1.0^git1-1", "1.0-1", 1),
        ("1.0^git1-1", "1.0.1-1", -1),
        ("1.0a-1", "1.0-1", 1),
        ("1.0-1.el8", "1.0-1.el8_5", -1),
        ("2.35-2.cm2", "2.35-7.cm2", -1),
    ],
)
def test_compare_rpm(a: str, b: str, order: int) -> None:
    assert compare_rpm(a, b) == order


def test_select_single_version_unchanged() -> None:
    assert select_fixed_version(["9.9"], "1.0", "deb") == "9.9"


def test_select_nothing_listed() -> None:
    assert select_fixed_version([], "1.0", "deb") == ""


def test_select_rpm_release_line() -> None:
    chosen = select_fixed_version(["1:1.1.1k-7.el8_6", "1:1.1.1k-5.el8_5"], "1:1.1.1k-4.el8", "rpm")
    assert chosen == "1:1.1.1k-5.el8_5"
