"""Read Copa update manifests, the format Copa's scanner plugins print.

v1alpha1: `{"apiVersion": "v1alpha1", "metadata": {"os": {"type", "version"}, "config":
{"arch"}}, "updates": [{"name", "installedVersion", "fixedVersion", "vulnerabilityID"}]}`,
optionally with `nodeUpdates` for Node.js packages.
v1alpha2: the same metadata (plus `config.variant`), with OS packages in `osupdates` and
language packages in `langupdates`; each update also carries `type` and `class`.

Copa decodes these with Go's encoding/json, which matches keys case-insensitively, so
"osUpdates" and "osupdates" are read alike here too. A manifest without `apiVersion` is read by
the keys it has.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from suture.errors import ReportError
from suture.reports._collect import FindingCollector
from suture.reports._fields import as_object, get_list, get_object, get_str
from suture.reports.model import Report, package_type_for

API_VERSIONS = ("v1alpha1", "v1alpha2")


def parse_update_manifest(document: Any, path: Path | str) -> Report:
    """Build a Report from a parsed Copa update manifest (v1alpha1 or v1alpha2)."""
    source = str(path)
    top = {key.lower(): value for key, value in as_object(document, source, "").items()}
    api_version = get_str(top, "apiversion", source, "")
    if api_version and api_version not in API_VERSIONS:
        raise ReportError(
            f"{source}: unsupported update manifest apiVersion {api_version!r}. "
            f"suture reads {' and '.join(API_VERSIONS)}"
        )

    metadata = get_object(top, "metadata", source, "")
    os_info = get_object(_lower_keys(metadata), "os", source, "metadata")
    config = get_object(_lower_keys(metadata), "config", source, "metadata")
    family = get_str(_lower_keys(os_info), "type", source, "metadata.os").lower()
    version = get_str(_lower_keys(os_info), "version", source, "metadata.os")
    architecture = get_str(_lower_keys(config), "arch", source, "metadata.config")
    if not family:
        raise ReportError(
            f"{source}: update manifest has no metadata.os.type. "
            "The scanner plugin must name the OS of the image"
        )

    collector = FindingCollector(package_type_for(family))
    os_key = "updates" if "updates" in top or "osupdates" not in top else "osupdates"
    for index, item in enumerate(get_list(top, os_key, source, "")):
        where = f"{os_key}[{index}]"
        update = _lower_keys(as_object(item, source, where))
        if get_str(update, "class", source, where) == "lang-pkgs":
            collector.ignore(get_str(update, "type", source, where) or "lang-pkgs")
            continue
        _collect_update(collector, update, source, where)
    for key, default_kind in (("langupdates", "lang-pkgs"), ("nodeupdates", "node-pkg")):
        for index, item in enumerate(get_list(top, key, source, "")):
            update = _lower_keys(as_object(item, source, f"{key}[{index}]"))
            collector.ignore(get_str(update, "type", source, f"{key}[{index}]") or default_kind)

    notes = collector.notes()
    if not api_version:
        read_as = "v1alpha1" if os_key == "updates" else "v1alpha2"
        notes = (f"update manifest has no apiVersion; read as {read_as}", *notes)
    return Report(
        findings=collector.findings,
        scanner="native",
        os_family=family,
        os_version=version,
        architecture=architecture or None,
        no_fix=collector.no_fix,
        notes=notes,
        path=source,
    )


def _lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {key.lower(): value for key, value in obj.items()}


def _collect_update(
    collector: FindingCollector, update: Mapping[str, Any], source: str, where: str
) -> None:
    package = get_str(update, "name", source, where)
    vulnerability_id = get_str(update, "vulnerabilityid", source, where)
    if not package:
        raise ReportError(
            f"{source}: {where} has no name. The scanner plugin must name each package"
        )
    fixed = get_str(update, "fixedversion", source, where)
    collector.add(
        package=package,
        installed=get_str(update, "installedversion", source, where),
        fixed_versions=[fixed] if fixed else [],
        vulnerability_id=vulnerability_id,
    )
