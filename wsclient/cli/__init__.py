"""The ``wsclient`` command: argument parsing and dispatch to its subcommands.

Each subcommand adds its own parser through the ``add_command`` function
listed in :data:`COMMANDS` (see :mod:`wsclient.cli.options` for what that
function sets up); :func:`main` configures logging, runs the command and turns
the way it ended into the exit code.

The exit codes are listed in :data:`wsclient.cli.options.EXIT_CODES_HELP`
and in ``docs/command-line.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..errors import FatalError, GaveUp
from ..logs import describe_error
from . import collect, demo, listen
from .options import (
    EXIT_CODES_HELP,
    EXIT_FATAL,
    EXIT_GAVE_UP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_PIPE,
    EXIT_TERMINATED,
    EXIT_USAGE,
    OutputFailed,
    Run,
    Subcommands,
    UsageError,
    log_level,
)
from .status_line import StatusLine, configure_logging

__all__ = [
    "COMMANDS",
    "EXIT_FATAL",
    "EXIT_GAVE_UP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_PIPE",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "build_parser",
    "main",
]

COMMANDS: tuple[Callable[[Subcommands], None], ...] = (listen.add_command, demo.add_command, collect.add_command)
"""The subcommands, each as the function that adds its parser: a new subcommand is one more entry."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wsclient`` command, with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="wsclient",
        description="A resilient WebSocket client: reconnects, heartbeats, records gaps.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in COMMANDS:
        add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wsclient`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    use_status = sys.stderr is not None and sys.stderr.isatty() and not args.no_status and not args.log_json
    status = StatusLine(sys.stderr) if use_status else None
    configure_logging(sys.stderr, level=log_level(args.verbose, args.log_level), json=args.log_json, status=status)
    run: Run = args.run
    try:
        return asyncio.run(run(args, status))
    except UsageError as exc:
        args.usage_error(str(exc))  # the command's own usage line
        raise  # pragma: no cover - usage_error exits
    except GaveUp as exc:
        cause = describe_error(exc.__cause__)
        _tell(f"wsclient: {exc}" + (f"; last error: {cause}" if cause else ""))
        return EXIT_GAVE_UP
    except FatalError as exc:
        _tell(f"wsclient: fatal: {exc}")
        return EXIT_FATAL
    except OutputFailed as exc:
        if exc.broken_pipe:
            return EXIT_PIPE  # the reader had enough (``| head``): nothing to say
        _tell(f"wsclient: {exc}")
        return EXIT_OUTPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        _release_broken_streams()


def _tell(line: str) -> None:
    """Print ``line`` on stderr, if stderr can be written: its failure must not hide the exit code."""
    stream = sys.stderr
    if stream is None:
        return  # print(file=None) would write to stdout
    with contextlib.suppress(OSError, ValueError):
        print(line, file=stream, flush=True)


def _release_broken_streams() -> None:
    """Point stdout and stderr at /dev/null if they cannot be flushed.

    Otherwise the interpreter tries again at exit, prints "Exception ignored"
    and turns the exit code into 120.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(devnull, stream.fileno())
                finally:
                    os.close(devnull)
