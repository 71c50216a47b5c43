"""Build an OpenVEX v0.2.0 document that states which vulnerabilities a patch fixed.

Spec: https://github.com/openvex/spec (OPENVEX-SPEC.md, openvex_json_schema.json, v0.2.0).
The document has one statement per fixed vulnerability with status "fixed". Its product is the
patched image as an `oci` package URL (`pkg:oci/<name>@<digest>?repository_url=...`) and its
subcomponents are the updated packages at their new versions (`pkg:deb/debian/openssl@
3.0.17-1~deb12u2?arch=amd64&distro=debian-12`), following the purl-spec type definitions for
`oci`, `deb`, `rpm` and `apk`. Copa writes the same shape (product plus subcomponents, one
statement per vulnerability, status "fixed"), so its users read the document the same way.
Packages that failed to update are never listed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from packageurl import PackageURL

from suture.ecosystems.base import PackageStatus, PlannedPackage

CONTEXT = "https://openvex.dev/ns/v0.2.0"
# go-vex names documents it generates under this namespace, as vexctl does.
PUBLIC_NAMESPACE = "https://openvex.dev/docs/public"
AUTHOR_ENV = "SUTURE_VEX_AUTHOR"
DEFAULT_AUTHOR = "suture"


@dataclass(frozen=True)
class VexPlatform:
    """The packages of one patched platform, with the OS that names them in package URLs.

    `os_id` is the os-release ID ("debian", "ubuntu") and becomes the purl namespace;
    `os_version` is VERSION_ID ("12") and goes into the `distro` qualifier as "debian-12".
    Only packages with status `updated` and at least one vulnerability produce statements.
    """

    os_id: str
    os_version: str
    packages: tuple[PlannedPackage, ...]
    package_type: str = "deb"


def resolve_author(author: str | None = None) -> str:
    """Return the author: the argument, else $SUTURE_VEX_AUTHOR, else "suture"."""
    if author and author.strip():
        return author.strip()
    from_environment = os.environ.get(AUTHOR_ENV, "").strip()
    return from_environment or DEFAULT_AUTHOR


def image_purl(
    image_name: str, image_digest: str, repository_url: str | None = None, tag: str | None = None
) -> str:
    """Return the `pkg:oci` package URL of an image.

    `image_name` may be a whole repository ("registry.example/team/app"); the purl name is its
    last path segment, lowercased, as the purl-spec `oci` type requires.
    """
    name = image_name.rstrip("/").rsplit("/", 1)[-1].lower()
    qualifiers: dict[str, str] = {}
    if repository_url:
        qualifiers["repository_url"] = repository_url
    if tag:
        qualifiers["tag"] = tag
    return str(PackageURL(type="oci", name=name, version=image_digest, qualifiers=qualifiers))


def package_purl(
    package_type: str, os_id: str, os_version: str, name: str, version: str, architecture: str
) -> str:
    """Return the package URL of an OS package, with `arch` and `distro` qualifiers."""
    qualifiers: dict[str, str] = {}
    if architecture:
        qualifiers["arch"] = architecture
    if os_id:
        qualifiers["distro"] = f"{os_id}-{os_version}" if os_version else os_id
    namespace = os_id.lower() or None
    if package_type == "rpm" and ":" in version:
        # The purl-spec rpm type carries the epoch as a qualifier, not in the version.
        epoch, _, version = version.partition(":")
        qualifiers["epoch"] = epoch
    return str(
        PackageURL(
            type=package_type, namespace=namespace, name=name, version=version,
            qualifiers=qualifiers,
        )
    )


def build_openvex(
    *,
    image_name: str,
    image_digest: str,
    platforms: Sequence[VexPlatform],
    repository_url: str | None = None,
    tag: str | None = None,
    author: str | None = None,
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """Build the OpenVEX document for a patched image (a manifest or an index).

    `image_digest` is the digest of what was written: the index digest for a multi-platform
    image, whose platforms all contribute subcomponents. `timestamp` defaults to
    $SOURCE_DATE_EPOCH when set, else the current time. The document's `@id` is derived from
    its content, so the same fixes, author and time give the same id.

    When nothing was fixed, `statements` is empty. The published schema requires at least one
    statement, so callers should not write such a document.
    """
    issued = _issued_at(timestamp)
    product_id = image_purl(image_name, image_digest, repository_url, tag)

    fixed_by: dict[str, set[str]] = {}
    for platform in platforms:
        for package in platform.packages:
            if package.status is not PackageStatus.UPDATED or not package.target:
                continue
            purl = package_purl(
                platform.package_type, platform.os_id, platform.os_version, package.name,
                package.target, package.architecture,
            )
            for vulnerability in package.vulnerabilities:
                fixed_by.setdefault(vulnerability, set()).add(purl)

    statements = [
        {
            "vulnerability": {"name": vulnerability},
            "products": [
                {
                    "@id": product_id,
                    "subcomponents": [{"@id": purl} for purl in sorted(fixed_by[vulnerability])],
                }
            ],
            "status": "fixed",
        }
        for vulnerability in sorted(fixed_by)
    ]
    document: dict[str, Any] = {
        "@context": CONTEXT,
        "@id": "",
        "author": resolve_author(author),
        "timestamp": _rfc3339(issued),
        "version": 1,
        "tooling": _tooling(),
        "statements": statements,
    }
    document["@id"] = f"{PUBLIC_NAMESPACE}/vex-{canonical_hash(document, issued)}"
    return document


def canonical_hash(document: dict[str, Any], issued: datetime) -> str:
    """Return the sha256 of the document's statements, author, version and time.

    The string hashed follows go-vex's `CanonicalHash` (v0.2.x), which vexctl uses for
    generated ids: unix time, version and author, then for each statement (sorted by
    vulnerability name) its vulnerability, status, justification, time and sorted products
    with their subcomponents. Tooling and other metadata do not change the hash.
    """
    # NOTE: not cross-checked against ids that vexctl printed for the same content.
    unix_time = int(issued.timestamp())
    text = f"{unix_time}:{document['version']}:{document['author']}"
    for statement in sorted(document["statements"], key=lambda s: s["vulnerability"]["name"]):
        vulnerability = statement["vulnerability"]
        text += f":{vulnerability.get('@id', '')}:{vulnerability['name']}"
        text += f":{statement['status']}:{statement.get('justification', '')}"
        text += f":{unix_time}"
        products = []
        for product in statement["products"]:
            entry = f":{product['@id']}"
            for subcomponent in product.get("subcomponents", []):
                entry += f":{subcomponent['@id']}"
            products.append(entry)
        text += ":" + ":".join(sorted(products))
    return hashlib.sha256(text.encode()).hexdigest()


def _issued_at(timestamp: datetime | None) -> datetime:
    if timestamp is not None:
        return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=UTC)
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.fromtimestamp(int(epoch), tz=UTC)
    return datetime.now(tz=UTC).replace(microsecond=0)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _tooling() -> str:
    try:
        return f"suture {metadata.version('suture')}"
    except metadata.PackageNotFoundError:
        return "suture"
