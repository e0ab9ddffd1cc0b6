"""What every subcommand of ``wsclient`` shares: exit codes, errors, argument types and the output options.

A subcommand is a module with an ``add_command(commands)`` function that adds
its parser to ``commands`` (the ``wsclient`` parser's subparsers) and sets two
defaults on it: ``run``, an async function of the parsed arguments and the
status line that returns an exit code, and ``log_level``, the level logged
without ``-v``. ``wsclient.cli.COMMANDS`` lists those functions: adding a
subcommand is one line there.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import ssl
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from .status_line import StatusLine

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FATAL",
    "EXIT_GAVE_UP",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OUTPUT",
    "EXIT_PIPE",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "OutputFailed",
    "Run",
    "Subcommands",
    "UsageError",
    "add_output_options",
    "ca_file",
    "count",
    "existing_file",
    "header",
    "log_level",
    "positive",
    "size",
    "usage_error_of",
]

EXIT_OK = 0
"""A normal end: the server closed with 1000, ``--count`` reached, Ctrl-C or SIGTERM of ``listen``."""
EXIT_GAVE_UP = 1
"""``listen`` gave up (``--max-attempts``/``--max-outage``); ``demo`` lost data or did not survive a fault."""
EXIT_USAGE = 2
"""A bad argument: the message names it."""
EXIT_FATAL = 3
"""Retrying cannot help: an HTTP status, an untrusted certificate, a fatal close code."""
EXIT_OUTPUT = 4
"""The output could not be written (``--out`` or stdout: a full disk, a closed descriptor): the command stopped."""
EXIT_INTERRUPTED = 130
"""Ctrl-C during ``demo`` (128 + SIGINT)."""
EXIT_PIPE = 141
"""The reader of stdout went away (``| head``): the command stopped quietly, as if killed by SIGPIPE (128 + 13)."""
EXIT_TERMINATED = 143
"""SIGTERM during ``demo`` (128 + SIGTERM)."""

EXIT_CODES_HELP = """\
exit codes:
  0    normal end: the server closed with 1000, --count reached, Ctrl-C or SIGTERM (listen)
  1    gave up (--max-attempts, --max-outage); demo: data lost or a fault not survived
  2    usage error: the message names the argument
  3    fatal error: an HTTP status, an untrusted certificate, a fatal close code
  4    output failed: --out or stdout could not be written; the command stopped
  130  Ctrl-C (demo)
  141  stdout's reader went away (| head): stopped quietly
  143  SIGTERM (demo)"""
"""The exit codes, as the help of ``wsclient`` and its commands lists them."""

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""The ``wsclient`` parser's subparsers, which each command's ``add_command`` adds its parser to."""

Run: TypeAlias = "Callable[[argparse.Namespace, StatusLine | None], Coroutine[Any, Any, int]]"
"""A command's ``run`` default: runs it with the parsed arguments and the status line, returns the exit code."""


class UsageError(Exception):
    """An option the client refused (a bad URL, a bad value): the command exits with 2."""


class OutputFailed(Exception):
    """Writing to ``target`` (``stdout`` or ``--out FILE``) failed: the command stops.

    Exit code 141 when the reader of stdout went away (a broken pipe), 4 otherwise.
    """

    def __init__(self, target: str, error: OSError | ValueError, detail: str = "") -> None:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        super().__init__(f"{target}: cannot write: {reason}{detail}")
        self.target = target
        self.error = error

    @property
    def broken_pipe(self) -> bool:
        """Whether stdout's reader went away (``| head``): a quiet end, not an error."""
        return self.target == "stdout" and isinstance(self.error, BrokenPipeError)


def positive(text: str) -> float:
    """An argument that is a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def count(text: str) -> int:
    """An argument that is an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


_SIZE = re.compile(r"(?P<number>\d+)\s*(?P<unit>(?:[kmg]i?)?b?)", re.IGNORECASE)
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}


def size(text: str) -> int:
    """A size in bytes >= 1: ``1048576``, ``512KiB``, ``16MiB``, ``1G`` (K, M and G are powers of 1024)."""
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (bytes, or a number with K, M or G)")
    value = int(match["number"]) * _UNITS[match["unit"][:1].lower()]
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 byte, got {text}")
    return value


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")


def header(text: str) -> tuple[str, str]:
    """A ``NAME:VALUE`` handshake header."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    if not _TOKEN.fullmatch(name):
        raise argparse.ArgumentTypeError(f"not a header name (RFC 7230 token): {name!r}")
    if _FORBIDDEN_IN_VALUE.search(value):
        raise argparse.ArgumentTypeError(f"header {name} value contains CR, LF or NUL")
    return name, value


def existing_file(text: str) -> Path:
    """The path of a file that exists."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def ca_file(text: str) -> Path:
    """The path of a file holding at least one PEM CA certificate."""
    path = existing_file(text)
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError:
        raise argparse.ArgumentTypeError(f"no PEM certificate in {text}") from None
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror or exc}") from None
    return path


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """Add ``-v``, ``--log-json`` and ``--no-status`` to a command's parser (every command has them)."""
    group = parser.add_argument_group("output")
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more log events (-vv: debug; default: listen logs info, demo only errors)",
    )
    group.add_argument("--log-json", action="store_true", help="log JSON lines instead of console lines")
    group.add_argument("--no-status", action="store_true", help="no live status line, even on a terminal")


def log_level(verbose: int, default: int) -> int:
    """The level of ``-v`` given ``verbose`` times, on top of a command's ``default``."""
    return {0: default, 1: logging.INFO}.get(verbose, logging.DEBUG)


def usage_error_of(exc: BaseException, options: dict[str, str]) -> UsageError:
    """A ``UsageError`` for a client argument's ``TypeError``/``ValueError``, naming the option behind it.

    ``options`` maps the client's argument names (the first word of its
    messages) to the command's options.
    """
    message = str(exc)
    first = re.split(r"[\s\[:]", message, maxsplit=1)[0]
    option = options.get(first)
    return UsageError(f"argument {option}: {message}" if option and option != first else message)
