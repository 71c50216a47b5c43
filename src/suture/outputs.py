"""Atomic output files: written under a temporary name beside the target, then renamed.

`tempfile.mkstemp` creates files with mode 0600 whatever the umask, so every output would be
private to its owner. `atomic_output` gives the renamed file the mode a plain `open()` would
give a new file (0666 minus the umask, so 0644 with umask 022), or keeps the mode of the file
it replaces.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_umask_lock = threading.Lock()


def current_umask() -> int:
    """Return the process umask without changing it for other threads."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Without /proc the umask can only be read by setting it; the lock keeps two readers here
    # from seeing each other's temporary value.
    with _umask_lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def output_mode(target: Path) -> int:
    """Return the permission bits for `target`: those of the file it replaces, else the
    umask's."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_output(target: Path) -> Iterator[BinaryIO]:
    """Yield a temporary file beside `target` that replaces it when the block succeeds.

    The file is flushed to disk before the rename. On any exception the temporary file is
    removed and `target` is left as it was. OSError from creating, writing or renaming the
    file propagates unchanged.
    """
    target = Path(target)
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.tmp-")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), output_mode(target))
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(name, target)
    finally:
        if os.path.exists(name):
            os.unlink(name)
