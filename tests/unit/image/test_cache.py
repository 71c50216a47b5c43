"""Tests for the on-disk blob cache."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from suture.errors import DigestMismatchError, ImageError
from suture.image.cache import BlobCache, default_cache_root


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_and_path(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    data = b"layer bytes"
    stored = cache.put_stream(_digest(data), io.BytesIO(data))
    assert stored.read_bytes() == data
    assert cache.path(_digest(data)) == stored


def test_missing_blob_has_no_path(tmp_path: Path) -> None:
    assert BlobCache(tmp_path).path(_digest(b"absent")) is None


def test_mismatch_leaves_nothing(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    with pytest.raises(DigestMismatchError):
        cache.put_stream(_digest(b"expected"), io.BytesIO(b"tampered"))
    assert cache.path(_digest(b"expected")) is None
    assert list((tmp_path / "sha256").iterdir()) == []


def test_digest_with_path_characters_rejected(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="unsupported digest"):
        BlobCache(tmp_path).path("sha256:../../etc/passwd")


def test_default_root_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / "suture" / "blobs"


def test_prune_removes_least_recently_used(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, max_bytes=250)
    blobs = [bytes([n]) * 100 for n in range(3)]
    for age, data in zip((300, 200, 100), blobs, strict=True):
        path = cache.put_bytes(_digest(data), data)
        os.utime(path, (1_700_000_000 - age, 1_700_000_000 - age))
    freed = cache.prune()
    assert freed == 100
    assert cache.path(_digest(blobs[0])) is None
    assert cache.path(_digest(blobs[2])) is not None
    assert cache.size() == 200


def test_clear_removes_every_blob(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path)
    cache.put_bytes(_digest(b"a"), b"a")
    cache.put_bytes(_digest(b"b"), b"b")
    cache.clear()
    assert cache.size() == 0


def test_concurrent_writers_store_one_blob(tmp_path: Path) -> None:
    data = os.urandom(4 * 1024 * 1024)
    source = tmp_path / "source"
    source.write_bytes(data)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from suture.image.cache import BlobCache\n"
        "cache = BlobCache(Path(sys.argv[1]))\n"
        "for _ in range(5):\n"
        "    with open(sys.argv[3], 'rb') as handle:\n"
        "        cache.put_stream(sys.argv[2], handle)\n"
    )
    root = tmp_path / "cache"
    workers = [
        subprocess.Popen([sys.executable, "-c", script, str(root), _digest(data), str(source)])
        for _ in range(4)
    ]
    codes = [worker.wait(timeout=60) for worker in workers]
    assert codes == [0, 0, 0, 0]
    assert sorted(p.name for p in (root / "sha256").iterdir()) == [_digest(data)[7:]]
    assert (root / "sha256" / _digest(data)[7:]).read_bytes() == data
