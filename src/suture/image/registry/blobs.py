"""Blobs of a registry repository as a `BlobStore`, read as verified, resumable streams.

A blob download that loses its connection part-way resumes with an HTTP Range request from the
last byte received, which distribution-spec "Pulling blobs" allows on blob GETs. When a registry
ignores the range and sends the whole blob again, the bytes already read are skipped. The digest
is checked by `suture.image.store.verifying_reader` as the caller reads.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import BinaryIO, cast

import httpx

from suture.errors import RegistryError
from suture.image.cache import BlobCache
from suture.image.model import Descriptor
from suture.image.registry.client import BODY_READ_ERRORS, RegistryClient
from suture.image.registry.retry import describe_wait
from suture.image.store import verifying_reader

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_READ_ERRORS = BODY_READ_ERRORS


class RegistryBlobStore:
    """The blobs of `repository` on the client's registry; `origin` enables mounts."""

    def __init__(
        self, client: RegistryClient, repository: str, cache: BlobCache | None = None
    ) -> None:
        self.client = client
        self.repository = repository
        self.cache = cache
        self.origin: tuple[str, str] | None = (client.registry, repository)

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[BinaryIO]:
        if self.cache is not None:
            return self._open_cached(descriptor)
        return self._open_remote(descriptor)

    def read_blob(self, descriptor: Descriptor) -> bytes:
        with self.open_blob(descriptor) as stream:
            return stream.read()

    @contextmanager
    def _open_remote(self, descriptor: Descriptor) -> Iterator[BinaryIO]:
        body = _ResumableBody(self.client, self.repository, descriptor)
        what = f"blob {descriptor.digest} from {self.client.registry}/{self.repository}"
        stream = verifying_reader(cast(BinaryIO, body), descriptor, what)
        try:
            yield stream
        finally:
            stream.close()

    @contextmanager
    def _open_cached(self, descriptor: Descriptor) -> Iterator[BinaryIO]:
        assert self.cache is not None
        path = self.cache.path(descriptor.digest)
        if path is None:
            with self._open_remote(descriptor) as remote:
                path = self.cache.put_stream(descriptor.digest, remote)
        handle = path.open("rb")
        stream = verifying_reader(handle, descriptor, f"cached blob {descriptor.digest} ({path})")
        try:
            yield stream
        finally:
            stream.close()


class _ResumableBody(io.RawIOBase):
    """The body of a blob GET that reconnects from its current offset after a read error."""

    def __init__(self, client: RegistryClient, repository: str, descriptor: Descriptor) -> None:
        super().__init__()
        self._client = client
        self._repository = repository
        self._descriptor = descriptor
        self._offset = 0
        self._resumes = 0
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = self._next_chunk()
            if chunk is None:
                return 0
            self._pending = chunk
            self._report_progress()
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        self._offset += count
        return count

    def _report_progress(self) -> None:
        progress = self._client.settings.progress
        if progress is not None:
            received = self._offset + len(self._pending)
            progress(f"download {self._descriptor.digest[:19]}", received, self._descriptor.size)

    def close(self) -> None:
        if self._response is not None:
            self._response.close()
            self._response = None
        super().close()

    def _next_chunk(self) -> bytes | None:
        policy = self._client.settings.retry
        while True:
            if self._chunks is None:
                self._open()
            assert self._chunks is not None
            try:
                return next(self._chunks, None)
            except _READ_ERRORS as error:
                self._resumes += 1
                if not policy.should_retry(self._resumes):
                    raise RegistryError(
                        f"blob {self._descriptor.digest} from {self._client.registry}/"
                        f"{self._repository}: download failed at byte {self._offset} after "
                        f"{self._resumes} attempts: {type(error).__name__}: {error}"
                    ) from error
                delay = policy.delay(self._resumes)
                logger.warning("blob %s: %s at byte %d; %s", self._descriptor.digest,
                               type(error).__name__, self._offset,
                               describe_wait(delay, "resuming"))
                if self._response is not None:
                    self._response.close()
                self._response = None
                self._chunks = None
                policy.sleep(delay)

    def _open(self) -> None:
        response = self._client.open_blob_response(self._repository, self._descriptor.digest,
                                                   self._offset)
        chunks = response.iter_bytes(_CHUNK)
        if self._offset and response.status_code == 200:
            chunks = _skip(chunks, self._offset)
        self._response = response
        self._chunks = chunks


def _skip(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    """Drop the first `count` bytes of a chunk stream (a registry that ignored Range)."""
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:]
        count = 0
