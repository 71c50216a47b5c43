"""The `suture` command line: `patch`, `plan` (a dry run of patch) and `version`.

Flags follow copa's where copa has them (`-i`, `-r`, `-t`, `-s`, `-o`, `-f`, `--timeout`,
`--ignore-errors`, `--push`). Exit codes: 0 patched or nothing to patch, 1 any failure, 2 usage
errors, 130 after Ctrl-C. Errors print as one line; `-v` adds the traceback.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from suture import __version__
from suture.errors import CommandInterruptedError, SutureError, UsageError
from suture.image.model import Platform
from suture.log import ProgressReporter, console, setup_logging
from suture.patch.timeouts import Deadline, parse_duration, run_with_deadline

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130

# Identifiers of the threads alive when the command started (the main thread, and a caller's
# threads when the command runs inside another program such as a test runner).
_threads_before_command: set[int | None] = set()
DEFAULT_TIMEOUT = "5m"


class _Duration(click.ParamType):  # type: ignore[type-arg]
    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except UsageError as error:
            self.fail(str(error), param, ctx)


class _Mirror(click.ParamType):  # type: ignore[type-arg]
    name = "FROM=TO"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, str]:
        if isinstance(value, tuple):
            return value
        source, sep, target = str(value).partition("=")
        if not sep or not source.strip() or not target.strip():
            self.fail(f"invalid mirror {value!r}: expected FROM=TO (two URLs)", param, ctx)
        return source.strip(), target.strip()


class _PlatformList(click.ParamType):  # type: ignore[type-arg]
    name = "LIST"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[Platform, ...]:
        if isinstance(value, tuple):
            return value
        platforms = []
        for item in str(value).split(","):
            try:
                platforms.append(Platform.parse(item))
            except SutureError:
                self.fail(f"invalid platform {item.strip()!r}: expected os/arch[/variant]",
                          param, ctx)
        return tuple(platforms)


class _CaBundle(click.Path):
    """An existing PEM file of CA certificates, checked by loading it as Python's ssl does."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Path:
        path = Path(os.fsdecode(super().convert(value, param, ctx)))
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError, ValueError) as error:
            self.fail(f"{path} is not a PEM file of CA certificates ({error})", param, ctx)
        return path


