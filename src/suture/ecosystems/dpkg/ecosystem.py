"""DpkgEcosystem: the `Ecosystem` for Debian, Ubuntu, distroless and chiseled Ubuntu images."""

from __future__ import annotations

import json
import logging
import mmap
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import httpx

from suture.ecosystems.base import Finding, PackageFile, Plan, PlanOptions
from suture.ecosystems.dpkg.database import (
    CHISEL_MANIFEST_PATH,
    STATUS_D_PATH,
    STATUS_PATH,
    DpkgDatabase,
    read_database,
)
from suture.ecosystems.dpkg.detect import detect_distribution
from suture.ecosystems.dpkg.fetch import new_client
from suture.ecosystems.dpkg.index import PackagesIndex
from suture.ecosystems.dpkg.release import (
    Release,
    fetch_index_file,
    fetch_release,
    image_certificates,
)
from suture.ecosystems.dpkg.resolve import CandidatePool, plan_packages
from suture.ecosystems.dpkg.sources import AptSource, select_sources
from suture.errors import RepositoryError
from suture.image.fsview import FileSystemView

logger = logging.getLogger(__name__)

DPKG_ARCH_PATH = "/var/lib/dpkg/arch"

# Parsed indexes by (SHA256 of the index, base URL, suite, NotAutomatic), so that the platforms
# of one multi-platform image and repeated plans in one process parse each index once.
_PARSED: dict[tuple[str, str, str, bool], PackagesIndex] = {}
_PARSED_MAX = 16
# The format of the stanza offsets saved beside a decompressed index; a change bumps it.
_OFFSETS_VERSION = 1


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/suture`, or `~/.cache/suture`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "suture"


class DpkgEcosystem:
    """Plans updates of dpkg-managed images against their apt repositories."""

    name = "dpkg"

    def detect(self, fs: FileSystemView) -> bool:
        return any(
            fs.lstat(path) is not None
            for path in (STATUS_PATH, STATUS_D_PATH, CHISEL_MANIFEST_PATH)
        )

    def plan(
        self, fs: FileSystemView, findings: Sequence[Finding] | None, options: PlanOptions
    ) -> Plan:
        """Plan updates for `findings`, or for every package when `findings` is None.

        Downloads and verifies repository indexes only; touches nothing in the image.
        """
        database = read_database(fs)
        distribution = detect_distribution(fs, database)
        sources = select_sources(
            fs,
            distribution,
            mirrors=options.mirrors,
            extra_sources=options.extra_sources,
            host_apt_dir=options.host_apt_dir,
        )
        architectures = _architectures(fs, database)
        cache_dir = options.cache_dir or default_cache_dir()

        notes: list[str] = []
        indexes: dict[str, list[PackagesIndex]] = {arch: [] for arch in architectures}
        keys: list[Any] | None = None

        def image_keys() -> list[Any]:
            nonlocal keys
            if keys is None:
                keys = image_certificates(fs)
            return keys

        with new_client() as client:
            for source in sources:
                release = fetch_release(
                    client,
                    source,
                    fs,
                    image_keys,
                    allow_insecure=options.allow_insecure_repositories,
                )
                notes += release.notes
                for arch in architectures:
                    if source.architectures and arch not in source.architectures:
                        continue
                    for index in _load_indexes(client, release, source, arch, cache_dir):
                        indexes[arch].append(index)
        if not any(indexes.values()):
            raise RepositoryError(
                f"no Packages index for {', '.join(architectures)} in "
                f"{', '.join(str(s) for s in sources)}; check the image's architecture and the "
                "repository's components"
            )

        pool = CandidatePool(indexes, database.native_architecture)
        packages, candidates = plan_packages(database, pool, findings)
        downloads = {
            key: PackageFile(
                name=c.name,
                version=c.version,
                architecture=c.architecture,
                url=c.url,
                size=c.size,
                sha256=c.sha256,
            )
            for key, c in candidates.items()
        }
        return Plan(
            ecosystem=self.name,
            distribution=str(distribution),
            packages=tuple(packages),
            downloads=downloads,
            notes=tuple(notes),
        )


def _architectures(fs: FileSystemView, database: DpkgDatabase) -> list[str]:
    # /var/lib/dpkg/arch lists the architectures added with `dpkg --add-architecture`.
    architectures = [database.native_architecture] if database.native_architecture else []
    data = fs.read(DPKG_ARCH_PATH)
    listed = data.decode(errors="replace").split() if data is not None else []
    for arch in [*listed, *database.foreign_architectures]:
        if arch not in architectures:
            architectures.append(arch)
    return architectures


def _load_indexes(
    client: httpx.Client, release: Release, source: AptSource, arch: str, cache_dir: Path
) -> list[PackagesIndex]:
    names = (
        ["Packages"]
        if source.is_flat
        else [f"{component}/binary-{arch}/Packages" for component in source.components]
    )
    loaded: list[PackagesIndex] = []
    for name in names:
        entry = next(
            (release.files[name + s] for s in (".xz", ".gz", "") if name + s in release.files),
            None,
        )
        if entry is None:
            logger.debug("%s lists no %s", source, name)
            continue
        key = (entry.sha256, source.uri, source.suite, release.not_automatic)
        cached = _PARSED.get(key)
        if cached is not None:
            loaded.append(cached)
            continue
        started = time.monotonic()
        path = fetch_index_file(client, release, name, cache_dir)
        if path is None:
            continue
        offsets_path = cache_dir / "decompressed" / f"{path.name}.offsets-{_OFFSETS_VERSION}"
        offsets = _load_offsets(offsets_path)
        index = PackagesIndex(
            _map_file(path),
            base_url=source.uri,
            suite=source.suite,
            not_automatic=release.not_automatic,
            offsets=offsets,
        )
        if offsets is None:
            _save_offsets(offsets_path, index)
        logger.debug(
            "parsed %s %s (%d packages, sha256 %s) in %.2fs",
            source,
            name,
            len(index),
            entry.sha256[:12],
            time.monotonic() - started,
        )
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = index
        loaded.append(index)
    return loaded


def _map_file(path: Path) -> bytes | mmap.mmap:
    """Map the decompressed index read-only; the cache never rewrites a file in place."""
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return b""
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def _load_offsets(path: Path) -> dict[str, list[int]] | None:
    """Return the stanza offsets saved at `path`, or None when absent or invalid."""
    try:
        offsets = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    valid = isinstance(offsets, dict) and all(
        isinstance(starts, list) and all(type(start) is int for start in starts)
        for starts in offsets.values()
    )
    if not valid:
        logger.debug("ignoring the invalid index offsets %s", path)
        return None
    return cast(dict[str, list[int]], offsets)


def _save_offsets(path: Path, index: PackagesIndex) -> None:
    """Save the index's stanza offsets through a temporary file and a rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(index.offsets, handle, separators=(",", ":"))
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError as error:
        logger.debug("failed to save the index offsets %s: %s", path, error)
