"""Scanner report readers: Trivy JSON, Grype JSON and Copa update manifests.

Every reader returns the same `Report` of findings (package, installed version, fixed version,
vulnerability id), so planning never depends on which scanner produced the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from suture.errors import ReportError
from suture.reports.copa import parse_update_manifest
from suture.reports.detect import GRYPE, NATIVE, SCANNERS, TRIVY, detect_format, load_document
from suture.reports.grype import parse_grype
from suture.reports.model import Report, os_release_id, package_type_for
from suture.reports.trivy import parse_trivy

__all__ = [
    "SCANNERS",
    "Report",
    "ReportError",
    "os_release_id",
    "package_type_for",
    "read_report",
]

logger = logging.getLogger(__name__)

_NAMES = {TRIVY: "Trivy JSON", GRYPE: "Grype JSON", NATIVE: "a Copa update manifest"}


def read_report(path: Path | str, scanner: str = "auto") -> Report:
    """Read a scanner report, detecting its format unless `scanner` names one.

    `scanner` is "auto", "trivy", "grype" or "native" (a Copa update manifest). Raises
    ReportError, with a one-line message naming the file, for an unreadable, empty, malformed
    or unsupported report, and for a named format the file does not match.
    """
    report_path = Path(path)
    if scanner != "auto" and scanner not in SCANNERS:
        raise ReportError(
            f"{report_path}: unknown scanner {scanner!r}. Use auto, {', '.join(SCANNERS)}"
        )
    document = load_document(report_path)
    detected = detect_format(document, report_path)
    if scanner not in ("auto", detected):
        raise ReportError(
            f"{report_path}: --scanner {scanner} was given but the file is {_NAMES[detected]}. "
            f"Pass --scanner {detected} or auto"
        )

    if detected == TRIVY:
        report = parse_trivy(document, report_path)
    elif detected == GRYPE:
        report = parse_grype(document, report_path)
    else:
        report = parse_update_manifest(document, report_path)
    logger.debug(
        "read %s report %s: %s %s, %d findings with a fix, %d without",
        detected,
        report_path,
        report.os_family,
        report.os_version,
        len(report.findings),
        len(report.no_fix),
    )
    return report
