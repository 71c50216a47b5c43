"""Image locations (`docker://`, `oci:`, `oci-archive:`, `docker-archive:`, `docker-daemon:`)
and the functions that read and write an image or index at any of them.

Location syntax follows containers-transports(5) as skopeo uses it. The path of `oci:`,
`oci-archive:` and `docker-archive:` ends at the first ':', and the rest is the tag, or an image
reference for `docker-archive:`. Text without a known transport prefix is a registry reference,
as if it began with `docker://`.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from suture.errors import TransportError, UsageError
from suture.image.archive import (
    read_docker_archive,
    read_oci_archive,
    write_docker_archive,
    write_oci_archive,
)
from suture.image.cache import BlobCache
from suture.image.daemon import read_daemon, write_daemon
from suture.image.layout import read_layout, write_layout
from suture.image.model import Artifact, Image
from suture.image.reference import Reference, validate_tag
from suture.image.registry.artifacts import read_registry, write_registry
from suture.image.registry.client import ProgressHook, RegistryClient, RegistrySettings
from suture.image.registry.credentials import CredentialSources
from suture.image.registry.retry import RetryPolicy

logger = logging.getLogger(__name__)

TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive", "docker-daemon")

__all__ = [
    "TRANSPORTS",
    "Location",
    "ProgressHook",
    "TransportOptions",
    "copy_artifact",
    "parse_location",
    "read_artifact",
    "write_artifact",
]


@dataclass(frozen=True)
class Location:
    """An image location: a transport and its path, tag or reference."""

    transport: str
    path: Path | None = None
    tag: str | None = None
    reference: Reference | None = None

    def __str__(self) -> str:
        if self.transport in ("docker", "docker-daemon"):
            prefix = "docker://" if self.transport == "docker" else "docker-daemon:"
            return f"{prefix}{self.reference}"
        text = f"{self.transport}:{self.path}"
        return f"{text}:{self.tag}" if self.tag is not None else text


def parse_location(text: str) -> Location:
    """Parse an image location; text without a transport prefix is a registry reference."""
    if text.startswith("docker://"):
        return Location("docker", reference=Reference.parse(text.removeprefix("docker://")))
    if text.startswith("docker-daemon:"):
        return Location("docker-daemon",
                        reference=Reference.parse(text.removeprefix("docker-daemon:")))
    for transport in ("oci-archive", "docker-archive", "oci"):
        prefix = f"{transport}:"
        if text.startswith(prefix):
            return _parse_path_location(transport, text.removeprefix(prefix), text)
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    if scheme is not None:
        raise UsageError(f"invalid location {text!r}: unknown transport {scheme.group(1)!r}; "
                         "use one of " + ", ".join(TRANSPORTS))
    return Location("docker", reference=Reference.parse(text))


def _parse_path_location(transport: str, rest: str, text: str) -> Location:
    path_text, colon, tag = rest.partition(":")
    if transport != "docker-archive" and re.search(r"@sha(256|384|512)$", path_text):
        raise UsageError(
            f"invalid location {text!r}: {transport}: selects an image by tag "
            f"({transport}:DIR:TAG), not by digest; run without a tag to take the only image, "
            "or tag the image you want"
        )
    if not path_text:
        raise UsageError(f"invalid location {text!r}: missing the path after '{transport}:'")
    if colon and not tag:
        raise UsageError(f"invalid location {text!r}: empty tag after the path")
    if not colon:
        return Location(transport, path=Path(path_text))
    if transport == "docker-archive":
        # REF is an image reference (`name:tag`) or `@N`, the N-th image of the archive.
        if not tag.startswith("@"):
            Reference.parse(tag)
    else:
        validate_tag(tag, text)
    return Location(transport, path=Path(path_text), tag=tag)


@dataclass(frozen=True)
class TransportOptions:
    """Settings for every transport of one command.

    `timeout` is each network request's connect and read timeout in seconds. Registry blobs of
    at least `chunk_threshold` bytes are uploaded in chunks; `retry` bounds every retry loop.
    """

    insecure_registries: frozenset[str] = frozenset()
    ca_file: Path | None = None
    docker_config: Path | None = None
    auth_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    cache: BlobCache | None = None
    progress: ProgressHook | None = None
    chunk_threshold: int = 16 * 1024 * 1024
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def registry_settings(self) -> RegistrySettings:
        return RegistrySettings(
            insecure_registries=self.insecure_registries,
            ca_file=self.ca_file,
            credentials=CredentialSources(self.username, self.password, self.docker_config,
                                          self.auth_file),
            timeout=self.timeout,
            retry=self.retry,
            chunk_threshold=self.chunk_threshold,
            progress=self.progress,
        )


# Clients are shared per registry and options, so a read and a write to the same registry reuse
# connections and tokens. Blob stores of images read from a registry keep their client open.
_clients: dict[tuple[str, TransportOptions], RegistryClient] = {}
_clients_lock = threading.Lock()


def registry_client(registry: str, options: TransportOptions) -> RegistryClient:
    """Return the shared client for `registry` with `options`."""
    key = (registry, options)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = RegistryClient(registry, options.registry_settings())
            _clients[key] = client
        return client


def read_artifact(location: Location, options: TransportOptions | None = None) -> Artifact:
    """Read the image or index at `location`."""
    options = options or TransportOptions()
    logger.debug("reading %s", location)
    if location.transport == "docker":
        reference = _reference(location)
        return read_registry(registry_client(reference.registry, options), reference,
                             options.cache)
    if location.transport == "oci":
        return read_layout(_path(location), location.tag)
    if location.transport == "oci-archive":
        return read_oci_archive(_path(location), location.tag)
    if location.transport == "docker-archive":
        return read_docker_archive(_path(location), location.tag)
    if location.transport == "docker-daemon":
        return read_daemon(str(_reference(location)))
    raise TransportError(f"unknown transport {location.transport!r}; use one of "
                         + ", ".join(TRANSPORTS))


def write_artifact(
    location: Location, artifact: Artifact, options: TransportOptions | None = None
) -> str:
    """Write `artifact` to `location` and return the digest of the written manifest or index."""
    options = options or TransportOptions()
    logger.debug("writing %s to %s", artifact.digest, location)
    if location.transport == "docker":
        reference = _reference(location)
        return write_registry(registry_client(reference.registry, options), reference, artifact)
    if location.transport == "oci":
        return write_layout(_path(location), artifact, location.tag)
    if location.transport == "oci-archive":
        return write_oci_archive(_path(location), artifact, location.tag)

    # Docker archives and the daemon keep no manifest, so the digest returned for them is that
    # of the manifest suture would push for this image.
    if location.transport == "docker-archive":
        image = _single_image(artifact, location)
        tags = [location.tag] if location.tag and not location.tag.startswith("@") else []
        write_docker_archive(_path(location), image, tags)
        return image.digest
    if location.transport == "docker-daemon":
        image = _single_image(artifact, location)
        reference = _reference(location)
        if reference.digest is not None:
            raise TransportError(
                f"cannot load into the Docker daemon as {reference}: the daemon names images "
                "by tag; remove the digest"
            )
        write_daemon(image, [reference.with_tag(reference.tag or "latest").familiar])
        return image.digest
    raise TransportError(f"unknown transport {location.transport!r}; use one of "
                         + ", ".join(TRANSPORTS))


def copy_artifact(
    source: Location, destination: Location, options: TransportOptions | None = None
) -> str:
    """Copy an image or index between two locations unchanged; return the written digest."""
    return write_artifact(destination, read_artifact(source, options), options)


def _reference(location: Location) -> Reference:
    if location.reference is None:
        raise TransportError(f"location {location.transport}: has no image reference")
    return location.reference


def _path(location: Location) -> Path:
    if location.path is None:
        raise TransportError(f"location {location.transport}: has no path")
    return location.path


def _single_image(artifact: Artifact, location: Location) -> Image:
    if isinstance(artifact, Image):
        return artifact
    raise TransportError(
        f"{location} stores a single-platform image, but {artifact.digest} is a "
        "multi-platform index; select a platform first"
    )
