"""Writable copies of cached trees: an overlay mount over the cache, or a plain copy.

Tests change their copies of cached root filesystems and layouts: apt runs in them and suture
writes patched images into them. As root, an overlay mount (kernel overlayfs) makes such a copy
at once. Reads come from the cached tree, and writes go to an upper directory beside the mount
point, so the cache itself is never written. On the 2-core test machine, copying a root
filesystem took about 0.4 s of CPU each time, and a warm test session made dozens of copies.

Without root, where the kernel refuses the mount, or when a path contains a character that the
mount options reserve (comma, colon, backslash, equals sign), the tree is copied with `cp -a`.

NOTE: where the kernel refuses the overlay `redirect_dir` and `index` options, the mount is made
without them. Then renaming a directory from the cache fails with EXDEV, and writing to one name
of a hard-linked file leaves its other names unchanged. dpkg and apt replace files by renaming
new ones into place, so neither difference reaches them.

`release_all` unmounts every overlay this process made. Each test process calls it when its
session ends, and `release_under` unmounts those in a test's `tmp_path` when the test ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.harness.unpack import clear_destination

# Characters that the overlay mount options give a meaning to.
_OPTION_CHARACTERS = (",", ":", "\\", "=")

_mounted: list[Path] = []


def writable_copy(source: Path, dest: Path) -> Path:
    """Give `dest` (absent or empty) the contents of `source`, changeable without touching it.

    Returns `dest`. The cached tree `source` must not change while copies of it are in use.
    """
    clear_destination(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and _mount_overlay(source, dest):
        return dest
    subprocess.run(["cp", "-a", "--reflink=auto", str(source), str(dest)], check=True)
    return dest


def release_all() -> None:
    """Unmount every overlay `writable_copy` made in this process, newest first."""
    while _mounted:
        _unmount(_mounted.pop())


def release_under(root: Path) -> None:
    """Unmount the overlays `writable_copy` made at or below `root`, newest first."""
    for point in reversed(list(_mounted)):
        if point == root or root in point.parents:
            _mounted.remove(point)
            _unmount(point)


def _unmount(point: Path) -> None:
    result = subprocess.run(["umount", str(point)], capture_output=True, check=False)
    if result.returncode != 0:
        # A process that a failed test left running may still use it, so detach it instead.
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)


def _mount_overlay(source: Path, dest: Path) -> bool:
    source = source.resolve()
    if any(character in str(path) for path in (source, dest) for character in _OPTION_CHARACTERS):
        return False
    # The upper directory is the root of the merged tree, so it takes the source root's
    # mode, owner and times.
    layers = dest.parent / f".{dest.name}.overlay"
    upper = layers / "upper"
    work = layers / "work"
    upper.mkdir(parents=True)
    work.mkdir()
    info = source.stat()
    os.chown(upper, info.st_uid, info.st_gid)
    shutil.copystat(source, upper)
    dest.mkdir()
    options = f"lowerdir={source},upperdir={upper},workdir={work}"
    # redirect_dir lets a directory from the cache be renamed, which fails with EXDEV
    # without it, and index keeps hard links to a changed file linked, as in a real copy.
    for extra in (",redirect_dir=on,index=on", ""):
        result = subprocess.run(
            ["mount", "-t", "overlay", "overlay", "-o", options + extra, str(dest)],
            capture_output=True, check=False,
        )
        if result.returncode == 0:
            _mounted.append(dest)
            return True
    dest.rmdir()
    shutil.rmtree(layers)
    return False
