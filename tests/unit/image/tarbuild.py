"""Build small layer tars in memory for the image tests."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass

import zstandard


@dataclass(frozen=True)
class Member:
    """One tar member to write: a file (data), directory, symlink or hardlink."""

    name: str
    data: bytes | None = None
    kind: bytes = tarfile.REGTYPE
    linkname: str = ""
    mode: int = 0o644
    size: int | None = None


def file(name: str, data: bytes = b"", mode: int = 0o644) -> Member:
    return Member(name, data, tarfile.REGTYPE, mode=mode)


def directory(name: str, mode: int = 0o755) -> Member:
    return Member(name, None, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Member:
    return Member(name, None, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> Member:
    return Member(name, None, tarfile.LNKTYPE, linkname=target)


def make_tar(members: Sequence[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            info = tarfile.TarInfo(member.name)
            info.type = member.kind
            info.mode = member.mode
            info.linkname = member.linkname
            info.mtime = 1_700_000_000
            data = member.data or b""
            info.size = member.size if member.size is not None else len(data)
            if member.kind == tarfile.REGTYPE:
                archive.addfile(info, io.BytesIO(data))
            else:
                info.size = 0
                archive.addfile(info)
    return buffer.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zstd_bytes(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)
