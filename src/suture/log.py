"""Logging and progress output on stderr, rendered with rich.

stdout is left for machine output (the plan of `--dry-run`), and everything for people goes
to stderr. With `--progress auto`, progress bars are drawn only when stderr is a terminal.
`plain` prints one line when a transfer starts and one when it ends, and `none` prints nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

ProgressMode = Literal["auto", "plain", "none"]
ProgressHook = Callable[[str, int, "int | None"], None]

log = logging.getLogger(__name__)

_console = Console(stderr=True)


def console() -> Console:
    """Return the stderr console every human-facing line goes through."""
    return _console


def setup_logging(verbosity: int, quiet: bool) -> None:
    """Configure the root logger: warnings by default, info with -v, debug with -vv, errors
    only with -q. Library loggers (httpx, urllib3) stay at warning unless -vv."""
    if quiet:
        level = logging.ERROR
    elif verbosity >= 2:
        level = logging.DEBUG
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.WARNING
    handler = RichHandler(
        console=_console,
        show_time=verbosity >= 1,
        show_path=verbosity >= 2,
        rich_tracebacks=verbosity >= 1,
        markup=False,
    )
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_libraries = logging.DEBUG if verbosity >= 2 else logging.WARNING
    for name in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(name).setLevel(quiet_libraries)


class ProgressReporter:
    """Progress of downloads and uploads, safe to call from several threads.

    `hook(label, done, total)` matches the transports' and the fetcher's progress hook. A
    transfer is finished when `done == total` (or when `close()` runs).
    """

    def __init__(self, mode: ProgressMode, quiet: bool = False) -> None:
        if quiet:
            mode = "none"
        if mode == "auto":
            mode = "plain" if not _console.is_terminal else "auto"
        self.mode: ProgressMode = mode
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskID] = {}
        self._plain_started: set[str] = set()
        self._progress: Progress | None = None
        if mode == "auto":
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=_console,
                transient=True,
            )

    def __enter__(self) -> ProgressReporter:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def hook(self, label: str, done: int, total: int | None) -> None:
        if self.mode == "none":
            return
        with self._lock:
            if self._progress is not None:
                self._update_bar(label, done, total)
            else:
                self._print_plain(label, done, total)

    def _update_bar(self, label: str, done: int, total: int | None) -> None:
        assert self._progress is not None
        task = self._tasks.get(label)
        if task is None:
            task = self._progress.add_task(label, total=total)
            self._tasks[label] = task
        self._progress.update(task, completed=done, total=total)

    def _print_plain(self, label: str, done: int, total: int | None) -> None:
        if label not in self._plain_started:
            self._plain_started.add(label)
            size = f" ({total} bytes)" if total else ""
            _console.print(f"{label}: started{size}", markup=False, highlight=False)
        if total is not None and done >= total:
            _console.print(f"{label}: done", markup=False, highlight=False)
            # A later transfer under the same label starts a new pair of lines.
            self._plain_started.discard(label)
