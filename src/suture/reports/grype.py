"""Read Grype JSON reports.

A report has `matches[]`, each with an `artifact` (`name`, `version`, `type` such as "deb",
"apk", "rpm" or a language type, `purl`, and `metadata` that may hold `architecture` and an
rpm `epoch`) and a `vulnerability` (`id`, `fix {versions[], state}`). `distro {name, version}`
names the OS and `source.target` the image (`userInput`, `repoDigests`, `manifestDigest`,
`architecture`). Grype 0.7-era reports have no `fix` object; their fixed version is the
string `vulnerability.fixedInVersion`.

Only a fix state of "fixed" with at least one version counts as a fix. The states
"not-fixed", "wont-fix", "unknown" and "" give findings with no fix available.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from suture.errors import ReportError
from suture.reports._collect import FindingCollector
from suture.reports._fields import as_object, get_list, get_object, get_str
from suture.reports._versions import split_versions
from suture.reports.model import Report, package_type_for

OS_ARTIFACT_TYPES = frozenset({"deb", "apk", "rpm"})


def parse_grype(document: Any, path: Path | str) -> Report:
    """Build a Report from a parsed Grype JSON document."""
    source = str(path)
    top = as_object(document, source, "")
    matches = [
        (index, as_object(item, source, f"matches[{index}]"))
        for index, item in enumerate(get_list(top, "matches", source, ""))
    ]

    distro = get_object(top, "distro", source, "")
    family = get_str(distro, "name", source, "distro").lower()
    version = _distro_version(distro, source)
    if not family:
        family, version = _distro_from_purls(matches, source)
    if not family:
        raise ReportError(
            f"{source}: Grype report does not name the OS distribution (no distro.name). "
            "Scan the container image, not a directory or SBOM"
        )

    package_type = package_type_for(family)
    collector = FindingCollector(package_type)
    for index, match in matches:
        _collect_match(collector, match, source, f"matches[{index}]")

    target = _source_target(top, source)
    architecture = get_str(target, "architecture", source, "source.target") or None
    return Report(
        findings=collector.findings,
        scanner="grype",
        os_family=family,
        os_version=version,
        architecture=architecture,
        image_reference=get_str(target, "userInput", source, "source.target") or None,
        image_digest=_image_digest(target, source),
        no_fix=collector.no_fix,
        notes=collector.notes(),
        path=source,
    )


def _distro_version(distro: Mapping[str, Any], source: str) -> str:
    value = distro.get("version")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return get_str(distro, "version", source, "distro")


def _distro_from_purls(
    matches: list[tuple[int, Mapping[str, Any]]], source: str
) -> tuple[str, str]:
    # Some reports leave `distro` empty; OS package purls still carry "distro=debian-12".
    for index, match in matches:
        artifact = get_object(match, "artifact", source, f"matches[{index}]")
        qualifiers = _purl_qualifiers(get_str(artifact, "purl", source, f"matches[{index}]"))
        distro = qualifiers.get("distro", "")
        if distro:
            family, _, version = distro.partition("-")
            return family.lower(), version
    return "", ""


def _collect_match(
    collector: FindingCollector, match: Mapping[str, Any], source: str, where: str
) -> None:
    artifact = get_object(match, "artifact", source, where)
    vulnerability = get_object(match, "vulnerability", source, where)
    artifact_type = get_str(artifact, "type", source, f"{where}.artifact").lower()
    if artifact_type not in OS_ARTIFACT_TYPES:
        collector.ignore(artifact_type or "unknown")
        return

    package = get_str(artifact, "name", source, f"{where}.artifact")
    vulnerability_id = get_str(vulnerability, "id", source, f"{where}.vulnerability")
    if not package or not vulnerability_id:
        raise ReportError(
            f"{source}: {where} has no artifact.name or vulnerability.id. "
            "Pass the scanner's unmodified JSON output"
        )
    collector.add(
        package=package,
        installed=_installed_version(artifact, source, f"{where}.artifact"),
        fixed_versions=_fixed_versions(vulnerability, source, f"{where}.vulnerability"),
        vulnerability_id=vulnerability_id,
        architecture=_architecture(artifact, source, f"{where}.artifact"),
    )


def _installed_version(artifact: Mapping[str, Any], source: str, where: str) -> str:
    version = get_str(artifact, "version", source, where)
    metadata = artifact.get("metadata")
    if isinstance(metadata, Mapping):
        epoch = metadata.get("epoch")
        if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch and ":" not in version:
            return f"{epoch}:{version}"
    return version


def _fixed_versions(vulnerability: Mapping[str, Any], source: str, where: str) -> list[str]:
    if "fix" not in vulnerability:
        return split_versions(get_str(vulnerability, "fixedInVersion", source, where))
    fix = get_object(vulnerability, "fix", source, where)
    if get_str(fix, "state", source, f"{where}.fix") != "fixed":
        return []
    versions: list[str] = []
    for index, item in enumerate(get_list(fix, "versions", source, f"{where}.fix")):
        if not isinstance(item, str):
            raise ReportError(
                f"{source}: {where}.fix.versions[{index}] is not a string. "
                "Pass the scanner's unmodified JSON output"
            )
        for version in split_versions(item):
            if version not in versions:
                versions.append(version)
    return versions


def _architecture(artifact: Mapping[str, Any], source: str, where: str) -> str:
    metadata = artifact.get("metadata")
    if isinstance(metadata, Mapping):
        value = metadata.get("architecture")
        if isinstance(value, str) and value:
            return value
    return _purl_qualifiers(get_str(artifact, "purl", source, where)).get("arch", "")


def _purl_qualifiers(purl: str) -> dict[str, str]:
    if not purl:
        return {}
    try:
        qualifiers = PackageURL.from_string(purl).qualifiers
    except ValueError:
        return {}
    if isinstance(qualifiers, dict):
        return {str(key): str(value) for key, value in qualifiers.items()}
    return {}


def _source_target(top: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    origin = get_object(top, "source", source, "")
    target = origin.get("target")
    if isinstance(target, Mapping):
        return target
    # Directory and file scans give the target as a plain string, so there is no image to name.
    return {}


def _image_digest(target: Mapping[str, Any], source: str) -> str | None:
    for item in get_list(target, "repoDigests", source, "source.target"):
        if isinstance(item, str) and "@" in item:
            return item.rpartition("@")[2]
    return get_str(target, "manifestDigest", source, "source.target") or None
