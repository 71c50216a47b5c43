"""Shared pieces of the dpkg unit tests: an in-memory FileSystemView and the real fixtures."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from suture.image.fsview import FileEntry, FileType

# The real package databases sit beside the repository, or where SUTURE_REAL_FIXTURES points.
PKGDB_FIXTURES = Path(
    os.environ.get("SUTURE_REAL_FIXTURES",
                   Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "real")
) / "pkgdb"


class MemoryFileSystem:
    """A FileSystemView over a dict from absolute path to contents; directories are implied."""

    def __init__(self, files: dict[str, bytes | str]) -> None:
        self.files = {
            path: data.encode() if isinstance(data, str) else data for path, data in files.items()
        }

    def _directories(self) -> set[str]:
        directories = {"/"}
        for path in self.files:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                directories.add("/" + "/".join(parts[:i]))
        return directories

    def lstat(self, path: str) -> FileEntry | None:
        if path in self.files:
            return FileEntry(path, FileType.FILE, 0o644, 0, 0, len(self.files[path]), 0)
        if path in self._directories():
            return FileEntry(path, FileType.DIRECTORY, 0o755, 0, 0, 0, 0)
        return None

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def listdir(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        names = {p[len(prefix) :].split("/", 1)[0] for p in self.files if p.startswith(prefix)}
        return sorted(names)

    def resolve(self, path: str) -> str:
        return path

    def paths(self) -> list[str]:
        return sorted(set(self.files) | self._directories())


@pytest.fixture
def memory_fs() -> type[MemoryFileSystem]:
    return MemoryFileSystem


@pytest.fixture
def pkgdb_fixture() -> Callable[[str], str]:
    def read(name: str) -> str:
        path = PKGDB_FIXTURES / name
        if not path.exists():
            pytest.skip(f"fixture {path} is not on this machine")
        return path.read_text()

    return read
