"""Tests for the file-backed blob store and the verifying reader."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from suture.errors import DigestMismatchError, ImageError
from suture.image.model import OCI_LAYER, Descriptor
from suture.image.store import FileBlobStore, verifying_reader


def _descriptor(data: bytes) -> Descriptor:
    return Descriptor(OCI_LAYER, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))


def test_verifying_reader_passes_matching_content() -> None:
    data = b"x" * 3_000_000
    stream = verifying_reader(io.BytesIO(data), _descriptor(data))
    assert stream.read() == data


def test_verifying_reader_rejects_other_content_at_end() -> None:
    descriptor = _descriptor(b"expected")
    stream = verifying_reader(io.BytesIO(b"tampered"), descriptor)
    assert stream.read(4) == b"tamp"
    with pytest.raises(DigestMismatchError, match="expected sha256:"):
        stream.read()


def test_verifying_reader_rejects_truncated_content() -> None:
    data = b"0123456789"
    stream = verifying_reader(io.BytesIO(data[:5]), _descriptor(data))
    with pytest.raises(DigestMismatchError, match="truncated"):
        stream.read()


def test_verifying_reader_rejects_extra_bytes() -> None:
    data = b"0123456789"
    stream = verifying_reader(io.BytesIO(data + b"extra"), _descriptor(data))
    with pytest.raises(DigestMismatchError, match="longer than"):
        stream.read()


def test_verifying_reader_accepts_chunk_iterator() -> None:
    data = b"abc" * 1000
    chunks = (data[i : i + 7] for i in range(0, len(data), 7))
    stream = verifying_reader(chunks, _descriptor(data))
    assert stream.read() == data


class _ReadOnlySource:
    """A source with `read` only, in short pieces, that returns None at its end."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes | None:
        if not self._data:
            return None
        piece, self._data = self._data[:7], self._data[7:]
        return piece


def test_verifying_reader_reads_source_without_readinto() -> None:
    data = b"short content in pieces"
    stream = verifying_reader(_ReadOnlySource(data), _descriptor(data))  # type: ignore[arg-type]
    assert stream.read() == data


def test_verifying_reader_checks_source_without_readinto() -> None:
    descriptor = _descriptor(b"short content in pieces")
    source = _ReadOnlySource(b"tampered content!!")
    stream = verifying_reader(source, descriptor)  # type: ignore[arg-type]
    with pytest.raises(DigestMismatchError):
        stream.read()


def test_file_blob_store_prefers_local_file(tmp_path: Path) -> None:
    data = b"new layer"
    path = tmp_path / "layer"
    path.write_bytes(data)
    store = FileBlobStore({_descriptor(data).digest: path}, None)
    assert store.read_blob(_descriptor(data)) == data
    assert store.origin is None


def test_file_blob_store_uses_fallback(tmp_path: Path) -> None:
    old = b"original layer"
    fallback_path = tmp_path / "old"
    fallback_path.write_bytes(old)
    fallback = FileBlobStore({_descriptor(old).digest: fallback_path}, None)
    fallback.origin = ("registry.example:5000", "team/app")
    store = FileBlobStore({}, fallback)
    assert store.read_blob(_descriptor(old)) == old
    assert store.origin == ("registry.example:5000", "team/app")


def test_file_blob_store_missing_blob() -> None:
    store = FileBlobStore({}, None)
    with pytest.raises(ImageError, match="not found"):
        store.read_blob(_descriptor(b"absent"))


def test_file_blob_store_detects_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "layer"
    path.write_bytes(b"changed on disk")
    store = FileBlobStore({_descriptor(b"original").digest: path}, None)
    with pytest.raises(DigestMismatchError):
        store.read_blob(_descriptor(b"original"))