def _patch_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Attach the options shared by `patch` and `plan`."""
    options = [
        click.option("-i", "--image", required=True, metavar="REF",
                     help="Image to patch: docker://REF (default), oci:DIR[:TAG], "
                          "oci-archive:FILE[:TAG], docker-archive:FILE[:REF], docker-daemon:REF."),
        click.option("-r", "--report", type=click.Path(path_type=Path), metavar="PATH",
                     help="Scanner report, or a directory with one report per platform. "
                          "Without it every package with a newer version is updated."),
        click.option("-t", "--tag", metavar="TAG|REF",
                     help="Tag of the patched image, or a full reference when it contains "
                          "':' or '/' (not for oci: and oci-archive:, which hold tags). "
                          "Default: <original tag>-<suffix>."),
        click.option("--tag-suffix", default="patched", show_default=True,
                     help="Suffix of the default patched tag."),
        click.option("--push", is_flag=True,
                     help="Push the result to the source image's repository (registry input)."),
        click.option("--dest", metavar="REF",
                     help="Explicit destination in any transport; overrides the defaults."),
        click.option("--platform", "platforms", type=_PlatformList(), default=None,
                     metavar="LIST",
                     help="Comma-separated os/arch[/variant] list: patch only these platforms "
                          "of an index."),
        click.option("-s", "--scanner", type=click.Choice(["auto", "trivy", "grype", "native"]),
                     default="auto", show_default=True, help="Report format."),
        click.option("-o", "--output", type=click.Path(path_type=Path), metavar="FILE",
                     help="Write a VEX document for the fixed vulnerabilities to FILE."),
        click.option("-f", "--format", "vex_format", type=click.Choice(["openvex"]),
                     default="openvex", show_default=True, help="VEX document format."),
        click.option("--vex-author", metavar="NAME", envvar="SUTURE_VEX_AUTHOR",
                     help="Author of the VEX document (or $SUTURE_VEX_AUTHOR)."),
        click.option("--summary", type=click.Path(path_type=Path), metavar="FILE",
                     help="Write the machine-readable result (JSON) to FILE."),
        click.option("--ignore-errors", is_flag=True,
                     help="Apply what can be applied; packages and platforms that fail are "
                          "reported, not fatal."),
        click.option("--timeout", type=_Duration(), default=DEFAULT_TIMEOUT, show_default=True,
                     help="Limit for the whole command: seconds, or a number with s, m or h."),
        click.option("--mirror", "mirrors", type=_Mirror(), multiple=True, metavar="FROM=TO",
                     help="Rewrite repository URLs starting with FROM to start with TO "
                          "(repeatable)."),
        click.option("--insecure-registry", "insecure_registries", multiple=True,
                     metavar="HOST",
                     help="Allow plain HTTP or unverified TLS for this registry (repeatable)."),
        click.option("--registry-ca", type=_CaBundle(), metavar="FILE",
                     help="CA bundle (PEM) to verify registries with."),
        click.option("--engine", type=click.Choice(["unpack"]), default="unpack",
                     show_default=True,
                     help="How packages are applied: 'unpack' extracts them without running "
                          "any code."),
        click.option("--allow-insecure-repositories", is_flag=True,
                     help="Accept unsigned or expired package repositories (recorded in the "
                          "summary)."),
        click.option("--compression", type=click.Choice(["gzip", "zstd"]), default="gzip",
                     show_default=True, help="Compression of the patch layer."),
        click.option("-q", "--quiet", is_flag=True, help="Print errors only."),
        click.option("-v", "--verbose", count=True,
                     help="Info logs and error tracebacks; -vv adds debug logs."),
        click.option("--progress", type=click.Choice(["auto", "plain", "none"]),
                     default="auto", show_default=True,
                     help="Progress display: bars on a terminal, plain lines, or nothing."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="suture",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Patch the OS packages of container images without rebuilding them."""


@cli.command()
def version() -> None:
    """Print suture's version."""
    click.echo(f"suture {__version__}")


@cli.command()
@_patch_options
@click.option("--dry-run", is_flag=True, help="Print the plan and exit; write nothing.")
def patch(**params: Any) -> None:
    """Patch an image's OS packages and write the patched image."""
    _run(params)


@cli.command()
@_patch_options
def plan(**params: Any) -> None:
    """Print the plan for an image (the same as patch --dry-run)."""
    params["dry_run"] = True
    _run(params)


