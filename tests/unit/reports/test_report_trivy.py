"""Trivy JSON reader, run against every real Trivy report and hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import REAL_FIXTURES, real_files

from suture.errors import ReportError
from suture.reports import read_report

# OS result types, written out here independently of the reader's own list.
OS_TYPES = {"debian", "ubuntu", "alpine", "amazon", "redhat", "rocky", "cbl-mariner", "centos"}

TRIVY_REPORTS = real_files("trivy")
# Copa's Trivy-shaped test inputs. The two with only language results are error cases. Like
# real_files, the lists leave out files that are absent, so those cases skip instead of failing.
COPA_TRIVY_SHAPED = [p for p in [REAL_FIXTURES / "copa-testdata" / "copa-pkg_types_test.json"]
                     if p.exists()]
LANGUAGE_ONLY = [p for p in [
    REAL_FIXTURES / "copa-testdata" / "copa-trivy_dotnet.json",
    REAL_FIXTURES / "copa-testdata" / "copa-trivy_python_venv.json",
] if p.exists()]


def _results(document: Any) -> list[dict[str, Any]]:
    return document if isinstance(document, list) else document.get("Results") or []


def _is_os(result: dict[str, Any]) -> bool:
    if result.get("Class"):
        return bool(result["Class"] == "os-pkgs")
    return result.get("Type") in OS_TYPES


def _expected(path: Path) -> dict[str, Any]:
    """Derive what the reader should find with a direct pass over the JSON."""
    document = json.loads(path.read_text())
    fixable: dict[tuple[str, str, str], set[str]] = {}
    unfixable: set[tuple[str, str, str]] = set()
    language = 0
    for result in _results(document):
        vulnerabilities = result.get("Vulnerabilities") or []
        if not _is_os(result):
            language += len(vulnerabilities)
            continue
        for v in vulnerabilities:
            key = (v["PkgName"], v["InstalledVersion"], v["VulnerabilityID"])
            fixed = [x.strip() for x in (v.get("FixedVersion") or "").split(",") if x.strip()]
            if fixed:
                fixable.setdefault(key, set()).update(fixed)
            elif v.get("Status") != "not_affected":
                unfixable.add(key)
    return {"fixable": fixable, "unfixable": unfixable, "language": language}


def test_real_trivy_reports_present(real_fixtures: Path) -> None:
    assert len(real_files("trivy")) >= 11


@pytest.mark.parametrize("path", TRIVY_REPORTS + COPA_TRIVY_SHAPED, ids=lambda p: p.name)
def test_trivy_real_report_findings(path: Path) -> None:
    expected = _expected(path)
    report = read_report(path)

    found = {(f.package, f.installed_version, f.vulnerability_id) for f in report.findings}
    assert found == set(expected["fixable"])
    for finding in report.findings:
        listed = expected["fixable"][
            (finding.package, finding.installed_version, finding.vulnerability_id)
        ]
        assert finding.fixed_version in listed
    no_fix = {(f.package, f.installed_version, f.vulnerability_id) for f in report.no_fix}
    assert no_fix == expected["unfixable"]
    assert report.scanner == "trivy"


@pytest.mark.parametrize("path", TRIVY_REPORTS + COPA_TRIVY_SHAPED, ids=lambda p: p.name)
def test_trivy_real_report_os(path: Path) -> None:
    document = json.loads(path.read_text())
    report = read_report(path)
    if isinstance(document, dict) and document.get("Metadata", {}).get("OS"):
        assert report.os_family == document["Metadata"]["OS"]["Family"]
        assert report.os_version == document["Metadata"]["OS"]["Name"]
        architecture = document["Metadata"].get("ImageConfig", {}).get("architecture")
        assert report.architecture == architecture
    else:
        # Schema 1: the OS is only in the target text "name (family version)".
        target = _results(document)[0]["Target"]
        family, version = target.rsplit("(", 1)[1].rstrip(")").split(" ", 1)
        assert (report.os_family, report.os_version) == (family, version)
        assert report.architecture is None


@pytest.mark.parametrize("path", TRIVY_REPORTS + COPA_TRIVY_SHAPED, ids=lambda p: p.name)
def test_trivy_language_findings_noted(path: Path) -> None:
    expected = _expected(path)
    report = read_report(path)
    language_notes = [note for note in report.notes if "language-package" in note]
    if expected["language"]:
        assert len(language_notes) == 1
        assert f"ignored {expected['language']} " in language_notes[0]
    else:
        assert language_notes == []


@pytest.mark.parametrize("path", LANGUAGE_ONLY, ids=lambda p: p.name)
def test_trivy_language_only_report_rejected(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"real report fixture not found: {path}")
    with pytest.raises(ReportError) as caught:
        read_report(path)
    message = str(caught.value)
    assert str(path) in message
    assert "no OS package results" in message
    assert "\n" not in message


def test_trivy_nginx_report_image_identity(real_fixtures: Path) -> None:
    path = real_fixtures / "trivy" / "trivy-v2-debian12-nginx-latest.json"
    document = json.loads(path.read_text())
    report = read_report(path)
    assert report.image_reference == document["ArtifactName"]
    assert report.image_digest == document["Metadata"]["RepoDigests"][0].split("@")[1]


def test_trivy_purl_gives_architecture(real_fixtures: Path) -> None:
    path = real_fixtures / "trivy" / "trivy-v2-debian12-nginx-latest.json"
    report = read_report(path)
    assert report.findings
    assert {f.architecture for f in report.findings} == {"amd64"}


def test_trivy_empty_artifact_name_is_none(real_fixtures: Path) -> None:
    report = read_report(real_fixtures / "trivy" / "trivy-v2-debian10-all-statuses.json")
    assert report.image_reference is None
    assert report.image_digest is None


def _write_report(tmp_path: Path, vulnerabilities: list[dict[str, Any]]) -> Path:
    document = {
        "SchemaVersion": 2,
        "ArtifactName": "example.test/app:1",
        "Metadata": {"OS": {"Family": "debian", "Name": "12.5"}},
        "Results": [
            {
                "Target": "example.test/app:1 (debian 12.5)",
                "Class": "os-pkgs",
                "Type": "debian",
                "Vulnerabilities": vulnerabilities,
            }
        ],
    }
    path = tmp_path / "report.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("installed", "listed", "chosen"),
    [
        ("3.0.15-1~deb12u1", "3.0.17-1~deb12u2, 3.5.1-1", "3.0.17-1~deb12u2"),
        ("3.0.15-1~deb12u1", "3.5.1-1, 3.0.17-1~deb12u2", "3.0.17-1~deb12u2"),
        ("3.5.0-1", "3.0.17-1~deb12u2, 3.5.1-1", "3.5.1-1"),
        ("3.6.0-1", "3.0.17-1~deb12u2, 3.5.1-1", "3.5.1-1"),
        ("1:2.0-1", "1.9-1, 1:2.0-2", "1:2.0-2"),
        ("2.0-1", "2.0-2", "2.0-2"),
    ],
)
def test_trivy_several_fixed_versions(
    tmp_path: Path, installed: str, listed: str, chosen: str
) -> None:
    path = _write_report(
        tmp_path,
        [
            {
                "VulnerabilityID": "CVE-2099-0001",
                "PkgName": "libssl3",
                "InstalledVersion": installed,
                "FixedVersion": listed,
                "Status": "fixed",
            }
        ],
    )
    report = read_report(path)
    assert [f.fixed_version for f in report.findings] == [chosen]


@pytest.mark.parametrize("status", ["will_not_fix", "fix_deferred", "affected", "end_of_life"])
def test_trivy_status_without_fix_is_no_fix(tmp_path: Path, status: str) -> None:
    path = _write_report(
        tmp_path,
        [
            {
                "VulnerabilityID": "CVE-2099-0002",
                "PkgName": "zlib1g",
                "InstalledVersion": "1:1.2.13.dfsg-1",
                "Status": status,
            }
        ],
    )
    report = read_report(path)
    assert report.findings == ()
    assert [f.package for f in report.no_fix] == ["zlib1g"]


def test_trivy_duplicate_findings_merged(tmp_path: Path) -> None:
    entry = {
        "VulnerabilityID": "CVE-2099-0003",
        "PkgName": "curl",
        "InstalledVersion": "7.88.1-10+deb12u5",
        "FixedVersion": "7.88.1-10+deb12u6",
    }
    report = read_report(_write_report(tmp_path, [entry, dict(entry)]))
    assert len(report.findings) == 1


def test_trivy_no_os_result_rejected(tmp_path: Path) -> None:
    path = tmp_path / "lang.json"
    path.write_text(
        json.dumps(
            {
                "SchemaVersion": 2,
                "Results": [{"Target": "package-lock.json", "Class": "lang-pkgs", "Type": "npm"}],
            }
        )
    )
    with pytest.raises(ReportError, match="no OS package results"):
        read_report(path)


def test_trivy_wrong_field_type_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"SchemaVersion": 2, "Results": "not a list"}))
    with pytest.raises(ReportError) as caught:
        read_report(path)
    assert "Results" in str(caught.value)
    assert "expected an array" in str(caught.value)


def test_trivy_missing_package_name_rejected(tmp_path: Path) -> None:
    path = _write_report(tmp_path, [{"VulnerabilityID": "CVE-2099-0004", "FixedVersion": "1"}])
    with pytest.raises(ReportError, match=r"Results\[0\]\.Vulnerabilities\[0\]"):
        read_report(path)


def test_trivy_schema1_without_class(tmp_path: Path) -> None:
    path = tmp_path / "v1.json"
    path.write_text(
        json.dumps(
            [
                {
                    "Target": "app (ubuntu 22.04)",
                    "Type": "ubuntu",
                    "Vulnerabilities": [
                        {
                            "VulnerabilityID": "CVE-2099-0005",
                            "PkgName": "bash",
                            "InstalledVersion": "5.1-6ubuntu1",
                            "FixedVersion": "5.1-6ubuntu1.1",
                        }
                    ],
                },
                {"Target": "Gemfile.lock", "Type": "bundler", "Vulnerabilities": [{}, {}]},
            ]
        )
    )
    report = read_report(path)
    assert (report.os_family, report.os_version) == ("ubuntu", "22.04")
    assert [f.fixed_version for f in report.findings] == ["5.1-6ubuntu1.1"]
    assert report.notes == ("ignored 2 language-package findings (bundler)",)
