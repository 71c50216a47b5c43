"""Blob uploads: monolithic (POST then PUT) and chunked (POST, PATCH..., PUT) with resumption.

distribution-spec v1.1, "Pushing blobs": a chunked upload sends each PATCH with
`Content-Range: <start>-<end>`. When a PATCH fails, `GET <location>` returns the `Range` the
registry has stored (`0-<last byte>`), and the upload continues from there. If the upload
session itself is gone, the blob is uploaded again from a new session, a bounded number of times.
distribution 2.8 takes the second path after a PATCH that broke mid-body: it keeps the bytes it
received but then rejects the session ("upload resumed at wrong offset").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import BinaryIO

import httpx

from suture.errors import RegistryError
from suture.image.model import Descriptor
from suture.image.registry.auth import repository_scope
from suture.image.registry.client import RegistryClient
from suture.image.registry.retry import RETRYABLE_STATUS

logger = logging.getLogger(__name__)

BlobOpener = Callable[[], AbstractContextManager[BinaryIO]]


class _RestartUpload(Exception):
    """The upload session is lost; the upload must start again from byte 0."""


def upload_blob(
    client: RegistryClient,
    repository: str,
    descriptor: Descriptor,
    open_source: BlobOpener,
    location: str | None = None,
) -> None:
    """Upload one blob; `location` is an upload session already opened (by a failed mount)."""
    policy = client.settings.retry
    chunked = descriptor.size >= client.settings.chunk_threshold
    started = time.monotonic()
    for session in range(1, policy.max_attempts + 1):
        if location is None:
            location = start_upload(client, repository, descriptor)
        try:
            if chunked:
                _upload_chunked(client, repository, descriptor, open_source, location)
            else:
                _upload_monolithic(client, repository, descriptor, open_source, location)
        except _RestartUpload as restart:
            # A PUT lost on the way back may have committed the blob anyway.
            if client.blob_exists(repository, descriptor.digest):
                break
            if session == policy.max_attempts:
                raise RegistryError(
                    f"upload of blob {descriptor.digest} to {client.registry}/{repository} "
                    f"failed {session} times: {restart}"
                ) from None
            logger.warning("upload of blob %s restarts: %s", descriptor.digest, restart)
            policy.sleep(policy.delay(session))
            location = None
            continue
        break
    logger.debug("uploaded blob %s (%d bytes) to %s/%s in %.2f s%s", descriptor.digest,
                 descriptor.size, client.registry, repository, time.monotonic() - started,
                 " in chunks" if chunked else "")
    if client.settings.progress is not None:
        client.settings.progress(f"upload {descriptor.digest[:19]}", descriptor.size,
                                 descriptor.size)


def start_upload(client: RegistryClient, repository: str, descriptor: Descriptor) -> str:
    """Open an upload session and return its location."""
    what = f"upload of blob {descriptor.digest} to {client.registry}/{repository}"
    response = client.request(
        "POST", client.url(f"/v2/{repository}/blobs/uploads/"),
        scopes=[repository_scope(repository, "pull,push")], what=what, repository=repository,
        headers={"Content-Length": "0"},
    )
    client.check(response, (202,), what, repository, "push")
    return client.location(response, what)


def _upload_monolithic(
    client: RegistryClient, repository: str, descriptor: Descriptor, open_source: BlobOpener,
    location: str,
) -> None:
    # Reading to the end runs the source's digest check before anything is sent.
    with open_source() as stream:
        data = stream.read()
    _finish(client, repository, descriptor, location, data)


def _finish(
    client: RegistryClient, repository: str, descriptor: Descriptor, location: str, data: bytes
) -> None:
    what = f"upload of blob {descriptor.digest} to {client.registry}/{repository}"
    url = httpx.URL(location).copy_merge_params({"digest": descriptor.digest})
    try:
        response = client.request(
            "PUT", str(url), scopes=[repository_scope(repository, "pull,push")], what=what,
            repository=repository, content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
    except RegistryError as error:
        raise _RestartUpload(str(error)) from error
    if response.status_code in (404, 416) or response.status_code in RETRYABLE_STATUS:
        raise _RestartUpload(f"HTTP {response.status_code} on the final PUT")
    client.check(response, (201,), what, repository, "push")


def _upload_chunked(
    client: RegistryClient, repository: str, descriptor: Descriptor, open_source: BlobOpener,
    location: str,
) -> None:
    offset = 0
    with open_source() as stream:
        while True:
            chunk = stream.read(client.settings.chunk_size)
            if not chunk:
                break
            location = _send_chunk(client, repository, descriptor, location, chunk, offset)
            offset += len(chunk)
            if client.settings.progress is not None:
                client.settings.progress(f"upload {descriptor.digest[:19]}", offset,
                                         descriptor.size)
    _finish(client, repository, descriptor, location, b"")


def _send_chunk(
    client: RegistryClient, repository: str, descriptor: Descriptor, location: str,
    chunk: bytes, offset: int,
) -> str:
    """PATCH one chunk at `offset`, resuming from the registry's Range after a failure."""
    policy = client.settings.retry
    what = f"upload of blob {descriptor.digest} to {client.registry}/{repository}"
    scopes = [repository_scope(repository, "pull,push")]
    start = offset
    for attempt in range(1, policy.max_attempts + 1):
        remaining = chunk[start - offset:]
        if not remaining:
            return location
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(remaining) - 1}",
        }
        failure: str
        try:
            response = client.request("PATCH", location, scopes=scopes, what=what,
                                      repository=repository, headers=headers,
                                      content=remaining, retry=False)
        except RegistryError as error:
            failure = str(error)
        else:
            if response.status_code == 202:
                return client.location(response, what)
            if response.status_code not in RETRYABLE_STATUS and response.status_code != 416:
                if response.status_code == 404:
                    raise _RestartUpload("the registry lost the upload session")
                client.check(response, (202,), what, repository, "push")
            failure = f"HTTP {response.status_code}"

        if attempt == policy.max_attempts:
            break
        policy.sleep(policy.delay(attempt))
        location, stored = _upload_status(client, repository, descriptor, location)
        if not offset <= stored <= offset + len(chunk):
            raise _RestartUpload(f"the registry has stored {stored} bytes, expected {offset} to "
                                 f"{offset + len(chunk)}")
        logger.warning("%s: chunk at byte %d failed (%s); resuming at byte %d", what, start,
                       failure, stored)
        start = stored
    raise _RestartUpload(f"chunk at byte {offset} failed {policy.max_attempts} times")


def _upload_status(
    client: RegistryClient, repository: str, descriptor: Descriptor, location: str
) -> tuple[str, int]:
    """Return the session location and how many bytes the registry has stored."""
    what = f"status of upload of blob {descriptor.digest} to {client.registry}/{repository}"
    response = client.request("GET", location,
                              scopes=[repository_scope(repository, "pull,push")], what=what,
                              repository=repository)
    if response.status_code in (401, 403):
        client.check(response, (204,), what, repository, "push")
    if response.status_code != 204:
        raise _RestartUpload(f"the upload session is unusable (HTTP {response.status_code})")
    # distribution 2.8 reports an empty upload as "0-0", the same as one stored byte. Chunks are
    # far larger than one byte, so "0-0" is read as nothing stored.
    stored = 0
    range_header = response.headers.get("range", "")
    end = range_header.rsplit("-", 1)[1] if "-" in range_header else ""
    if end.isdigit() and int(end) > 0:
        stored = int(end) + 1
    new_location = client.location(response, what) if response.headers.get("location") else location
    return new_location, stored
