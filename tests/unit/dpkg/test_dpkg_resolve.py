"""Planning and dependency closure on small hand-written databases and indexes."""

from __future__ import annotations

from typing import Any

import pytest

from suture.ecosystems.base import Finding, PackageStatus, PlannedPackage
from suture.ecosystems.dpkg.database import read_database
from suture.ecosystems.dpkg.index import PackagesIndex, parse_relations
from suture.ecosystems.dpkg.resolve import CandidatePool, plan_packages

STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 2.36-9

Package: libc6
Status: install ok installed
Architecture: i386
Multi-Arch: same
Version: 2.36-9

Package: libssl3
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 3.0.11-1
Depends: libc6 (>= 2.34)

Package: openssl
Status: install ok installed
Architecture: amd64
Version: 3.0.11-1
Depends: libc6 (>= 2.34), libssl3 (= 3.0.11-1)

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-1

Package: curl
Status: install ok installed
Architecture: amd64
Version: 7.88.1-10
Depends: libc6 (>= 2.17)

Package: vim
Status: hold ok installed
Architecture: amd64
Version: 2:9.0-1
"""

OLDTOOL = """
Package: oldtool
Status: install ok installed
Architecture: amd64
Version: 1.0
Depends: libssl3 (<< 3.0.12)
"""

PACKAGES_AMD64 = """\
Package: libc6
Version: 2.36-9+deb12u4
Architecture: amd64
Multi-Arch: same
Source: glibc
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u4_amd64.deb
Size: 100
SHA256: {h}

Package: libssl3
Version: 3.0.13-1
Architecture: amd64
Source: openssl
Depends: libc6 (>= 2.36-9+deb12u4)
Filename: pool/main/o/openssl/libssl3_3.0.13-1_amd64.deb
Size: 200
SHA256: {h}

Package: openssl
Version: 3.0.13-1
Architecture: amd64
Depends: libc6 (>= 2.34), libssl3 (= 3.0.13-1)
Filename: pool/main/o/openssl/openssl_3.0.13-1_amd64.deb
Size: 300
SHA256: {h}

Package: tzdata
Version: 2024b-1
Architecture: all
Filename: pool/main/t/tzdata/tzdata_2024b-1_all.deb
Size: 50
SHA256: {h}

Package: curl
Version: 7.88.1-10+deb12u5
Architecture: amd64
Depends: libc6 (>= 2.17), libcurl4 (= 7.88.1-10+deb12u5)
Filename: pool/main/c/curl/curl_7.88.1-10+deb12u5_amd64.deb
Size: 400
SHA256: {h}

Package: libcurl4
Version: 7.88.1-10+deb12u5
Architecture: amd64
Source: curl
Depends: libc6 (>= 2.17)
Filename: pool/main/c/curl/libcurl4_7.88.1-10+deb12u5_amd64.deb
Size: 500
SHA256: {h}

Package: vim
Version: 2:9.0-2
Architecture: amd64
Filename: pool/main/v/vim/vim_9.0-2_amd64.deb
Size: 600
SHA256: {h}

