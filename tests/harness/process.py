"""Stopping the servers the harness starts as child processes."""

from __future__ import annotations

import logging
import os
import signal
import time

logger = logging.getLogger(__name__)


def stop_process(pid: int, name: str, timeout: float, poll: float = 0.1) -> None:
    """Send SIGTERM to the child `pid`, then SIGKILL if it has not exited after `timeout` s."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited, _status = os.waitpid(pid, os.WNOHANG)
        if exited != 0:
            return
        time.sleep(poll)

    logger.warning("%s (pid %d) ignored SIGTERM for %.0fs; killing it", name, pid, timeout)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
