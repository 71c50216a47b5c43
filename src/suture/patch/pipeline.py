"""The `suture patch` job: read an image, plan, fetch, apply, build and write the patched image.

Steps, in order:
1. Parse the source location and resolve the destination, so that a missing `--push`/`--dest`
   or an unwritable layout fails before any download.
2. Read the artifact (one image or an index) and the reports, if any.
3. Patch each selected platform, concurrently: merged filesystem view, ecosystem detection,
   report checks, plan, fetch, staging (seeded with a previous patch layer), apply, one new
   layer, new image.
4. Assemble the patched index (or take the single patched image) and write it to the
   destination unless nothing changed; then write the VEX document.

Everything here returns data. Printing is left to the command line, except for the progress
hook and the `show_plan` callback, which the command line supplies.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from suture.ecosystems.base import PackageStatus, Plan, PlanOptions
from suture.ecosystems.dpkg.database import DpkgDatabase, read_database
from suture.ecosystems.dpkg.detect import read_os_release
from suture.ecosystems.dpkg.ecosystem import DpkgEcosystem
from suture.ecosystems.dpkg.fetch import fetch_packages
from suture.ecosystems.dpkg.unpack import apply_updates
from suture.errors import SutureError, TransportError, UnsupportedImageError, UsageError
from suture.image.cache import BlobCache
from suture.image.fsview import FileSystemView
from suture.image.merged import MergedFileSystem
from suture.image.model import DOCKER_MANIFEST, Artifact, Image, Platform
from suture.image.transports import (
    Location,
    TransportOptions,
    parse_location,
    read_artifact,
    write_artifact,
)
from suture.patch.build import build_layer
from suture.patch.destination import (
    SINGLE_IMAGE_TRANSPORTS,
    check_output_file,
    check_single_image_destination,
    daemon_reachable,
    resolve_destination,
)
from suture.patch.image_edit import append_patch_layer, seed_staging
from suture.patch.index import build_patched_index
from suture.patch.outcome import PatchOutcome, PlatformOutcome, PlatformStatus, write_vex
from suture.patch.report_checks import (
    check_report,
    load_reports,
    no_fix_entries,
    plan_failures,
    report_for_platform,
    warn_version_drift,
)
from suture.patch.staging import Staging
from suture.patch.timeouts import Deadline
from suture.reports import Report

log = logging.getLogger(__name__)

ProgressHook = Callable[[str, int, "int | None"], None]
ShowPlan = Callable[[PlatformOutcome], None]

MAX_PARALLEL_PLATFORMS = 4
MAX_REQUEST_SECONDS = 60.0


@dataclass(frozen=True)
class PatchRequest:
    """Every setting of one `suture patch` run, as parsed from the command line."""

    image: str
    report: Path | None = None
    tag: str | None = None
    tag_suffix: str = "patched"
    push: bool = False
    dest: str | None = None
    platforms: tuple[Platform, ...] = ()
    scanner: str = "auto"
    output: Path | None = None
    vex_author: str | None = None
    summary: Path | None = None
    dry_run: bool = False
    ignore_errors: bool = False
    timeout: float = 300.0
    mirrors: tuple[tuple[str, str], ...] = ()
    insecure_registries: frozenset[str] = frozenset()
    registry_ca: Path | None = None
    docker_config: Path | None = None
    engine: str = "unpack"
    allow_insecure_repositories: bool = False
    compression: str = "gzip"
    cache_dir: Path | None = None
    host_apt_dir: Path = Path("/etc/apt")


def _dpkg_content(path: str) -> bool:
    """Return whether planning or the unpack engine reads the file at `path`."""
    path = "/" + path.lstrip("/")
    return (
        path.startswith(("/var/lib/dpkg/", "/etc/apt/", "/usr/share/keyrings/", "/etc/dpkg/"))
        or path in ("/etc/os-release", "/usr/lib/os-release", "/etc/debian_version")
    )


def run_patch(
    request: PatchRequest,
    deadline: Deadline,
    progress: ProgressHook | None = None,
    show_plan: ShowPlan | None = None,
) -> PatchOutcome:
    """Run the patch job and return its outcome.

    Raises SutureError when the whole command fails (image, reports, destination, or the only
    platform). When a platform of an index fails, or packages cannot be updated, and
    --ignore-errors is not given, nothing is written and the outcome's `error` gives the reason.
    """
    started = time.monotonic()

    source = parse_location(request.image)
    # A dry run writes nothing, so it needs no reachable daemon to name a destination.
    destination = resolve_destination(
        source, tag=request.tag, tag_suffix=request.tag_suffix, push=request.push,
        dest=request.dest, daemon_available=(lambda: True) if request.dry_run else daemon_reachable,
        dry_run=request.dry_run,
    )
    if request.summary is not None:
        check_output_file(request.summary, "--summary")
    if not request.dry_run:
        check_writable(destination)
        if request.output is not None:
            check_output_file(request.output, "-o/--output")
    options = TransportOptions(
        insecure_registries=request.insecure_registries,
        ca_file=request.registry_ca,
        docker_config=request.docker_config,
        timeout=min(MAX_REQUEST_SECONDS, max(1.0, deadline.remaining())),
        # Registry blobs are spooled to disk on their first read, so that reading a layer again
        # (for a file's content) does not download it again.
        cache=BlobCache((request.cache_dir or _default_cache_dir()) / "blobs"),
        progress=progress,
    )
    reports = load_reports(request.report, request.scanner) if request.report else None

    log.info("reading %s", source)
    artifact = read_artifact(source, options)
    deadline.check()
    targets = select_platforms(artifact, request.platforms)
    check_single_image_destination(destination, len(targets), not isinstance(artifact, Image))
    check_compression(targets, request.compression)

    with tempfile.TemporaryDirectory(prefix="suture-") as workdir:
        outcomes = _patch_platforms(
            targets, reports, request, deadline, progress, show_plan, Path(workdir)
        )
        outcome = PatchOutcome(
            source=str(source), source_digest=artifact.digest, destination=str(destination),
            platforms=tuple(outcomes), dry_run=request.dry_run,
        )
        # A failed platform stops the write unless --ignore-errors. The caller still gets the
        # outcome, so the summary lists the packages that failed.
        failed = [o for o in outcomes if o.status is PlatformStatus.FAILED]
        if failed and not request.ignore_errors:
            return replace(outcome, error=_platform_failure(failed),
                           seconds=time.monotonic() - started)
        patched = {o.original_digest: o.image for o in outcomes if o.image is not None}
        if request.dry_run or not patched:
            return replace(outcome, seconds=time.monotonic() - started)

        deadline.check()
        result = assemble(artifact, patched)
        if destination.transport in SINGLE_IMAGE_TRANSPORTS:
            # An index narrowed by --platform to one image is written as that image.
            result = next(iter(patched.values()))
        log.info("writing %s to %s", result.digest, destination)
        digest = write_artifact(destination, result, options)

    outcome = replace(
        outcome, result_reference=str(destination), result_digest=digest,
        seconds=time.monotonic() - started,
    )
    if request.output is not None:
        try:
            written = write_vex(outcome, destination, request.output, request.vex_author)
        except SutureError as error:
            raise SutureError(
                f"{error}; the patched image was written to {destination} ({digest})"
            ) from error
        outcome = replace(outcome, vex_written=written)
    return outcome


def _platform_failure(failed: Sequence[PlatformOutcome]) -> str:
    first = failed[0]
    more = f" (and {len(failed) - 1} more platforms)" if len(failed) > 1 else ""
    reason = first.errors[0] if first.errors else "failed"
    return (
        f"platform {first.platform}: {reason}{more}; nothing was written. "
        "Pass --ignore-errors to write what can be patched"
    )


def check_writable(destination: Location) -> None:
    """Reject a local destination this process cannot write, before any work is done."""
    if destination.path is None:
        return
    target = Path(destination.path)
    existing = target if target.exists() else target.parent
    if not existing.exists():
        raise TransportError(f"destination directory {existing} does not exist: create it first")
    blobs = target / "blobs" / "sha256"
    writable = os.access(existing, os.W_OK) and (
        not blobs.is_dir() or os.access(blobs, os.W_OK)
    )
    if not writable:
        raise TransportError(f"destination {target} is not writable: pass a writable --dest")


def check_compression(targets: Sequence[Image], compression: str) -> None:
    """Reject zstd for images with Docker schema 2 manifests, which have no zstd layer type."""
    if compression != "zstd":
        return
    for image in targets:
        if image.manifest.media_type == DOCKER_MANIFEST:
            raise UsageError(
                f"invalid --compression zstd: image {image.digest} ({image.platform}) has a "
                "Docker schema 2 manifest, which allows only gzip layers; pass --compression "
                "gzip (the default)"
            )


def select_platforms(artifact: Artifact, wanted: Sequence[Platform]) -> list[Image]:
    """Return the images to patch: the image itself, or the index's linux images that match
    `wanted` (all of them when it is empty). Other index entries are carried over."""
    if isinstance(artifact, Image):
        if wanted and not any(artifact.platform.matches(p) for p in wanted):
            raise UsageError(
                f"invalid --platform {','.join(str(p) for p in wanted)}: the image is "
                f"{artifact.platform}"
            )
        return [artifact]

    selected = []
    for child in artifact.children:
        # TODO: images inside nested indexes are carried over unpatched.
        if not isinstance(child, Image) or child.platform.os != "linux":
            continue
        if wanted and not any(child.platform.matches(p) for p in wanted):
            continue
        selected.append(child)
    if not selected:
        raise UsageError(
            f"invalid --platform {','.join(str(p) for p in wanted)}: the index has no "
            "matching linux image" if wanted else "the index contains no linux image to patch"
        )
    return selected


def _patch_platforms(
    targets: Sequence[Image],
    reports: Sequence[Report] | None,
    request: PatchRequest,
    deadline: Deadline,
    progress: ProgressHook | None,
    show_plan: ShowPlan | None,
    workdir: Path,
) -> list[PlatformOutcome]:
    single = len(targets) == 1

    def work(numbered: tuple[int, Image]) -> PlatformOutcome:
        number, image = numbered
        try:
            return patch_platform(
                image, reports, request, deadline, workdir / f"platform-{number}",
                progress=progress, show_plan=show_plan, single=single,
            )
        except SutureError as error:
            # A single image's failure is the command's failure. In an index it is recorded,
            # so that with --ignore-errors the platform is carried over unpatched. Ctrl-C stops
            # every platform.
            if single or deadline.interrupted:
                raise
            log.error("platform %s: %s", image.platform, error)
            return PlatformOutcome(
                platform=str(image.platform), original_digest=image.digest,
                status=PlatformStatus.FAILED, errors=(str(error),),
            )

    numbered = list(enumerate(targets))
    if single:
        return [work(numbered[0])]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_PLATFORMS, len(targets))) as pool:
        return list(pool.map(work, numbered))


def patch_platform(
    image: Image,
    reports: Sequence[Report] | None,
    request: PatchRequest,
    deadline: Deadline,
    workdir: Path,
    *,
    progress: ProgressHook | None = None,
    show_plan: ShowPlan | None = None,
    single: bool = True,
) -> PlatformOutcome:
    """Plan and, unless this is a dry run, apply the updates for one platform's image."""
    platform = str(image.platform)
    deadline.check()

    # One streaming pass over the layers keeps only the files planning and applying read.
    fs = MergedFileSystem.from_image(
        image, keep_content=_dpkg_content,
        listing_cache=(request.cache_dir or _default_cache_dir()) / "layers",
    )
    ecosystem = DpkgEcosystem()
    if not ecosystem.detect(fs):
        if single:
            raise UnsupportedImageError(
                f"image {image.digest} ({platform}) has no dpkg database: only Debian and "
                "Ubuntu images can be patched for now"
            )
        return PlatformOutcome(
            platform=platform, original_digest=image.digest, status=PlatformStatus.SKIPPED,
            notes=("no dpkg database; carried over unchanged",),
        )
    database = read_database(fs)
    os_release = read_os_release(fs)

    findings = None
    extra_packages = []
    notes: list[str] = []
    if reports is not None:
        report = report_for_platform(reports, image.platform, single)
        if report is None:
            return PlatformOutcome(
                platform=platform, original_digest=image.digest,
                status=PlatformStatus.SKIPPED,
                notes=(f"no report for {platform}; carried over unchanged",),
            )
        check_report(report, os_release, image.platform, request.ignore_errors)
        findings = list(report.findings)
        extra_packages = no_fix_entries(report)
        notes.extend(report.notes)
        warn_version_drift(findings, database)

    deadline.check()
    plan = ecosystem.plan(fs, findings, PlanOptions(
        mirrors=request.mirrors,
        allow_insecure_repositories=request.allow_insecure_repositories,
        host_apt_dir=request.host_apt_dir,
        cache_dir=request.cache_dir,
    ))
    plan = replace(plan, packages=plan.packages + tuple(extra_packages),
                   notes=plan.notes + tuple(notes))
    failures = plan_failures(plan)
    outcome = PlatformOutcome(
        platform=platform, original_digest=image.digest,
        status=PlatformStatus.PLANNED if plan.updates else PlatformStatus.UP_TO_DATE,
        plan=plan, packages=plan.packages, notes=plan.notes, errors=tuple(failures),
        os_id=os_release.id, os_version=os_release.version_id, engine=request.engine,
    )
    if show_plan is not None:
        show_plan(outcome)
    if failures and not request.ignore_errors:
        return replace(outcome, status=PlatformStatus.FAILED)
    if request.dry_run or not plan.updates:
        return outcome
    return _apply_plan(image, fs, database, plan, outcome, request, deadline, progress, workdir)