Package: oldtool
Version: 1.0
Architecture: amd64
Depends: libssl3 (<< 3.0.12)
Filename: pool/main/o/oldtool/oldtool_1.0_amd64.deb
Size: 10
SHA256: {h}
""".format(h="a" * 64)

PACKAGES_I386 = """\
Package: libc6
Version: 2.36-9+deb12u4
Architecture: i386
Multi-Arch: same
Source: glibc
Filename: pool/main/g/glibc/libc6_2.36-9+deb12u4_i386.deb
Size: 100
SHA256: {h}
""".format(h="b" * 64)


def _plan(
    memory_fs: type[Any], findings: list[Finding] | None, status: str = STATUS
) -> dict[str, PlannedPackage]:
    database = read_database(memory_fs({"/var/lib/dpkg/status": status}))
    pool = CandidatePool(
        {
            "amd64": [PackagesIndex(PACKAGES_AMD64, base_url="http://repo/debian", suite="s")],
            "i386": [PackagesIndex(PACKAGES_I386, base_url="http://repo/debian", suite="s")],
        },
        database.native_architecture,
    )
    planned, downloads = plan_packages(database, pool, findings)
    for package in planned:
        if package.status is PackageStatus.UPDATE:
            assert f"{package.name}:{package.architecture}" in downloads
    return {f"{p.name}:{p.architecture}": p for p in planned}


def _finding(package: str, fixed: str, vulnerability: str = "CVE-1") -> Finding:
    return Finding(package, "", fixed, vulnerability)


def test_parse_relations_alternatives_and_arch() -> None:
    groups = parse_relations("a (>= 1.0) | b:any, c [amd64] <!nocheck>, d:i386 (<< 2~)")
    assert [[str(r) for r in group] for group in groups] == [
        ["a (>= 1.0)", "b:any"],
        ["c"],
        ["d:i386 (<< 2~)"],
    ]


def test_findings_statuses(memory_fs: type[Any]) -> None:
    plan = _plan(
        memory_fs,
        [
            _finding("tzdata", "2024b-1"),
            _finding("vim", "2:9.0-2"),
            _finding("curl", "7.88.1-99"),
            _finding("nginx", "1.0"),
            _finding("libc6", "2.30"),
        ],
    )
    assert plan["tzdata:all"].status is PackageStatus.UPDATE
    assert plan["tzdata:all"].target == "2024b-1"
    assert plan["vim:amd64"].status is PackageStatus.HELD
    assert plan["curl:amd64"].status is PackageStatus.UNAVAILABLE
    assert "7.88.1-10+deb12u5" in plan["curl:amd64"].reason
    assert "7.88.1-99" in plan["curl:amd64"].reason
    assert plan["nginx:"].status is PackageStatus.NOT_INSTALLED
    assert plan["libc6:amd64"].status is PackageStatus.UP_TO_DATE


def test_highest_fixed_version_rules(memory_fs: type[Any]) -> None:
    plan = _plan(
        memory_fs,
        [_finding("tzdata", "2024a-2", "CVE-1"), _finding("tzdata", "2024b-1", "CVE-2")],
    )
    assert plan["tzdata:all"].fixed == "2024b-1"
    assert plan["tzdata:all"].vulnerabilities == ("CVE-1", "CVE-2")


def test_required_and_multi_arch_same(memory_fs: type[Any]) -> None:
    plan = _plan(memory_fs, [_finding("libssl3", "3.0.13-1")])
    assert plan["libc6:amd64"].status is PackageStatus.UPDATE
    assert plan["libc6:amd64"].reason == "required by libssl3"
    assert plan["libc6:i386"].status is PackageStatus.UPDATE
    assert "Multi-Arch: same" in plan["libc6:i386"].reason


def test_lock_step_binaries_move_together(memory_fs: type[Any]) -> None:
    plan = _plan(memory_fs, [_finding("libssl3", "3.0.13-1")])
    assert plan["openssl:amd64"].status is PackageStatus.UPDATE
    assert plan["openssl:amd64"].target == "3.0.13-1"
    assert plan["openssl:amd64"].reason == "required by libssl3 (same source)"


def test_unmovable_dependent_fails_request(memory_fs: type[Any]) -> None:
    # oldtool needs libssl3 << 3.0.12 and has no newer version, so libssl3 cannot move.
    plan = _plan(memory_fs, [_finding("libssl3", "3.0.13-1")], STATUS + OLDTOOL)
    assert plan["libssl3:amd64"].status is PackageStatus.FAILED
    assert "breaks oldtool 1.0, which depends on libssl3 (<< 3.0.12)" in (
        plan["libssl3:amd64"].reason
    )
    assert "openssl:amd64" not in plan
    assert "libc6:amd64" not in plan


def test_new_dependency_added_for_findings(memory_fs: type[Any]) -> None:
    plan = _plan(memory_fs, [_finding("curl", "7.88.1-10+deb12u5")])
    assert plan["libcurl4:amd64"].status is PackageStatus.UPDATE
    assert plan["libcurl4:amd64"].installed == ""
    assert plan["libcurl4:amd64"].reason == "new dependency of curl"


def test_update_all_keeps_back_new_dependency(memory_fs: type[Any]) -> None:
    plan = _plan(memory_fs, None)
    assert plan["curl:amd64"].status is PackageStatus.HELD
    assert "kept back" in plan["curl:amd64"].reason
    assert "libcurl4:amd64" not in plan
    assert plan["vim:amd64"].status is PackageStatus.HELD
    assert plan["tzdata:all"].status is PackageStatus.UPDATE


@pytest.mark.parametrize("field", ["Breaks", "Conflicts"])
def test_breaks_against_final_set(memory_fs: type[Any], field: str) -> None:
    status = STATUS.replace(
        "Package: vim\nStatus: hold ok installed\n",
        f"Package: vim\nStatus: hold ok installed\n{field}: tzdata (>= 2024b)\n",
    )
    database = read_database(memory_fs({"/var/lib/dpkg/status": status}))
    pool = CandidatePool(
        {"amd64": [PackagesIndex(PACKAGES_AMD64, base_url="http://repo/debian", suite="s")]},
        "amd64",
    )
    planned, _ = plan_packages(database, pool, [_finding("tzdata", "2024b-1")])
    tzdata = next(p for p in planned if p.name == "tzdata")
    assert tzdata.status is PackageStatus.FAILED
    assert f"vim 2:9.0-1 {field} tzdata (>= 2024b)" in tzdata.reason


def test_conflicts_with_virtual_provider(memory_fs: type[Any]) -> None:
    status = STATUS + (
        "\nPackage: mta\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n"
        "Provides: mail-transport-agent\n"
    )
    packages = PACKAGES_AMD64.replace(
        "Package: tzdata\nVersion: 2024b-1\n",
        "Package: tzdata\nVersion: 2024b-1\nConflicts: mail-transport-agent\n",
    )
    database = read_database(memory_fs({"/var/lib/dpkg/status": status}))
    pool = CandidatePool(
        {"amd64": [PackagesIndex(packages, base_url="http://repo/debian", suite="s")]}, "amd64"
    )
    planned, _ = plan_packages(database, pool, [_finding("tzdata", "2024b-1")])
    tzdata = next(p for p in planned if p.name == "tzdata")
    assert tzdata.status is PackageStatus.FAILED
    assert "Conflicts mail-transport-agent, and the plan has mta 1" in tzdata.reason


def test_fixed_version_alternatives(memory_fs: type[Any]) -> None:
    # Either listed version fixes the finding; the lowest above the installed one counts.
    plan = _plan(memory_fs, [_finding("tzdata", "2024a-2, 2025a-1")])
    assert plan["tzdata:all"].fixed == "2024a-2"
    assert plan["tzdata:all"].status is PackageStatus.UPDATE


def test_invalid_fixed_version_fails(memory_fs: type[Any]) -> None:
    plan = _plan(memory_fs, [_finding("tzdata", "not a version")])
    assert plan["tzdata:all"].status is PackageStatus.FAILED
    assert "'not a version'" in plan["tzdata:all"].reason


def test_no_fixed_version_unavailable(memory_fs: type[Any]) -> None:
    plan = _plan(memory_fs, [_finding("tzdata", "")])
    assert plan["tzdata:all"].status is PackageStatus.UNAVAILABLE
    assert plan["tzdata:all"].reason == "the report lists no fixed version"
