"""Helpers for the apply-engine tests: real .deb builds, real dpkg roots, a directory view.

`build_deb` uses the real `dpkg-deb`, `dpkg_install` the real `dpkg --root`, so every expected
result comes from dpkg itself rather than from the code under test.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

from suture.image.fsview import FileEntry, FileType
from suture.patch.staging import Staging

# Bookkeeping dpkg writes for itself that an offline install has no reason to reproduce.
DPKG_BOOKKEEPING = (
    "/var/lib/dpkg/status-old",
    "/var/lib/dpkg/available",
    "/var/lib/dpkg/lock",
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/triggers",
    "/var/lib/dpkg/updates",
)


class DirectoryView:
    """A FileSystemView over an unpacked root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def lstat(self, path: str) -> FileEntry | None:
        try:
            info = os.lstat(self._host(path))
        except FileNotFoundError:
            return None
        linkname = ""
        if stat.S_ISLNK(info.st_mode):
            kind = FileType.SYMLINK
            linkname = os.readlink(self._host(path))
        elif stat.S_ISDIR(info.st_mode):
            kind = FileType.DIRECTORY
        elif stat.S_ISREG(info.st_mode):
            kind = FileType.FILE
        else:
            kind = FileType.FIFO
        return FileEntry(path, kind, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
                         info.st_size, int(info.st_mtime), linkname)

    def read(self, path: str) -> bytes | None:
        resolved = self.resolve(path)
        host = self._host(resolved)
        if not host.is_file() or host.is_symlink():
            return None
        return host.read_bytes()

    def listdir(self, path: str) -> list[str]:
        host = self._host(path)
        if host.is_symlink() or not host.is_dir():
            return []
        return sorted(os.listdir(host))

    def resolve(self, path: str) -> str:
        parts = [p for p in path.split("/") if p]
        parts.reverse()
        result = "/"
        hops = 0
        while parts:
            name = parts.pop()
            if name == "..":
                result = os.path.dirname(result)
                continue
            candidate = os.path.join(result, name)
            entry = self.lstat(candidate)
            if entry is not None and entry.type is FileType.SYMLINK and hops < 40:
                hops += 1
                if entry.linkname.startswith("/"):
                    result = "/"
                parts.extend(reversed([p for p in entry.linkname.split("/") if p]))
                continue
            result = candidate
        return result

    def paths(self) -> list[str]:
        found = []
        for directory, names, files in os.walk(self.root):
            for name in names + files:
                found.append("/" + str(Path(directory, name).relative_to(self.root)))
        return sorted(found)


def build_deb(
    workdir: Path,
    name: str,
    version: str,
    files: dict[str, bytes | str],
    *,
    conffiles: tuple[str, ...] = (),
    symlinks: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
    directories: tuple[str, ...] = (),
    control_extra: str = "",
    control_files: dict[str, str] | None = None,
    architecture: str = "amd64",
) -> Path:
    """Build a .deb with the real dpkg-deb and return its path.

    A `conffiles` entry is written as given, so "remove-on-upgrade /etc/x" works too.
    """
    tree = workdir / f"{name}-{version}-tree"
    shutil.rmtree(tree, ignore_errors=True)
    (tree / "DEBIAN").mkdir(parents=True)

    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: {architecture}\n"
        f"Maintainer: Test <test@example.com>\nInstalled-Size: 1\n{control_extra}"
        f"Description: test package {name}\n second line\n"
    )
    (tree / "DEBIAN" / "control").write_text(control)
    if conffiles:
        (tree / "DEBIAN" / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
    for member, text in (control_files or {}).items():
        path = tree / "DEBIAN" / member
        path.write_text(text)
        path.chmod(0o755)

    for directory in directories:
        (tree / directory.lstrip("/")).mkdir(parents=True, exist_ok=True)
    for path, data in files.items():
        host = tree / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.write_bytes(data.encode() if isinstance(data, str) else data)
        host.chmod(0o755 if "/bin/" in path else 0o644)
    for path, target in (symlinks or {}).items():
        host = tree / path.lstrip("/")
        host.parent.mkdir(parents=True, exist_ok=True)
        host.symlink_to(target)
    for path, target in (hardlinks or {}).items():
        os.link(tree / target.lstrip("/"), tree / path.lstrip("/"))
    output = workdir / f"{name}_{version}_{architecture}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-b", str(tree), str(output)],
                   check=True, capture_output=True)
    return output


