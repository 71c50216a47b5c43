"""Unpack OCI layouts with umoci, an unpacker independent of suture."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def unpack_layout(layout: Path, tag: str, dest: Path) -> Path:
    """Unpack the image `layout:tag` into the directory `dest` (created); return `dest`.

    Runs `umoci raw unpack`, with `--rootless` when not root, so whiteouts and
    opaque directories are applied by umoci rather than by the code under test.
    """
    clear_destination(dest)
    command = ["umoci", "raw", "unpack"]
    if os.geteuid() != 0:
        command.append("--rootless")
    command += ["--image", f"{layout}:{tag}", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        shutil.rmtree(dest, ignore_errors=True)
        raise RuntimeError(f"umoci could not unpack {layout}:{tag}: {result.stderr.strip()}")
    return dest


def clear_destination(dest: Path) -> None:
    """Remove `dest` if it is an empty directory; raise FileExistsError if it has entries."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} is not empty; unpack into a new directory")
    if dest.exists():
        dest.rmdir()
