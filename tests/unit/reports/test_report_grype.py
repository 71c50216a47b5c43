"""Grype JSON reader, run against every real Grype report and hand-made edge cases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import real_files

from suture.errors import ReportError
from suture.reports import read_report

GRYPE_REPORTS = real_files("grype")


def _expected(path: Path) -> dict[str, Any]:
    """Derive what the reader should find with a direct pass over the JSON."""
    document = json.loads(path.read_text())
    fixable: dict[tuple[str, str], set[str]] = {}
    unfixable: set[tuple[str, str]] = set()
    language = 0
    for match in document["matches"]:
        artifact = match["artifact"]
        vulnerability = match["vulnerability"]
        if artifact["type"] not in ("deb", "apk", "rpm"):
            language += 1
            continue
        key = (artifact["name"], vulnerability["id"])
        fix = vulnerability.get("fix")
        if fix is None and "fixedInVersion" in vulnerability:
            versions = [vulnerability["fixedInVersion"]]
        elif fix is None:
            versions = []
        else:
            versions = fix.get("versions") or [] if fix.get("state") == "fixed" else []
        if versions:
            fixable.setdefault(key, set()).update(versions)
        else:
            unfixable.add(key)
    return {"fixable": fixable, "unfixable": unfixable, "language": language}


def test_real_grype_reports_present(real_fixtures: Path) -> None:
    assert len(real_files("grype")) >= 4


@pytest.mark.parametrize("path", GRYPE_REPORTS, ids=lambda p: p.name)
def test_grype_real_report_findings(path: Path) -> None:
    expected = _expected(path)
    report = read_report(path)

    assert {(f.package, f.vulnerability_id) for f in report.findings} == set(expected["fixable"])
    for finding in report.findings:
        assert finding.fixed_version in expected["fixable"][
            (finding.package, finding.vulnerability_id)
        ]
    assert {(f.package, f.vulnerability_id) for f in report.no_fix} == expected["unfixable"]
    assert report.scanner == "grype"


@pytest.mark.parametrize("path", GRYPE_REPORTS, ids=lambda p: p.name)
def test_grype_real_report_os_and_image(path: Path) -> None:
    document = json.loads(path.read_text())
    report = read_report(path)
    target = document["source"]["target"]

    assert report.os_family == document["distro"]["name"]
    assert report.os_version == document["distro"]["version"]
    assert report.architecture == target.get("architecture")
    assert report.image_reference == target["userInput"]
    digests = target.get("repoDigests") or []
    expected_digest = digests[0].split("@")[1] if digests else target["manifestDigest"]
    assert report.image_digest == expected_digest


@pytest.mark.parametrize("path", GRYPE_REPORTS, ids=lambda p: p.name)
def test_grype_language_findings_noted(path: Path) -> None:
    expected = _expected(path)
    report = read_report(path)
    language_notes = [note for note in report.notes if "language-package" in note]
    if expected["language"]:
        assert language_notes == [
            note for note in language_notes if f"ignored {expected['language']} " in note
        ]
        assert len(language_notes) == 1
    else:
        assert language_notes == []


def test_grype_purl_gives_architecture(real_fixtures: Path) -> None:
    report = read_report(real_fixtures / "grype" / "grype-debian12-nginx-latest.json")
    assert report.findings
    assert {f.architecture for f in report.findings} == {"amd64"}
    assert {f.ecosystem for f in report.findings} == {"deb"}


def test_grype_rpm_package_type(real_fixtures: Path) -> None:
    report = read_report(real_fixtures / "grype" / "grype-rhel8.7-kafka-connect-strimzi.json")
    assert report.findings
    assert {f.ecosystem for f in report.findings} == {"rpm"}
    assert report.os_id == "rhel"


def _match(name: str, version: str, fix: dict[str, Any] | None, **artifact: Any) -> dict[str, Any]:
    vulnerability: dict[str, Any] = {"id": "CVE-2099-1000"}
    if fix is not None:
        vulnerability["fix"] = fix
    return {
        "vulnerability": vulnerability,
        "artifact": {"name": name, "version": version, "type": "deb", **artifact},
    }


def _write(tmp_path: Path, document: dict[str, Any]) -> Path:
    path = tmp_path / "grype.json"
    path.write_text(json.dumps(document))
    return path


def test_grype_several_fix_versions(tmp_path: Path) -> None:
    fix = {"state": "fixed", "versions": ["3.5.1-1", "3.0.17-1~deb12u2"]}
    path = _write(
        tmp_path,
        {
            "matches": [_match("libssl3", "3.0.15-1~deb12u1", fix)],
            "distro": {"name": "debian", "version": "12"},
        },
    )
    assert [f.fixed_version for f in read_report(path).findings] == ["3.0.17-1~deb12u2"]


@pytest.mark.parametrize("state", ["not-fixed", "wont-fix", "unknown", ""])
def test_grype_unfixed_states(tmp_path: Path, state: str) -> None:
    path = _write(
        tmp_path,
        {
            "matches": [_match("bash", "5.2.15-2", {"state": state, "versions": []})],
            "distro": {"name": "debian", "version": "12"},
        },
    )
    report = read_report(path)
    assert report.findings == ()
    assert len(report.no_fix) == 1


def test_grype_distro_from_purl(tmp_path: Path) -> None:
    fix = {"state": "fixed", "versions": ["5.2.15-2+b1"]}
    purl = "pkg:deb/debian/bash@5.2.15-2?arch=arm64&distro=debian-12"
    path = _write(tmp_path, {"matches": [_match("bash", "5.2.15-2", fix, purl=purl)]})
    report = read_report(path)
    assert (report.os_family, report.os_version) == ("debian", "12")
    assert report.findings[0].architecture == "arm64"


def test_grype_epoch_from_metadata(tmp_path: Path) -> None:
    fix = {"state": "fixed", "versions": ["32:9.11.36-8.el8"]}
    match = _match("bind-libs", "9.11.36-5.el8", fix, metadata={"epoch": 32})
    match["artifact"]["type"] = "rpm"
    path = _write(tmp_path, {"matches": [match], "distro": {"name": "redhat", "version": "8.7"}})
    assert read_report(path).findings[0].installed_version == "32:9.11.36-5.el8"


def test_grype_without_distro_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, {"matches": [_match("bash", "5.2.15-2", None)]})
    with pytest.raises(ReportError, match="does not name the OS"):
        read_report(path)


def test_grype_bad_fix_versions_rejected(tmp_path: Path) -> None:
    fix = {"state": "fixed", "versions": [1]}
    path = _write(
        tmp_path,
        {"matches": [_match("bash", "5", fix)], "distro": {"name": "debian", "version": "12"}},
    )
    with pytest.raises(ReportError, match=r"matches\[0\]\.vulnerability\.fix\.versions\[0\]"):
        read_report(path)