def init_dpkg_root(root: Path) -> None:
    """Create an empty dpkg database under `root`."""
    for sub in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()


def dpkg_install(
    root: Path, *debs: Path, options: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Install `debs` into `root` with the real dpkg, keeping changed conffiles."""
    return subprocess.run(
        ["dpkg", f"--root={root}", "--log=/dev/null", "--force-depends", "--force-confold",
         "--force-unsafe-io", *options, "-i", *map(str, debs)],
        check=True, capture_output=True, text=True,
    )


def materialise(staging: Staging, root: Path) -> None:
    """Apply the staging tree to `root` the way a container runtime applies a layer."""
    for entry in staging.entries():
        host = root / entry.path.lstrip("/")
        if entry.whiteout:
            _remove(host)
            continue
        if entry.opaque and host.is_dir() and not host.is_symlink():
            for child in host.iterdir():
                _remove(child)
        if entry.type is FileType.DIRECTORY:
            if host.is_symlink() or (host.exists() and not host.is_dir()):
                _remove(host)
            host.mkdir(parents=True, exist_ok=True)
        else:
            _remove(host)
            host.parent.mkdir(parents=True, exist_ok=True)
            if entry.type is FileType.SYMLINK:
                host.symlink_to(entry.linkname)
            elif entry.type is FileType.HARDLINK:
                os.link(root / entry.linkname.lstrip("/"), host)
                continue
            else:
                host.write_bytes(staging.read(entry.path))
        # chown clears setuid and setgid bits, so the mode is set after it.
        os.lchown(host, entry.uid, entry.gid)
        if entry.type is not FileType.SYMLINK:
            os.chmod(host, entry.mode)


def _remove(host: Path) -> None:
    if host.is_symlink() or host.is_file():
        host.unlink()
    elif host.is_dir():
        shutil.rmtree(host)


def snapshot(root: Path, skip: tuple[str, ...] = DPKG_BOOKKEEPING) -> dict[str, tuple[object, ...]]:
    """Return path -> (type, mode, uid, gid, content or link target) for every entry."""
    result: dict[str, tuple[object, ...]] = {}
    for directory, names, files in os.walk(root):
        for name in names + files:
            host = Path(directory, name)
            path = "/" + str(host.relative_to(root))
            if any(path == s or path.startswith(s + "/") for s in skip):
                continue
            info = os.lstat(host)
            if stat.S_ISLNK(info.st_mode):
                result[path] = ("symlink", info.st_uid, info.st_gid, os.readlink(host))
            elif stat.S_ISDIR(info.st_mode):
                result[path] = ("dir", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
            else:
                result[path] = ("file", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
                                host.read_bytes())
    return result


def build_raw_deb(path: Path, data_members: list[tuple[tarfile.TarInfo, bytes | None]],
                  *, truncate_data_to: int | None = None, name: str = "evil",
                  data_suffix: bytes = b"") -> Path:
    """Write a .deb with hand-made data.tar members, for packages dpkg-deb would not build.

    `data_suffix` is appended to the compressed data.tar.gz, after the gzip stream.
    """
    control = (f"Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: T <t@e.org>\n"
               "Description: hostile\n").encode()
    control_tar = _tar_bytes([(_info("./control", len(control)), control)], "gz")
    data_tar = _tar_bytes(data_members, "gz")
    if truncate_data_to is not None:
        data_tar = data_tar[:truncate_data_to]
    data_tar += data_suffix
    members = [("debian-binary", b"2.0\n"), ("control.tar.gz", control_tar),
               ("data.tar.gz", data_tar)]
    with path.open("wb") as out:
        out.write(b"!<arch>\n")
        for member_name, data in members:
            header = (f"{member_name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n")
            out.write(header.encode())
            out.write(data)
            if len(data) % 2:
                out.write(b"\n")
    return path


def _info(name: str, size: int = 0, kind: bytes = tarfile.REGTYPE, linkname: str = "",
          mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    return info


def member(name: str, data: bytes | None = None, kind: bytes = tarfile.REGTYPE,
           linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    """Return a tar member for `build_raw_deb`."""
    size = len(data) if data is not None else 0
    return _info(name, size, kind, linkname, 0o755 if kind == tarfile.DIRTYPE else 0o644), data


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], compression: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()
