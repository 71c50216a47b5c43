"""A content-addressed blob cache on disk, shared safely by concurrent processes.

Blobs live at `<root>/sha256/<hex>`. A blob is written to a temporary file in the same
directory, verified, and renamed into place. Rename is atomic on POSIX filesystems, and two
processes writing the same digest write identical bytes. So readers never see a partial blob
and writers need no lock. Only `prune` and `clear`, which delete, take an exclusive `flock` on
`<root>/.lock` so that two of them do not race each other.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from suture.errors import DigestMismatchError, ImageError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024**3
_DIGEST_RE = re.compile(r"^sha256:([0-9a-f]{64})$")
_TEMP_PREFIX = ".tmp-"
# Temporary files older than this are left over from a killed process and are removed by prune.
_STALE_TEMP_SECONDS = 24 * 3600
_CHUNK = 1024 * 1024


def default_cache_root() -> Path:
    """Return `$XDG_CACHE_HOME/suture/blobs`, or `~/.cache/suture/blobs` when it is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "suture" / "blobs"


class BlobCache:
    """Blobs keyed by sha256 digest, pruned least recently used first down to `max_bytes`."""

    def __init__(self, root: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.max_bytes = max_bytes

    def _blob_path(self, digest: str) -> Path:
        match = _DIGEST_RE.match(digest)
        if match is None:
            raise ImageError(f"blob cache: unsupported digest {digest!r}; expected sha256:<64 hex>")
        return self.root / "sha256" / match.group(1)

    def path(self, digest: str) -> Path | None:
        """Return the file holding `digest`, marking it recently used, or None if not cached."""
        path = self._blob_path(digest)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    def put_stream(self, digest: str, stream: BinaryIO) -> Path:
        """Copy `stream` into the cache under `digest`, verifying it, and return the blob's path.

        Raises DigestMismatchError, leaving nothing behind, when the content has another digest.
        """
        final = self._blob_path(digest)
        directory = final.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
            handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the block below
                dir=directory, prefix=_TEMP_PREFIX, delete=False
            )
        except OSError as error:
            raise ImageError(f"blob cache {self.root} is not writable ({error.strerror}); set "
                             "XDG_CACHE_HOME to a writable directory") from error

        temporary = Path(handle.name)
        try:
            hasher = hashlib.sha256()
            with handle:
                while chunk := stream.read(_CHUNK):
                    hasher.update(chunk)
                    handle.write(chunk)
            actual = "sha256:" + hasher.hexdigest()
            if actual != digest:
                raise DigestMismatchError(
                    f"blob {digest}: content has digest {actual}; not stored in the cache"
                )
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        logger.debug("cached blob %s (%d bytes)", digest, final.stat().st_size)
        return final

    def put_bytes(self, digest: str, data: bytes) -> Path:
        """Store `data` under `digest` after verifying it, and return the blob's path."""
        existing = self.path(digest)
        if existing is not None:
            return existing
        return self.put_stream(digest, io.BytesIO(data))

    def size(self) -> int:
        """Return the total size in bytes of the cached blobs."""
        return sum(size for _, size, _ in self._blobs())

    def prune(self) -> int:
        """Delete least recently used blobs until the cache fits `max_bytes`; return bytes freed."""
        freed = 0
        with self._lock():
            blobs = sorted(self._blobs(), key=lambda item: item[2])
            total = sum(size for _, size, _ in blobs)
            for path, size, _ in blobs:
                if total <= self.max_bytes:
                    break
                path.unlink(missing_ok=True)
                total -= size
                freed += size
            self._remove_stale_temporaries()
        if freed:
            logger.debug("pruned %d bytes from blob cache %s", freed, self.root)
        return freed

    def clear(self) -> None:
        """Delete every cached blob; temporary files of writes in progress are left alone."""
        with self._lock():
            for path, _, _ in self._blobs():
                path.unlink(missing_ok=True)
            self._remove_stale_temporaries()

    def _blobs(self) -> Iterator[tuple[Path, int, float]]:
        directory = self.root / "sha256"
        if not directory.is_dir():
            return
        for entry in os.scandir(directory):
            if entry.name.startswith(_TEMP_PREFIX) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            last_used = max(info.st_atime, info.st_mtime)
            yield Path(entry.path), info.st_size, last_used

    def _remove_stale_temporaries(self) -> None:
        directory = self.root / "sha256"
        if not directory.is_dir():
            return
        now = time.time()
        for entry in os.scandir(directory):
            if not entry.name.startswith(_TEMP_PREFIX):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime >= _STALE_TEMP_SECONDS:
                    os.unlink(entry.path)
            except FileNotFoundError:
                continue

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
