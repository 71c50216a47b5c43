"""Copa update manifest reader (v1alpha1 and v1alpha2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import REAL_FIXTURES

from suture.errors import ReportError
from suture.reports import read_report

COMPLEX_REPORT = REAL_FIXTURES / "copa-testdata" / "copa-frontend-complex-report.json"


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(document))
    return path


def test_copa_real_manifest(real_fixtures: Path) -> None:
    document = json.loads(COMPLEX_REPORT.read_text())
    report = read_report(COMPLEX_REPORT)

    expected = [
        (u["name"], u["installedVersion"], u["fixedVersion"], u["vulnerabilityID"])
        for u in document["updates"]
    ]
    found = [
        (f.package, f.installed_version, f.fixed_version, f.vulnerability_id)
        for f in report.findings
    ]
    assert found == expected
    assert report.scanner == "native"
    assert report.os_family == document["metadata"]["os"]["type"]
    assert report.os_version == document["metadata"]["os"]["version"]
    assert report.architecture == document["metadata"]["config"]["arch"]


def test_copa_real_manifest_without_api_version_noted(real_fixtures: Path) -> None:
    report = read_report(COMPLEX_REPORT, scanner="native")
    assert report.notes[0] == "update manifest has no apiVersion; read as v1alpha1"


def test_copa_v1alpha1(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "apiVersion": "v1alpha1",
            "metadata": {"os": {"type": "debian", "version": "12"}, "config": {"arch": "arm64"}},
            "updates": [
                {
                    "name": "libssl3",
                    "installedVersion": "3.0.15-1~deb12u1",
                    "fixedVersion": "3.0.17-1~deb12u2",
                    "vulnerabilityID": "CVE-2099-2000",
                },
                {
                    "name": "tar",
                    "installedVersion": "1.34+dfsg-1.2",
                    "fixedVersion": "",
                    "vulnerabilityID": "CVE-2099-2001",
                },
            ],
            "nodeUpdates": [{"name": "lodash", "fixedVersion": "4.17.21"}],
        },
    )
    report = read_report(path)
    assert [f.package for f in report.findings] == ["libssl3"]
    assert [f.package for f in report.no_fix] == ["tar"]
    assert report.architecture == "arm64"
    assert report.notes[0] == "ignored 1 language-package finding (node-pkg)"


def test_copa_v1alpha2(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "apiVersion": "v1alpha2",
            "metadata": {
                "os": {"type": "ubuntu", "version": "22.04"},
                "config": {"arch": "arm", "variant": "v7"},
            },
            "osupdates": [
                {
                    "name": "openssl",
                    "installedVersion": "3.0.2-0ubuntu1.10",
                    "fixedVersion": "3.0.2-0ubuntu1.12",
                    "vulnerabilityID": "CVE-2099-2002",
                    "type": "ubuntu",
                    "class": "os-pkgs",
                }
            ],
            "langupdates": [
                {
                    "name": "requests",
                    "installedVersion": "2.25.1",
                    "fixedVersion": "2.31.0",
                    "vulnerabilityID": "CVE-2099-2003",
                    "type": "python-pkg",
                    "class": "lang-pkgs",
                }
            ],
        },
    )
    report = read_report(path, scanner="native")
    assert [(f.package, f.fixed_version) for f in report.findings] == [
        ("openssl", "3.0.2-0ubuntu1.12")
    ]
    assert report.findings[0].ecosystem == "deb"
    assert report.notes == ("ignored 1 language-package finding (python-pkg)",)


def test_copa_v1alpha2_mixed_case_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        {
            "apiVersion": "v1alpha2",
            "metadata": {"os": {"type": "debian", "version": "12"}, "config": {"arch": "amd64"}},
            "osUpdates": [
                {
                    "name": "curl",
                    "installedVersion": "7.88.1-10+deb12u5",
                    "fixedVersion": "7.88.1-10+deb12u6",
                    "vulnerabilityID": "CVE-2099-2004",
                }
            ],
        },
    )
    assert [f.package for f in read_report(path).findings] == ["curl"]


def test_copa_unknown_api_version_rejected(tmp_path: Path) -> None:
    path = _write(
        tmp_path, {"apiVersion": "v2", "metadata": {"os": {"type": "debian"}}, "updates": []}
    )
    with pytest.raises(ReportError, match="unsupported update manifest apiVersion 'v2'"):
        read_report(path)


def test_copa_missing_os_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, {"apiVersion": "v1alpha1", "metadata": {}, "updates": []})
    with pytest.raises(ReportError, match=r"metadata\.os\.type"):
        read_report(path)