def _apply_plan(
    image: Image,
    fs: FileSystemView,
    database: DpkgDatabase,
    plan: Plan,
    outcome: PlatformOutcome,
    request: PatchRequest,
    deadline: Deadline,
    progress: ProgressHook | None,
    workdir: Path,
) -> PlatformOutcome:
    deadline.check()
    cache_root = request.cache_dir or _default_cache_dir()
    fetched = fetch_packages(plan, cache_root / "packages", progress=progress)
    deadline.check()

    # Re-patching replaces suture's previous patch layer, so its content seeds the new one.
    staging = Staging(workdir)
    seed_staging(image, staging)
    updates = [(p, fetched.paths[f"{p.name}:{p.architecture}"]) for p in plan.updates]
    applied = apply_updates(fs, database, updates, staging,
                            payload_cache=cache_root / "payloads")
    deadline.check()

    compression: Literal["gzip", "zstd"] = "zstd" if request.compression == "zstd" else "gzip"
    layer = build_layer(staging, fs, compression=compression)
    patched = append_patch_layer(
        image, layer, packages=[f"{p.name} {p.installed} -> {p.target}" for p in plan.updates],
    )
    packages = tuple(
        replace(p, status=PackageStatus.UPDATED) if p.status is PackageStatus.UPDATE else p
        for p in outcome.packages
    )
    return replace(
        outcome, status=PlatformStatus.PATCHED, image=patched, packages=packages,
        notes=outcome.notes + tuple(applied.notes),
        bytes_downloaded=fetched.bytes_downloaded,
    )


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "suture"


def assemble(artifact: Artifact, patched: Mapping[str, Image]) -> Artifact:
    """Return the artifact to write: the patched image, or the index with patched children."""
    if isinstance(artifact, Image):
        return patched[artifact.digest]
    return build_patched_index(artifact, patched)
