"""OpenVEX writer: document shape, package URLs, authorship and deterministic ids."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
from packageurl import PackageURL

from suture.ecosystems.base import PackageStatus, PlannedPackage
from suture.patch.vex import VexPlatform, build_openvex, image_purl, package_purl
from suture.reports import read_report

# No package on PyPI or npm ships the OpenVEX JSON schema, and the tests may not download it.
# This schema restates the constraints of openvex_json_schema.json (spec v0.2.0, in the
# openvex/spec repository). It covers the required document and statement fields, the status
# values, the component and subcomponent shape, and the ban on extra properties.
_COMPONENT_ID = {"type": "string", "format": "uri"}
OPENVEX_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["@context", "@id", "author", "timestamp", "version", "statements"],
    "additionalProperties": False,
    "properties": {
        "@context": {"type": "string", "format": "uri"},
        "@id": {"type": "string", "format": "uri"},
        "author": {"type": "string"},
        "role": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "last_updated": {"type": "string", "format": "date-time"},
        "version": {"type": "integer", "minimum": 1},
        "tooling": {"type": "string"},
        "statements": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {
                "type": "object",
                "required": ["vulnerability", "status"],
                "additionalProperties": False,
                "properties": {
                    "@id": {"type": "string", "format": "uri"},
                    "version": {"type": "integer", "minimum": 1},
                    "vulnerability": {
                        "type": "object",
                        "required": ["name"],
                        "additionalProperties": False,
                        "properties": {
                            "@id": {"type": "string", "format": "uri"},
                            "name": {"type": "string"},
                            "description": {"type": "string"},
                            "aliases": {
                                "type": "array",
                                "uniqueItems": True,
                                "items": {"type": "string"},
                            },
                        },
                    },
                    "timestamp": {"type": "string", "format": "date-time"},
                    "last_updated": {"type": "string", "format": "date-time"},
                    "products": {
                        "type": "array",
                        "uniqueItems": True,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "@id": _COMPONENT_ID,
                                "identifiers": {"type": "object"},
                                "hashes": {"type": "object"},
                                "subcomponents": {
                                    "type": "array",
                                    "uniqueItems": True,
                                    "items": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "properties": {
                                            "@id": _COMPONENT_ID,
                                            "identifiers": {"type": "object"},
                                            "hashes": {"type": "object"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                    "status": {
                        "enum": ["not_affected", "affected", "fixed", "under_investigation"]
                    },
                    "supplier": {"type": "string"},
                    "status_notes": {"type": "string"},
                    "justification": {"type": "string"},
                    "impact_statement": {"type": "string"},
                    "action_statement": {"type": "string"},
                    "action_statement_timestamp": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}

_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", urlsplit(value).scheme)) and (
        " " not in value
    )


@_FORMATS.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return bool(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value))


VALIDATOR = jsonschema.Draft202012Validator(OPENVEX_SCHEMA, format_checker=_FORMATS)
DIGEST = "sha256:" + "ab" * 32
WHEN = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def _package(
    name: str,
    target: str,
    vulnerabilities: tuple[str, ...],
    status: PackageStatus = PackageStatus.UPDATED,
    architecture: str = "amd64",
) -> PlannedPackage:
    return PlannedPackage(
        name=name,
        architecture=architecture,
        installed="0.1-1",
        fixed=target,
        target=target,
        status=status,
        vulnerabilities=vulnerabilities,
    )


def _platform(*packages: PlannedPackage) -> VexPlatform:
    return VexPlatform(os_id="debian", os_version="12", packages=packages)


def _document(*platforms: VexPlatform, author: str | None = "tester") -> dict[str, Any]:
    return build_openvex(
        image_name="127.0.0.1:5000/team/app",
        image_digest=DIGEST,
        repository_url="127.0.0.1:5000/team/app",
        platforms=platforms,
        author=author,
        timestamp=WHEN,
    )


def _errors(document: dict[str, Any]) -> list[str]:
    return [error.message for error in VALIDATOR.iter_errors(document)]


SAMPLE = _platform(
    _package("libssl3", "3.0.17-1~deb12u2", ("CVE-2025-0001", "CVE-2025-0002")),
    _package("openssl", "3.0.17-1~deb12u2", ("CVE-2025-0001",)),
    _package("curl", "7.88.1-10+deb12u9", ("CVE-2025-0003",), status=PackageStatus.FAILED),
    _package("tzdata", "2025b-0+deb12u1", ()),
)


def test_vex_document_matches_schema() -> None:
    assert _errors(_document(SAMPLE)) == []


def test_vex_schema_rejects_bad_documents() -> None:
    document = _document(SAMPLE)
    wrong_status = copy.deepcopy(document)
    wrong_status["statements"][0]["status"] = "patched"
    no_author = {key: value for key, value in document.items() if key != "author"}
    assert _errors(wrong_status) != []
    assert _errors(no_author) != []
    assert _errors({**document, "statements": []}) != []
    assert _errors({**document, "timestamp": "yesterday"}) != []
    assert _errors({**document, "@id": "not a uri"}) != []


def test_vex_one_statement_per_fixed_vulnerability() -> None:
    document = _document(SAMPLE)
    names = [statement["vulnerability"]["name"] for statement in document["statements"]]
    assert names == ["CVE-2025-0001", "CVE-2025-0002"]
    assert {statement["status"] for statement in document["statements"]} == {"fixed"}


def test_vex_failed_package_not_listed() -> None:
    text = str(_document(SAMPLE))
    assert "CVE-2025-0003" not in text
    assert "curl" not in text


def test_vex_subcomponents_per_vulnerability() -> None:
    statement = _document(SAMPLE)["statements"][0]
    subcomponents = [item["@id"] for item in statement["products"][0]["subcomponents"]]
    names = [PackageURL.from_string(purl).name for purl in subcomponents]
    assert names == ["libssl3", "openssl"]


def test_vex_subcomponent_purl_fields() -> None:
    statement = _document(SAMPLE)["statements"][1]
    purl = PackageURL.from_string(statement["products"][0]["subcomponents"][0]["@id"])
    assert purl.type == "deb"
    assert purl.namespace == "debian"
    assert purl.name == "libssl3"
    assert purl.version == "3.0.17-1~deb12u2"
    assert purl.qualifiers == {"arch": "amd64", "distro": "debian-12"}


def test_vex_product_purl_fields() -> None:
    product = _document(SAMPLE)["statements"][0]["products"][0]
    purl = PackageURL.from_string(product["@id"])
    assert purl.type == "oci"
    assert purl.name == "app"
    assert purl.version == DIGEST
    assert purl.qualifiers == {"repository_url": "127.0.0.1:5000/team/app"}


def test_vex_statement_keys_like_copa() -> None:
    # Copa's statements carry exactly a vulnerability, products with subcomponents and a status.
    for statement in _document(SAMPLE)["statements"]:
        assert set(statement) == {"vulnerability", "products", "status"}
        assert set(statement["products"][0]) == {"@id", "subcomponents"}


def test_vex_multi_platform_lists_each_arch() -> None:
    arm = VexPlatform(
        os_id="debian",
        os_version="12",
        packages=(
            _package("libssl3", "3.0.17-1~deb12u2", ("CVE-2025-0002",), architecture="arm64"),
        ),
    )
    statement = _document(SAMPLE, arm)["statements"][1]
    arches = [
        PackageURL.from_string(item["@id"]).qualifiers["arch"]
        for item in statement["products"][0]["subcomponents"]
    ]
    assert arches == ["amd64", "arm64"]


def test_vex_nothing_fixed_has_no_statements() -> None:
    document = _document(_platform(_package("tzdata", "2025b-0+deb12u1", ())))
    assert document["statements"] == []


def test_vex_author_argument_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUTURE_VEX_AUTHOR", "from-env")
    assert _document(SAMPLE, author="Security Team")["author"] == "Security Team"


def test_vex_author_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUTURE_VEX_AUTHOR", "from-env")
    assert _document(SAMPLE, author=None)["author"] == "from-env"


def test_vex_author_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SUTURE_VEX_AUTHOR", raising=False)
    assert _document(SAMPLE, author=None)["author"] == "suture"


def test_vex_id_deterministic() -> None:
    first = _document(SAMPLE)["@id"]
    assert first == _document(SAMPLE)["@id"]
    assert re.fullmatch(r"https://openvex\.dev/docs/public/vex-[0-9a-f]{64}", first)


def test_vex_id_changes_with_content() -> None:
    other = _platform(_package("libssl3", "3.0.17-1~deb12u3", ("CVE-2025-0001",)))
    assert _document(SAMPLE)["@id"] != _document(other)["@id"]
    assert _document(SAMPLE)["@id"] != _document(SAMPLE, author="someone else")["@id"]


def test_vex_timestamp_from_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    document = build_openvex(image_name="app", image_digest=DIGEST, platforms=[SAMPLE])
    assert document["timestamp"] == "2023-11-14T22:13:20Z"


def test_image_purl_lowercases_last_segment() -> None:
    purl = PackageURL.from_string(image_purl("Registry.Example/Team/MyApp", DIGEST, tag="v1"))
    assert purl.name == "myapp"
    assert purl.qualifiers == {"tag": "v1"}


def test_package_purl_rpm_epoch_qualifier() -> None:
    purl = PackageURL.from_string(
        package_purl("rpm", "rocky", "8.5", "openssl-libs", "1:1.1.1k-5.el8_5", "x86_64")
    )
    assert purl.version == "1.1.1k-5.el8_5"
    assert purl.qualifiers == {"arch": "x86_64", "distro": "rocky-8.5", "epoch": "1"}


def test_package_purl_deb_keeps_epoch() -> None:
    purl = PackageURL.from_string(
        package_purl("deb", "debian", "12", "zlib1g", "1:1.2.13.dfsg-1+deb12u1", "amd64")
    )
    assert purl.version == "1:1.2.13.dfsg-1+deb12u1"


def test_vex_from_demo_report_lists_its_vulnerabilities() -> None:
    report_path = Path(__file__).resolve().parents[3] / "examples" / "demo-report.json"
    if not report_path.exists():
        pytest.skip(f"demo report not found at {report_path}")
    report = read_report(report_path)
    by_package: dict[tuple[str, str], list[str]] = {}
    targets: dict[tuple[str, str], str] = {}
    for finding in report.findings:
        key = (finding.package, finding.architecture)
        by_package.setdefault(key, []).append(finding.vulnerability_id)
        targets[key] = finding.fixed_version
    packages = tuple(
        _package(name, targets[(name, arch)], tuple(ids), architecture=arch)
        for (name, arch), ids in by_package.items()
    )
    document = _document(_platform(*packages))

    assert _errors(document) == []
    names = {statement["vulnerability"]["name"] for statement in document["statements"]}
    assert names == {finding.vulnerability_id for finding in report.findings}