def _run(params: dict[str, Any]) -> None:
    from suture.patch.outcome import format_plan, to_summary, write_summary
    from suture.patch.pipeline import PatchRequest, run_patch
    from suture.patch.summary import render_summary

    verbose: int = params["verbose"]
    quiet: bool = params["quiet"]
    _threads_before_command.clear()
    _threads_before_command.update(t.ident for t in threading.enumerate())
    setup_logging(verbose, quiet)
    if quiet and verbose:
        _fail(UsageError("-q/--quiet and -v/--verbose cannot be used together"), verbose)

    request = PatchRequest(
        image=params["image"],
        report=params["report"],
        tag=params["tag"],
        tag_suffix=params["tag_suffix"],
        push=params["push"],
        dest=params["dest"],
        platforms=params["platforms"] or (),
        scanner=params["scanner"],
        output=params["output"],
        vex_author=params["vex_author"],
        summary=params["summary"],
        dry_run=params["dry_run"],
        ignore_errors=params["ignore_errors"],
        timeout=params["timeout"],
        mirrors=tuple(params["mirrors"]),
        insecure_registries=frozenset(params["insecure_registries"]),
        registry_ca=params["registry_ca"],
        docker_config=Path(os.environ["DOCKER_CONFIG"]) if os.environ.get("DOCKER_CONFIG")
        else None,
        engine=params["engine"],
        allow_insecure_repositories=params["allow_insecure_repositories"],
        compression=params["compression"],
    )

    out = console()
    plan_lock = threading.Lock()

    def show_plan(platform_outcome: Any) -> None:
        text = format_plan(platform_outcome)
        with plan_lock:
            if request.dry_run:
                click.echo(text)
            elif not quiet:
                out.print(text, markup=False, highlight=False, soft_wrap=True)

    deadline = Deadline(request.timeout)
    try:
        with ProgressReporter(params["progress"], quiet) as progress:
            outcome = run_with_deadline(
                lambda: run_patch(request, deadline, progress.hook, show_plan), deadline
            )
    except (KeyboardInterrupt, CommandInterruptedError):
        _interrupted()
    except SutureError as error:
        if deadline.interrupted:
            _interrupted()
        _fail(error, verbose)

    summary = to_summary(outcome)
    if request.summary is not None:
        try:
            write_summary(outcome, request.summary)
        except SutureError as error:
            if outcome.changed:
                error = SutureError(f"{error}; the patched image was written to "
                                    f"{outcome.result_reference} ({outcome.result_digest})")
            _fail(error, verbose)
    if not quiet:
        render_summary(summary, out, verbose=verbose > 0)
        _print_result(outcome)
        _print_vex_notice(outcome, request.output)
    if outcome.error is not None:
        _fail(SutureError(outcome.error), verbose=0)
    if outcome.failed and not request.ignore_errors:
        _exit(1)


def _interrupted() -> NoReturn:
    # Worker threads may still log errors caused by the interruption (a closed connection, a
    # stopped download); those are not failures the user needs to see.
    logging.disable(logging.CRITICAL)
    try:
        console().print("interrupted; nothing was written", markup=False)
        _exit(EXIT_INTERRUPTED)
    finally:
        # Reached only when no worker thread is left, so nothing more is logged.
        logging.disable(logging.NOTSET)


def _print_result(outcome: Any) -> None:
    out = console()
    if outcome.error is not None:
        return
    if outcome.dry_run:
        out.print("dry run: nothing was written", markup=False)
    elif outcome.changed:
        out.print(f"wrote {outcome.result_reference} ({outcome.result_digest})",
                  markup=False, highlight=False, soft_wrap=True)
    elif outcome.failed:
        out.print("nothing was patched", markup=False)
    else:
        out.print("already up to date; no image written", markup=False)


def _print_vex_notice(outcome: Any, output: Path | None) -> None:
    if output is None or outcome.dry_run or outcome.error is not None or outcome.vex_written:
        return
    reason = ("no reported vulnerability was fixed" if outcome.changed
              else "no patched image was written")
    console().print(f"no VEX document written to {output}: {reason}", markup=False,
                    highlight=False, soft_wrap=True)


def _fail(error: SutureError, verbose: int) -> NoReturn:
    if verbose:
        trace = "".join(traceback.format_exception(error))
        console().print(trace, markup=False, highlight=False)
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    console().print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    _exit(error.exit_code)


def _exit(code: int) -> NoReturn:
    # Worker threads this command started and that are stuck in a network call after a timeout
    # or Ctrl-C must not keep the process alive. Every output is written by rename, so stopping
    # here leaves no partial file. Threads that existed before the command are left alone.
    sys.stdout.flush()
    sys.stderr.flush()
    stuck = [
        t for t in threading.enumerate()
        if t.is_alive() and not t.daemon and t.ident not in _threads_before_command
    ]
    if stuck:
        log.debug("stopping with %d worker threads still running", len(stuck))
        os._exit(code)
    sys.exit(code)


def main() -> None:
    """Entry point of the `suture` script."""
    cli(prog_name="suture")


if __name__ == "__main__":
    main()
