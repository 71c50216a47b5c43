"""Read Trivy JSON reports.

Schema 2 (Trivy 0.20 and later) is an object: `Metadata.OS {Family, Name}`,
`Metadata.ImageConfig.architecture`, `Metadata.RepoDigests`, `ArtifactName`, and `Results[]`
whose `Class` is "os-pkgs" for the OS packages ("lang-pkgs" for language packages). Reports
from before `Class` existed mark the OS result by a `Type` naming an OS family. Schema 1
(before Trivy 0.20) is a top-level array of `{Target, Type, Vulnerabilities}`; its OS comes
from the target text "name (debian 10.8)".

Each vulnerability has `PkgName`, `InstalledVersion`, `FixedVersion` (empty when there is no
fix, or several versions separated by ", " when the fix landed on several release lines),
`VulnerabilityID`, `Status` and, in newer reports, `PkgIdentifier.PURL` whose `arch`
qualifier gives the package architecture.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from suture.errors import ReportError
from suture.reports._collect import FindingCollector
from suture.reports._fields import as_object, get_list, get_object, get_str
from suture.reports._versions import split_versions
from suture.reports.model import Report, package_type_for

# Result types Trivy uses for OS package results (the OS family names it detects).
OS_RESULT_TYPES = frozenset(
    {
        "alma", "alpine", "amazon", "azurelinux", "bottlerocket", "cbl-mariner", "centos",
        "chainguard", "coreos", "debian", "echo", "fedora", "minimos", "opensuse",
        "opensuse.leap", "opensuse.tumbleweed", "oracle", "photon", "redhat", "rocky",
        "sles", "slem", "ubuntu", "wolfi",
    }
)

# Statuses Trivy gives a finding whose package is not vulnerable at all.
_NOT_AFFECTED = frozenset({"not_affected"})

# The "(debian 10.8)" at the end of an OS result's target.
_TARGET_OS = re.compile(r"\(([^()\s]+)\s+([^()]*(?:\([^()]*\))?[^()]*)\)\s*$")


def parse_trivy(document: Any, path: Path | str) -> Report:
    """Build a Report from a parsed Trivy JSON document (schema 1 or 2)."""
    source = str(path)
    if isinstance(document, list):
        results = document
        metadata: Mapping[str, Any] = {}
        artifact_name = ""
    else:
        top = as_object(document, source, "")
        results = get_list(top, "Results", source, "")
        metadata = get_object(top, "Metadata", source, "")
        artifact_name = get_str(top, "ArtifactName", source, "")

    os_results: list[tuple[int, Mapping[str, Any]]] = []
    other_results: list[tuple[int, Mapping[str, Any]]] = []
    for index, item in enumerate(results):
        result = as_object(item, source, f"Results[{index}]")
        if _is_os_result(result):
            os_results.append((index, result))
        else:
            other_results.append((index, result))

    family, version = _read_os(metadata, os_results, source)
    if not os_results:
        kinds = sorted({get_str(r, "Type", source, f"Results[{i}]") for i, r in other_results})
        found = f" (only {', '.join(k for k in kinds if k) or 'other'} results)" if kinds else ""
        raise ReportError(
            f"{source}: Trivy report has no OS package results{found}. "
            "Scan the image with OS packages included (trivy image --pkg-types os)"
        )
    os_types = {get_str(r, "Type", source, f"Results[{i}]") or family for i, r in os_results}
    if len(os_types) > 1:
        raise ReportError(
            f"{source}: Trivy report has OS package results for several systems "
            f"({', '.join(sorted(os_types))}). Pass one report per image"
        )

    package_type = package_type_for(family)
    collector = FindingCollector(package_type)
    for index, result in os_results:
        _collect_os_result(collector, result, source, f"Results[{index}]")
    for index, result in other_results:
        where = f"Results[{index}]"
        kind = get_str(result, "Type", source, where) or get_str(result, "Class", source, where)
        collector.ignore(kind or "unknown", len(get_list(result, "Vulnerabilities", source, where)))

    image_config = get_object(metadata, "ImageConfig", source, "Metadata")
    architecture = get_str(image_config, "architecture", source, "Metadata.ImageConfig")
    reference, digest = _image_identity(metadata, artifact_name, source)
    return Report(
        findings=collector.findings,
        scanner="trivy",
        os_family=family,
        os_version=version,
        architecture=architecture or None,
        image_reference=reference,
        image_digest=digest,
        no_fix=collector.no_fix,
        notes=collector.notes(),
        path=source,
    )


def _is_os_result(result: Mapping[str, Any]) -> bool:
    result_class = result.get("Class")
    if isinstance(result_class, str) and result_class:
        return result_class == "os-pkgs"
    result_type = result.get("Type")
    return isinstance(result_type, str) and result_type.lower() in OS_RESULT_TYPES


def _read_os(
    metadata: Mapping[str, Any], os_results: list[tuple[int, Mapping[str, Any]]], source: str
) -> tuple[str, str]:
    os_info = get_object(metadata, "OS", source, "Metadata")
    family = get_str(os_info, "Family", source, "Metadata.OS").lower()
    version = get_str(os_info, "Name", source, "Metadata.OS")
    if family and version:
        return family, version

    # Schema 1 and some schema 2 reports carry the OS only in the OS result's target text.
    for index, result in os_results:
        target = get_str(result, "Target", source, f"Results[{index}]")
        match = _TARGET_OS.search(target)
        if match:
            return family or match.group(1).lower(), version or match.group(2).strip()
        result_type = get_str(result, "Type", source, f"Results[{index}]").lower()
        if result_type:
            return family or result_type, version
    return family, version


def _collect_os_result(
    collector: FindingCollector, result: Mapping[str, Any], source: str, where: str
) -> None:
    for index, item in enumerate(get_list(result, "Vulnerabilities", source, where)):
        path = f"{where}.Vulnerabilities[{index}]"
        vulnerability = as_object(item, source, path)
        package = get_str(vulnerability, "PkgName", source, path)
        vulnerability_id = get_str(vulnerability, "VulnerabilityID", source, path)
        if not package or not vulnerability_id:
            raise ReportError(
                f"{source}: {path} has no PkgName or VulnerabilityID. "
                "Pass the scanner's unmodified JSON output"
            )
        if get_str(vulnerability, "Status", source, path) in _NOT_AFFECTED:
            collector.skip_not_affected()
            continue
        collector.add(
            package=package,
            installed=get_str(vulnerability, "InstalledVersion", source, path),
            fixed_versions=split_versions(get_str(vulnerability, "FixedVersion", source, path)),
            vulnerability_id=vulnerability_id,
            architecture=_purl_architecture(vulnerability, source, path),
        )


def _purl_architecture(vulnerability: Mapping[str, Any], source: str, where: str) -> str:
    identifier = get_object(vulnerability, "PkgIdentifier", source, where)
    purl = get_str(identifier, "PURL", source, f"{where}.PkgIdentifier")
    if not purl:
        return ""
    try:
        qualifiers = PackageURL.from_string(purl).qualifiers
    except ValueError:
        return ""
    if isinstance(qualifiers, dict):
        return str(qualifiers.get("arch", ""))
    return ""


def _image_identity(
    metadata: Mapping[str, Any], artifact_name: str, source: str
) -> tuple[str | None, str | None]:
    digest = None
    for item in get_list(metadata, "RepoDigests", source, "Metadata"):
        if isinstance(item, str) and "@" in item:
            digest = item.rpartition("@")[2]
            break
    return artifact_name or None, digest
