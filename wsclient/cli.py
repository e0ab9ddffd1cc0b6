"""The ``wsclient`` command: argument parsing and dispatch to ``listen`` and ``demo``.

Exit codes: 0 normal end (the server closed with 1000, ``--count`` reached,
Ctrl-C or SIGTERM), 1 gave up (``max_attempts``/``max_outage``), 2 usage
error, 3 fatal error (the message names the cause: an HTTP status, an
untrusted certificate, a fatal close code).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .backoff import Backoff
from .errors import FatalError, GaveUp
from .heartbeat import Heartbeat
from .listen import ListenOptions, UsageError, listen
from .logs import describe_error
from .status_line import StatusLine, configure_logging

__all__ = ["EXIT_FATAL", "EXIT_GAVE_UP", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

EXIT_OK = 0
EXIT_GAVE_UP = 1
EXIT_USAGE = 2
EXIT_FATAL = 3
EXIT_INTERRUPTED = 130
"""Ctrl-C during ``demo`` (``listen`` treats Ctrl-C as a normal end)."""


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    return name.strip(), value.strip()


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``wsclient`` command."""
    parser = argparse.ArgumentParser(
        prog="wsclient",
        description="A resilient WebSocket client: reconnects, heartbeats, records gaps.",
        epilog="Exit codes: 0 normal end, 1 gave up, 2 usage error, 3 fatal error.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listen = commands.add_parser(
        "listen",
        help="print every message of a WebSocket feed, reconnecting through drops",
        description="Print every message as it arrives, reconnect through drops, and record every outage.",
    )
    listen.set_defaults(usage_error=listen.error)
    listen.add_argument("url", help="ws:// or wss:// URL")
    listen.add_argument(
        "--send", action="append", default=[], metavar="MSG", help="send MSG on every fresh session (repeatable)"
    )
    listen.add_argument(
        "--header", action="append", default=[], type=_header, metavar="NAME:VALUE", help="handshake header"
    )
    listen.add_argument("--jsonl", action="store_true", help="print JSON lines with receive time and session id")
    listen.add_argument(
        "--out", type=Path, metavar="FILE", help="append JSON lines to FILE, with a gap record for every outage"
    )
    listen.add_argument("--quiet", action="store_true", help="print no messages (with --out: only record them)")
    listen.add_argument("--count", type=_count, metavar="N", help="close with 1000 after N messages")
    listen.add_argument("--ca", type=_existing_file, metavar="FILE", help="trust the CA certificates in FILE (wss)")
    listen.add_argument(
        "--metrics-port",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default host 127.0.0.1; needs [prometheus])",
    )
    group = listen.add_argument_group("resilience")
    group.add_argument(
        "--ping-interval",
        type=_positive,
        default=20.0,
        metavar="S",
        help="heartbeat every S seconds (default: %(default)s)",
    )
    group.add_argument(
        "--ping-timeout",
        type=_positive,
        default=10.0,
        metavar="S",
        help="dead after S seconds silent (default: %(default)s)",
    )
    group.add_argument("--no-heartbeat", action="store_true", help="turn the heartbeat off")
    group.add_argument(
        "--idle-timeout", type=_positive, metavar="S", help="reconnect when no data came for S seconds (default: off)"
    )
    group.add_argument(
        "--backoff-initial",
        type=_positive,
        default=0.5,
        metavar="S",
        help="first reconnect delay (default: %(default)s)",
    )
    group.add_argument(
        "--backoff-max",
        type=_positive,
        default=30.0,
        metavar="S",
        help="longest reconnect delay (default: %(default)s)",
    )
    group.add_argument(
        "--max-attempts", type=_count, metavar="N", help="give up after N failed attempts in a row (default: never)"
    )
    group.add_argument(
        "--max-outage", type=_positive, metavar="S", help="give up after an outage of S seconds (default: never)"
    )
    group.add_argument(
        "--open-timeout", type=_positive, default=10.0, metavar="S", help="handshake timeout (default: %(default)s)"
    )
    _add_output_options(listen)

    demo = commands.add_parser(
        "demo",
        help="watch a collector survive scripted faults against a local server (no network needed)",
        description="Run a collector against a local server while faults are injected, then report what was lost.",
    )
    demo.set_defaults(usage_error=demo.error)
    demo.add_argument("--fast", action="store_true", help="run the same script about ten times faster")
    _add_output_options(demo)
    return parser


def _add_output_options(parser: argparse.ArgumentParser) -> None:
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


def _log_level(verbose: int, default: int) -> int:
    return {0: default, 1: logging.INFO}.get(verbose, logging.DEBUG)


async def _run(args: argparse.Namespace, status: StatusLine | None) -> None:
    if args.command == "listen":
        heartbeat = None if args.no_heartbeat else Heartbeat(interval=args.ping_interval, timeout=args.ping_timeout)
        options = ListenOptions(
            url=args.url,
            send=args.send,
            headers=dict(args.header),
            out=args.out,
            jsonl=args.jsonl,
            quiet=args.quiet,
            count=args.count,
            heartbeat=heartbeat,
            backoff=_backoff(args.backoff_initial, args.backoff_max),
            max_attempts=args.max_attempts,
            max_outage=args.max_outage,
            idle_timeout=args.idle_timeout,
            open_timeout=args.open_timeout,
            ca=args.ca,
            metrics_port=args.metrics_port,
        )
        await listen(options, status=status)
    else:
        from .demo import run_demo

        if not await run_demo(fast=args.fast, status=status):
            raise DemoFailed


def _backoff(initial: float, maximum: float) -> Backoff:
    try:
        return Backoff(initial=initial, maximum=maximum)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"--backoff-initial/--backoff-max: {exc}") from exc


class DemoFailed(Exception):
    """The demo lost data or a fault was not survived."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wsclient`` command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    use_status = sys.stderr.isatty() and not args.no_status and not args.log_json
    status = StatusLine(sys.stderr) if use_status else None
    default_level = logging.INFO if args.command == "listen" else logging.ERROR
    configure_logging(sys.stderr, level=_log_level(args.verbose, default_level), json=args.log_json, status=status)
    try:
        asyncio.run(_run(args, status))
    except UsageError as exc:
        args.usage_error(str(exc))  # the command's own usage line
    except GaveUp as exc:
        cause = describe_error(exc.__cause__)
        print(f"wsclient: {exc}" + (f"; last error: {cause}" if cause else ""), file=sys.stderr)
        return EXIT_GAVE_UP
    except FatalError as exc:
        print(f"wsclient: fatal: {exc}", file=sys.stderr)
        return EXIT_FATAL
    except DemoFailed:
        return EXIT_GAVE_UP
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_OK
