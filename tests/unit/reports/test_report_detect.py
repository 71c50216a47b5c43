"""Format detection and the errors for unreadable or unsupported reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fixtures import REAL_FIXTURES, real_files

from suture.errors import ReportError
from suture.reports import read_report

OTHER_FORMATS = real_files("other-formats", "*")
FORMAT_NAMES = {"cyclonedx": "CycloneDX", "sarif": "SARIF"}


def _error(path: Path, scanner: str = "auto") -> str:
    with pytest.raises(ReportError) as caught:
        read_report(path, scanner=scanner)
    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def test_other_format_fixtures_present(real_fixtures: Path) -> None:
    assert len(OTHER_FORMATS) >= 4


@pytest.mark.parametrize("path", OTHER_FORMATS, ids=lambda p: p.name)
def test_unsupported_real_formats(path: Path) -> None:
    expected_name = FORMAT_NAMES[path.name.split("-")[0]]
    message = _error(path)
    assert f"unsupported report format {expected_name}" in message
    assert "Trivy or Grype JSON" in message


@pytest.mark.parametrize(
    ("folder", "scanner"),
    [("trivy", "trivy"), ("grype", "grype"), ("copa-testdata", "auto")],
)
def test_real_reports_detected(real_fixtures: Path, folder: str, scanner: str) -> None:
    for path in real_files(folder):
        document = json.loads(path.read_text())
        if isinstance(document, dict) and "updates" in document:
            expected = "native"
        elif isinstance(document, dict) and "matches" in document:
            expected = "grype"
        else:
            expected = "trivy"
        if folder != "copa-testdata":
            assert expected == scanner
        if expected == "trivy" and not any(
            r.get("Class") == "os-pkgs" or r.get("Type") in ("debian", "ubuntu")
            for r in (document if isinstance(document, list) else document["Results"])
        ):
            continue
        assert read_report(path).scanner == expected


def test_empty_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    assert "report file is empty" in _error(path)


def test_whitespace_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "blank.json"
    path.write_text("  \n\t\n")
    assert "report file is empty" in _error(path)


def test_malformed_json_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"SchemaVersion": 2, "Results": [')
    message = _error(path)
    assert "not valid JSON" in message
    assert "line 1" in message


def test_truncated_real_report_rejected(tmp_path: Path, real_fixtures: Path) -> None:
    source = real_fixtures / "trivy" / "trivy-v2-debian12-nginx-latest.json"
    path = tmp_path / "truncated.json"
    path.write_bytes(source.read_bytes()[:5000])
    assert "not valid JSON" in _error(path)


def test_binary_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "image.tar"
    path.write_bytes(b"\x1f\x8b\x08\x00\xff\xfe")
    assert "not UTF-8" in _error(path)


@pytest.mark.parametrize("content", ['{"name": "x"}', "[1, 2]", '"text"', "42", "[]"])
def test_unknown_format_rejected(tmp_path: Path, content: str) -> None:
    path = tmp_path / "unknown.json"
    path.write_text(content)
    assert "Trivy or Grype JSON" in _error(path)


def test_missing_file_rejected(tmp_path: Path) -> None:
    assert "cannot read report" in _error(tmp_path / "absent.json")


def test_directory_rejected(tmp_path: Path) -> None:
    assert "is a directory" in _error(tmp_path)


def test_scanner_mismatch_rejected(real_fixtures: Path) -> None:
    path = REAL_FIXTURES / "trivy" / "trivy-v2-debian12-nginx-latest.json"
    message = _error(path, scanner="grype")
    assert "--scanner grype" in message
    assert "Trivy JSON" in message


def test_unknown_scanner_rejected(real_fixtures: Path) -> None:
    path = REAL_FIXTURES / "trivy" / "trivy-v2-debian12-nginx-latest.json"
    assert "unknown scanner 'snyk'" in _error(path, scanner="snyk")
