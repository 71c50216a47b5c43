"""Load a report file as JSON and tell which scanner format it is.

Supported: Trivy JSON (schema 2 object, schema 1 top-level array), Grype JSON and Copa update
manifests. CycloneDX, SARIF and OSV-Scanner documents are recognised so the error can name what
the file is and what to pass instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from suture.errors import ReportError

# Reports of large images run to a few MB, so anything near this size is not a scanner report.
MAX_REPORT_BYTES = 256 * 1024 * 1024

TRIVY = "trivy"
GRYPE = "grype"
NATIVE = "native"
SCANNERS = (TRIVY, GRYPE, NATIVE)

_SUPPORTED = "Use a Trivy or Grype JSON report, or a Copa update manifest with --scanner native"


def load_document(path: Path) -> Any:
    """Read and parse a report file, raising ReportError for unreadable, empty or invalid JSON."""
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            raise ReportError(
                f"{path}: report is {size} bytes, larger than the {MAX_REPORT_BYTES}-byte limit. "
                "Pass the scanner's JSON report for one image"
            )
        data = path.read_bytes()
    except IsADirectoryError as error:
        raise ReportError(f"{path}: is a directory, expected a report file") from error
    except OSError as error:
        raise ReportError(f"{path}: cannot read report: {error.strerror or error}") from error

    if not data.strip():
        raise ReportError(f"{path}: report file is empty. {_SUPPORTED}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ReportError(
            f"{path}: report is not UTF-8 text (invalid byte at offset {error.start}). "
            f"{_SUPPORTED}"
        ) from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ReportError(
            f"{path}: report is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}"
        ) from error
    except RecursionError as error:
        raise ReportError(f"{path}: report JSON is nested too deeply to read") from error


def detect_format(document: Any, path: Path | str) -> str:
    """Return "trivy", "grype" or "native" for a parsed report, or raise ReportError."""
    if isinstance(document, list):
        if document and all(isinstance(item, dict) and "Target" in item for item in document):
            return TRIVY
        if not document:
            raise ReportError(f"{path}: report is an empty JSON array. {_SUPPORTED}")
        raise ReportError(f"{path}: unknown report format (a JSON array). {_SUPPORTED}")
    if not isinstance(document, dict):
        raise ReportError(f"{path}: unknown report format (not a JSON object). {_SUPPORTED}")

    unsupported = _unsupported_format(document)
    if unsupported:
        raise ReportError(f"{path}: unsupported report format {unsupported}. {_SUPPORTED}")
    if "SchemaVersion" in document or "Results" in document:
        return TRIVY
    if "matches" in document:
        return GRYPE
    if "apiVersion" in document or _looks_like_update_manifest(document):
        return NATIVE
    raise ReportError(f"{path}: unknown report format. {_SUPPORTED}")


def _looks_like_update_manifest(document: dict[str, Any]) -> bool:
    keys = {key.lower() for key in document}
    return "metadata" in keys and bool(keys & {"updates", "osupdates"})


def _unsupported_format(document: dict[str, Any]) -> str:
    if document.get("bomFormat") == "CycloneDX":
        return "CycloneDX"
    schema = document.get("$schema")
    if "runs" in document and (
        (isinstance(schema, str) and "sarif" in schema.lower())
        or str(document.get("version", "")).startswith("2.1")
    ):
        return "SARIF"
    if isinstance(document.get("spdxVersion"), str) or "@graph" in document:
        return "SPDX"
    if isinstance(document.get("results"), list) and "matches" not in document:
        return "OSV-Scanner"
    return ""
