"""The outcome of a patch run, per platform and in total, and the plan text people read.

`PatchOutcome` is what `run_patch` returns. The command line prints each platform's plan
(stdout for `--dry-run`, stderr otherwise) and the summary table, and writes the `--summary`
JSON; `write_vex` writes the VEX document for a run that produced an image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from suture.ecosystems.base import PackageStatus, Plan, PlannedPackage
from suture.errors import SutureError
from suture.image.model import Image
from suture.image.transports import Location
from suture.outputs import atomic_output
from suture.patch.summary import ImageSummary, PackageSummary, PlatformSummary, Summary
from suture.patch.vex import VexPlatform, build_openvex


class PlatformStatus(StrEnum):
    """Outcome of one platform; `planned` appears only in dry runs."""

    PATCHED = "patched"
    UP_TO_DATE = "up-to-date"
    FAILED = "failed"
    SKIPPED = "skipped"
    PLANNED = "planned"


@dataclass(frozen=True)
class PlatformOutcome:
    """One platform's plan and result. `image` is the patched image, None if unchanged.

    `os_id` and `os_version` are the image's os-release ID and VERSION_ID, which name its
    packages in the VEX document.
    """

    platform: str
    original_digest: str
    status: PlatformStatus
    plan: Plan | None = None
    packages: tuple[PlannedPackage, ...] = ()
    notes: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    image: Image | None = None
    bytes_downloaded: int = 0
    engine: str = "unpack"
    os_id: str = ""
    os_version: str = ""


@dataclass(frozen=True)
class PatchOutcome:
    """The whole run: the source, where the result went, and each platform's outcome.

    `error` is set when a failure stopped the write (without --ignore-errors). `vex_written`
    is whether `-o` produced a VEX document.
    """

    source: str
    source_digest: str
    destination: str
    platforms: tuple[PlatformOutcome, ...]
    dry_run: bool = False
    result_reference: str | None = None
    result_digest: str | None = None
    seconds: float = 0.0
    error: str | None = None
    vex_written: bool = False

    @property
    def changed(self) -> bool:
        return self.result_digest is not None

    @property
    def bytes_downloaded(self) -> int:
        return sum(p.bytes_downloaded for p in self.platforms)

    @property
    def failed(self) -> bool:
        return any(p.status is PlatformStatus.FAILED or p.errors for p in self.platforms)


def format_plan(outcome: PlatformOutcome) -> str:
    """Render one platform's plan as plain text: one line per package, updates first.

    `--dry-run` and the real run print the same text, so the two can be compared.
    """
    lines = [f"plan for {outcome.platform} ({outcome.original_digest}):"]
    updates = (PackageStatus.UPDATE, PackageStatus.UPDATED)
    packages = sorted(outcome.packages, key=lambda p: (p.status not in updates, p.name))
    if not packages:
        lines.append("  nothing to update")
    for package in packages:
        arch = f":{package.architecture}" if package.architecture else ""
        if package.status in updates:
            change = f"{package.installed or '(new)'} -> {package.target}"
            status = "update"
        else:
            change = package.installed or "-"
            status = package.status.value
        vulnerabilities = (
            f" [{', '.join(package.vulnerabilities)}]" if package.vulnerabilities else ""
        )
        reason = f" ({package.reason})" if package.reason else ""
        lines.append(f"  {status:<13} {package.name}{arch} {change}{vulnerabilities}{reason}")
    lines.extend(f"  note: {note}" for note in outcome.notes)
    lines.extend(f"  error: {error}" for error in outcome.errors)
    return "\n".join(lines)


def to_summary(outcome: PatchOutcome) -> Summary:
    """Return the `--summary` model of a run."""
    result = None
    if outcome.result_digest is not None and outcome.result_reference is not None:
        result = ImageSummary(outcome.result_reference, outcome.result_digest)
    platforms = tuple(
        PlatformSummary(
            platform=p.platform,
            status=p.status.value,
            engine=p.engine,
            packages=tuple(PackageSummary.from_planned(package) for package in p.packages),
            errors=p.errors,
            notes=p.notes,
        )
        for p in outcome.platforms
    )
    return Summary(
        source=ImageSummary(outcome.source, outcome.source_digest),
        result=result,
        platforms=platforms,
        bytes_downloaded=outcome.bytes_downloaded,
        seconds=outcome.seconds,
    )


def write_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary name in the same directory, then rename it."""
    try:
        with atomic_output(path) as stream:
            stream.write(data)
    except OSError as error:
        raise SutureError(f"cannot write {path}: {error.strerror or error}") from error


def write_summary(outcome: PatchOutcome, path: Path) -> None:
    """Write the `--summary` JSON document atomically."""
    write_atomic(path, to_summary(outcome).to_json().encode())


def write_vex(
    outcome: PatchOutcome, destination: Location, path: Path, author: str | None
) -> bool:
    """Write the OpenVEX document for the written image; nothing when nothing was fixed.
    Return whether a document was written.

    The published OpenVEX schema requires at least one statement, so a run that fixed no
    reported vulnerability writes no document.
    """
    if outcome.result_digest is None:
        return False
    platforms = [
        VexPlatform(os_id=p.os_id, os_version=p.os_version, packages=p.packages)
        for p in outcome.platforms
        if p.status is PlatformStatus.PATCHED
    ]
    name, repository_url, tag = _image_name(destination)
    document = build_openvex(
        image_name=name, image_digest=outcome.result_digest, platforms=platforms,
        repository_url=repository_url, tag=tag, author=author,
    )
    if not document["statements"]:
        return False
    write_atomic(path, (json.dumps(document, indent=2) + "\n").encode())
    return True


def _image_name(destination: Location) -> tuple[str, str | None, str | None]:
    """Return the name, repository URL and tag that identify the image in package URLs."""
    if destination.reference is not None:
        reference = destination.reference
        return (reference.repository, f"{reference.registry}/{reference.repository}",
                reference.tag)
    assert destination.path is not None
    name = Path(destination.path).name
    if name.endswith(".tar"):
        name = name[: -len(".tar")]
    return name, None, destination.tag
