"""Blob stores backed by local files, and a reader that verifies a blob's digest as it streams.

Every store returns a `VerifyingReader` from `open_blob`. It hashes the bytes as the caller reads
them and raises DigestMismatchError at end of stream, so reading a blob to its end verifies it
without a second pass.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from suture.errors import DigestMismatchError, ImageError
from suture.image.model import BlobStore, Descriptor

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


class VerifyingReader(io.RawIOBase):
    """A read-only stream over `source` that checks size and digest as bytes pass through.

    The check runs when a read reaches end of stream: a short stream, extra bytes beyond `size`
    or a different sha256 raise DigestMismatchError naming `what`. A caller that stops reading
    early gets no check. `size` may be None when the expected length is unknown.
    """

    def __init__(self, source: BinaryIO, digest: str, size: int | None, what: str) -> None:
        super().__init__()
        algorithm, _, expected = digest.partition(":")
        if algorithm not in hashlib.algorithms_available or not expected:
            raise ImageError(f"{what}: unsupported digest {digest!r}")
        self._source = source
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self._expected = expected
        self._digest = digest
        self._size = size
        self._what = what
        self._count = 0
        self._verified = False

    @property
    def bytes_read(self) -> int:
        """Number of bytes returned so far."""
        return self._count

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if len(view) == 0:
            return 0
        count = self._read_into(view)
        if not count:
            self._finish()
            return 0
        self._count += count
        if self._size is not None and self._count > self._size:
            raise DigestMismatchError(
                f"{self._what}: content is longer than the expected {self._size} bytes "
                f"(digest {self._digest})"
            )
        self._hash.update(view[:count])
        return count

    def _read_into(self, view: memoryview) -> int:
        # Reading straight into the caller's buffer saves a copy per chunk. Sources without
        # readinto (none of suture's own) go through read.
        readinto = getattr(self._source, "readinto", None)
        if readinto is not None:
            return int(readinto(view) or 0)
        data = self._source.read(len(view)) or b""
        view[: len(data)] = data
        return len(data)

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        buffer = bytearray(size)
        count = self.readinto(buffer)
        return bytes(buffer[:count])

    def readall(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            chunk = self.read(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def verify_rest(self) -> None:
        """Read and discard what is left of the stream, then run the end-of-stream check."""
        while self.read(_CHUNK):
            pass

    def _finish(self) -> None:
        if self._verified:
            return
        if self._size is not None and self._count != self._size:
            raise DigestMismatchError(
                f"{self._what}: content is {self._count} bytes, expected {self._size} "
                f"(digest {self._digest}); the blob is truncated or corrupt"
            )
        actual = self._hash.hexdigest()
        if actual != self._expected:
            raise DigestMismatchError(
                f"{self._what}: content has digest {self._algorithm}:{actual}, "
                f"expected {self._digest}"
            )
        self._verified = True

    def close(self) -> None:
        if not self.closed:
            self._source.close()
        super().close()


class _ChunkSource(io.RawIOBase):
    """A file-like view of an iterator of byte chunks (an HTTP response body, for example)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


def verifying_reader(
    source: BinaryIO | Iterable[bytes], descriptor: Descriptor, what: str | None = None
) -> BinaryIO:
    """Wrap `source` so that reading it to the end checks `descriptor`'s size and digest.

    `source` is a binary file object or an iterable of byte chunks such as
    `httpx.Response.iter_bytes()`. Closing the returned stream closes a file-object source.
    """
    if not hasattr(source, "read"):
        source = cast(BinaryIO, _ChunkSource(source))
    reader = VerifyingReader(cast(BinaryIO, source), descriptor.digest, descriptor.size,
                             what or f"blob {descriptor.digest}")
    return io.BufferedReader(reader, _CHUNK)


class FileBlobStore:
    """Serves the blobs listed in `paths` from files and every other blob from `fallback`.

    This is how a patched image is assembled: the new layer and config sit in local files, the
    original layers stay where they were read from. `origin` is the fallback's, so a registry
    sink can still mount the original layers from their source repository.
    """

    def __init__(self, paths: Mapping[str, Path], fallback: BlobStore | None = None) -> None:
        self._paths = dict(paths)
        self._fallback = fallback
        self.origin: tuple[str, str] | None = fallback.origin if fallback is not None else None

    def path(self, digest: str) -> Path | None:
        """Return the local file that contains `digest`, or None when the blob is not local."""
        return self._paths.get(digest)

    def open_blob(self, descriptor: Descriptor) -> AbstractContextManager[BinaryIO]:
        path = self._paths.get(descriptor.digest)
        if path is not None:
            return _open_verified(path, descriptor)
        if self._fallback is None:
            raise ImageError(
                f"blob {descriptor.digest} not found: no local file and no source store to read it"
            )
        return self._fallback.open_blob(descriptor)

    def read_blob(self, descriptor: Descriptor) -> bytes:
        with self.open_blob(descriptor) as stream:
            return stream.read()


@contextmanager
def _open_verified(path: Path, descriptor: Descriptor) -> Iterator[BinaryIO]:
    try:
        handle = path.open("rb")
    except OSError as error:
        raise ImageError(
            f"blob {descriptor.digest}: cannot open {path}: {error.strerror}"
        ) from error
    stream = verifying_reader(handle, descriptor, f"blob {descriptor.digest} ({path})")
    try:
        yield stream
    finally:
        stream.close()
