"""``wsclient listen``: print every message of a feed, through drops, and record where data is missing.

A resilient ``wscat`` for people and for data collection: messages go to
stdout (raw, or JSON lines), ``--out`` appends JSON lines with a gap record
for every outage, ``--send`` messages are sent on every fresh session.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import errno
import json
import logging
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from ..backoff import Backoff
from ..client import Client
from ..config import Data
from ..heartbeat import Heartbeat
from ..logs import get_logger
from ..metrics_http import serve_metrics
from ..proxies import ProxySetting, check_proxy
from ..session import Session
from ..stats import Outage, Stats
from .options import (
    EXIT_CODES_HELP,
    EXIT_OK,
    OutputFailed,
    Subcommands,
    UsageError,
    add_output_options,
    ca_file,
    count,
    header,
    positive,
    size,
    usage_error_of,
)
from .status_line import StatusLine, describe_client

__all__ = [
    "ListenOptions",
    "Recorder",
    "UsageError",
    "add_command",
    "gap_record",
    "listen",
    "message_record",
    "tls_context",
]


PING_INTERVAL = 20.0
PING_TIMEOUT = 10.0

CLIENT_OPTIONS = {
    "url": "url",
    "headers": "--header",
    "header": "--header",
    "ssl": "--ca",
    "max_size": "--max-size",
    "open_timeout": "--open-timeout",
    "close_timeout": "--close-timeout",
    "idle_timeout": "--idle-timeout",
    "max_attempts": "--max-attempts",
    "max_outage": "--max-outage",
    "Heartbeat": "--ping-interval/--ping-timeout",
    "Backoff": "--backoff-initial/--backoff-max",
}
"""The option behind each argument of ``Client`` that ``listen`` sets, to name it in a usage error."""


def add_command(commands: Subcommands) -> None:
    """Add ``listen`` and its options to the ``wsclient`` command."""
    parser = commands.add_parser(
        "listen",
        help="print every message of a WebSocket feed, reconnecting through drops",
        description="Print every message as it arrives, reconnect through drops, and record every outage.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=_run, log_level=logging.INFO, usage_error=parser.error)
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument(
        "--send", action="append", default=[], metavar="MSG", help="send MSG on every fresh session (repeatable)"
    )
    parser.add_argument(
        "--header", action="append", default=[], type=header, metavar="NAME:VALUE", help="handshake header"
    )
    parser.add_argument("--jsonl", action="store_true", help="print JSON lines with receive time and session id")
    parser.add_argument(
        "--out", type=Path, metavar="FILE", help="append JSON lines to FILE, with a gap record for every outage"
    )
    parser.add_argument("--quiet", action="store_true", help="print no messages (with --out: only record them)")
    parser.add_argument("--count", type=count, metavar="N", help="close with 1000 after N messages")
    parser.add_argument(
        "--ca", type=ca_file, metavar="FILE", help="trust the CA certificates in FILE (PEM; wss:// URLs only)"
    )
    parser.add_argument(
        "--metrics-port",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default host 127.0.0.1; needs [prometheus])",
    )
    parser.add_argument(
        "--proxy",
        type=proxy,
        default=True,
        metavar="URL",
        help="connect through this proxy (http://, https://, socks5h://, socks5://, socks4://, with user:password@); "
        "'none' for no proxy (default: the environment's https_proxy, all_proxy, no_proxy, ...)",
    )
    group = parser.add_argument_group("resilience")
    # No argparse default: --no-heartbeat must tell whether they were given.
    group.add_argument(
        "--ping-interval",
        type=positive,
        metavar="S",
        help=f"heartbeat every S seconds (default: {PING_INTERVAL})",
    )
    group.add_argument(
        "--ping-timeout",
        type=positive,
        metavar="S",
        help=f"dead after S seconds silent (default: {PING_TIMEOUT})",
    )
    group.add_argument("--no-heartbeat", action="store_true", help="turn the heartbeat off")
    group.add_argument(
        "--idle-timeout", type=positive, metavar="S", help="reconnect when no data came for S seconds (default: off)"
    )
    group.add_argument(
        "--backoff-initial",
        type=positive,
        default=0.5,
        metavar="S",
        help="first reconnect delay (default: %(default)s)",
    )
    group.add_argument(
        "--backoff-max",
        type=positive,
        default=30.0,
        metavar="S",
        help="longest reconnect delay (default: %(default)s)",
    )
    group.add_argument(
        "--max-attempts", type=count, metavar="N", help="give up after N failed attempts in a row (default: never)"
    )
    group.add_argument(
        "--max-outage", type=positive, metavar="S", help="give up after an outage of S seconds (default: never)"
    )
    group.add_argument(
        "--open-timeout", type=positive, default=10.0, metavar="S", help="handshake timeout (default: %(default)s)"
    )
    group.add_argument(
        "--close-timeout",
        type=positive,
        default=10.0,
        metavar="S",
        help="longest wait for the closing handshake when stopping; a second Ctrl-C or SIGTERM "
        "drops the connection at once (default: %(default)s)",
    )
    group.add_argument(
        "--max-size",
        type=size,
        default=2**20,
        metavar="BYTES",
        help="largest message accepted: a bigger one is a fatal error (1009); "
        "K, M and G suffixes are powers of 1024 (default: 1MiB)",
    )
    add_output_options(parser)


async def _run(args: argparse.Namespace, status: StatusLine | None) -> int:
    if args.no_heartbeat:
        for option, value in (("--ping-interval", args.ping_interval), ("--ping-timeout", args.ping_timeout)):
            if value is not None:
                raise UsageError(f"argument {option}: not allowed with --no-heartbeat")
        heartbeat = None
    else:
        try:
            heartbeat = Heartbeat(
                interval=PING_INTERVAL if args.ping_interval is None else args.ping_interval,
                timeout=PING_TIMEOUT if args.ping_timeout is None else args.ping_timeout,
            )
        except (TypeError, ValueError) as exc:
            raise usage_error_of(exc, CLIENT_OPTIONS) from exc
    if args.ca is not None and urlsplit(args.url).scheme.lower() != "wss":
        raise UsageError("argument --ca: only for wss:// URLs (the url is not one)")
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
        close_timeout=args.close_timeout,
        max_size=args.max_size,
        ca=args.ca,
        metrics_port=args.metrics_port,
        proxy=args.proxy,
    )
    await listen(options, status=status)
    return EXIT_OK


def proxy(value: str) -> str | None:
    """``--proxy``: a proxy URL either transport can use, or ``none``."""
    if value.lower() == "none":
        return None
    try:
        check_proxy(value, "websockets", name="proxy URL")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _backoff(initial: float, maximum: float) -> Backoff:
    try:
        return Backoff(initial=initial, maximum=maximum)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"argument --backoff-initial/--backoff-max: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ListenOptions:
    """What ``wsclient listen`` was asked to do."""

    url: str
    send: Sequence[str] = ()
    headers: dict[str, str] = field(default_factory=dict)
    out: Path | None = None
    jsonl: bool = False
    quiet: bool = False
    count: int | None = None
    heartbeat: Heartbeat | None = Heartbeat()
    backoff: Backoff = Backoff()
    max_attempts: int | None = None
    max_outage: float | None = None
    idle_timeout: float | None = None
    open_timeout: float = 10.0
    close_timeout: float = 10.0
    max_size: int | None = 2**20
    ca: Path | None = None
    metrics_port: str | None = None
    proxy: ProxySetting = True


def message_record(message: Data, session_id: str | None, received: float) -> dict[str, Any]:
    """The JSON-lines record of one message: receive time (epoch seconds), session and data."""
    record: dict[str, Any] = {"type": "message", "time": round(received, 6), "session": session_id}
    if isinstance(message, str):
        record["data"] = message
    else:
        record["data_base64"] = base64.b64encode(message).decode("ascii")
    return record


def gap_record(outage: Outage) -> dict[str, Any]:
    """The JSON-lines record of one outage: from when to when no data could arrive, and why."""
    return {
        "type": "gap",
        "start": round(outage.start, 6),
        "end": None if outage.end is None else round(outage.end, 6),
        "duration": None if outage.duration is None else round(outage.duration, 6),
        "cause": outage.cause,
        "attempts": outage.attempts,
    }


class Recorder:
    """Writes messages and outages, in the order they happened, to stdout and the ``--out`` file.

    An outage is written once it ended, which is before the first message of
    the next session, so a gap record sits exactly where the data is missing.

    An output that cannot be written is not written again: the first failure
    is kept (see :meth:`failure`) and ``on_failure`` called, so that the
    command stops. Records the ``--out`` file did not get from then on are
    counted, and still printed (unless ``quiet``).
    """

    def __init__(
        self,
        stats: Stats,
        stdout: TextIO | None,
        out: TextIO | None,
        *,
        jsonl: bool,
        quiet: bool,
        status: StatusLine | None,
        out_name: str = "--out",
        on_failure: Callable[[], None] = lambda: None,
    ) -> None:
        self._stats = stats
        self._stdout = stdout
        self._out = out
        self._out_name = out_name
        self._jsonl = jsonl
        self._quiet = quiet
        self._status = status
        self._on_failure = on_failure
        self._gaps_written = 0
        self._out_error: OSError | ValueError | None = None
        self._stdout_error: OSError | ValueError | None = None
        self._first: str | None = None
        self.messages = 0
        self.unrecorded = 0
        """Records the ``--out`` file did not get because writing it failed."""

    def message(self, message: Data, session_id: str | None) -> None:
        self.gaps()
        self.messages += 1
        record = message_record(message, session_id, time.time())
        written = self._write_file(record)
        if self._quiet and written:
            return
        if self._jsonl or self._quiet:
            self._print(json.dumps(record))
        elif isinstance(message, str):
            self._print(message)
        else:
            more = "..." if len(message) > 32 else ""
            self._print(f"<binary message, {len(message)} bytes: {message[:32].hex()}{more}>")

    def gaps_written(self) -> int:
        """Gap records written so far."""
        return self._gaps_written

    def gaps(self) -> None:
        """Write every outage that ended since the last call."""
        pending = self._stats.outages_total - self._gaps_written
        if pending <= 0:
            return
        for outage in list(self._stats.outages)[-pending:]:
            if outage.end is None:
                return
            record = gap_record(outage)
            self._gaps_written += 1
            written = self._write_file(record)
            if (self._jsonl and not self._quiet) or not written:
                self._print(json.dumps(record))

    def failure(self) -> OutputFailed | None:
        """The first output that failed, as the error the command stops with, or ``None``."""
        if self._first == "stdout" and self._stdout_error is not None:
            return OutputFailed("stdout", self._stdout_error)
        if self._first == "out" and self._out_error is not None:
            where = "lost" if self._stdout_error is not None else "printed on stdout"
            detail = f"; stopped, {self.unrecorded} record(s) not written to it ({where})"
            return OutputFailed(self._out_name, self._out_error, detail)
        return None

    def _write_file(self, record: dict[str, Any]) -> bool:
        """Append ``record`` to the ``--out`` file; whether it is there (``True`` without a file)."""
        if self._out is None:
            return True
        if self._out_error is None:
            try:
                self._out.write(json.dumps(record) + "\n")
                return True
            except (OSError, ValueError) as exc:
                self._out_error = exc
                self._failed("out")
        self.unrecorded += 1
        return False

    def _print(self, line: str) -> None:
        if self._stdout_error is not None:
            return
        try:
            if self._stdout is None:
                raise OSError(errno.EBADF, "stdout is closed")
            if self._status is not None and self._stdout.isatty():
                self._status.clear()
            self._stdout.write(line + "\n")
            self._stdout.flush()
        except (OSError, ValueError) as exc:
            self._stdout_error = exc
            self._failed("stdout")

    def _failed(self, which: str) -> None:
        if self._first is None:
            self._first = which
        self._on_failure()


def tls_context(ca: Path | None) -> ssl.SSLContext | None:
    """A client TLS context that trusts the CA certificates in ``ca`` (for a private CA), or ``None``."""
    if ca is None:
        return None
    return ssl.create_default_context(cafile=str(ca))


async def listen(options: ListenOptions, *, stdout: TextIO | None = None, status: StatusLine | None = None) -> None:
    """Listen until the server closes with 1000, ``--count`` messages arrived, or SIGINT/SIGTERM.

    Raises ``GaveUp`` or ``FatalError`` when the client stopped for one of
    those, and ``UsageError`` naming the option the client refused. With
    ``status``, that line shows the client's state while it runs.
    """
    stdout = sys.stdout if stdout is None else stdout
    if stdout is None and not options.quiet:
        raise OutputFailed("stdout", OSError(errno.EBADF, "stdout is closed"))
    started = time.monotonic()
    stop = asyncio.Event()
    sends = list(options.send)
    log = get_logger()

    async def on_connect(session: Session) -> None:
        for message in sends:
            await session.send(message)

    def on_message(message: Data) -> None:
        if options.count is not None and recorder.messages >= options.count:
            return  # arrived while closing after --count messages
        session = client.session
        recorder.message(message, session.id if session is not None else None)
        if options.count is not None and recorder.messages >= options.count:
            stop.set()

    try:
        client = _client(options, on_connect if sends else None, on_message)
    except (TypeError, ValueError) as exc:
        raise usage_error_of(exc, CLIENT_OPTIONS) from exc
    if status is not None:
        status.render = lambda: describe_client(client, started)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    with contextlib.ExitStack() as stack:
        out = None
        if options.out is not None:
            out = _open_out(options.out)
            stack.callback(_close_quietly, out)
        recorder = Recorder(
            client.stats,
            stdout,
            out,
            jsonl=options.jsonl,
            quiet=options.quiet,
            status=status,
            out_name=f"--out {options.out}",
            on_failure=stop.set,
        )
        if options.metrics_port is not None:
            try:
                stack.enter_context(serve_metrics(client, options.metrics_port, gaps=recorder.gaps_written))
            except ValueError as exc:
                raise UsageError(f"argument --metrics-port: {exc}") from exc
        abort = asyncio.Event()

        def on_signal(signum: signal.Signals) -> None:
            if stop.is_set():
                abort.set()  # the second one: no more waiting for the closing handshake
                return
            stop.set()
            log.info(
                "stopping",
                signal=signum.name,
                close_timeout=options.close_timeout,
                hint="send it again to drop the connection at once",
            )

        for signum in signals:
            loop.add_signal_handler(signum, on_signal, signum)
            stack.callback(loop.remove_signal_handler, signum)
        status_task = asyncio.create_task(status.run(), name="wsclient-status") if status is not None else None
        try:
            await client.start()
            stopped = asyncio.create_task(stop.wait())
            ended = asyncio.create_task(client.wait_closed())
            try:
                await asyncio.wait({stopped, ended}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
                if not ended.done():
                    await _close(client, abort)
                await asyncio.wait({stopped, ended})
            if (failure := recorder.failure()) is not None:
                # Stopping was this command's decision: how the client ended says nothing more.
                if not ended.cancelled():
                    ended.exception()
                raise failure
            ended.result()
        finally:
            if status_task is not None:
                status_task.cancel()
                await asyncio.wait({status_task})
            recorder.gaps()
        if (failure := recorder.failure()) is not None:
            raise failure  # the last gap record could not be written


async def _close(client: Client, abort: asyncio.Event) -> None:
    """Close with 1000, within ``close_timeout``; drop the connection at once when ``abort`` is set."""
    closing = asyncio.create_task(client.close(1000), name="wsclient-close")
    aborting = asyncio.create_task(abort.wait(), name="wsclient-abort")
    try:
        await asyncio.wait({closing, aborting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        aborting.cancel()
        if not closing.done():
            closing.cancel()  # a cancelled close() aborts the connection
        await asyncio.wait({closing, aborting})
    if not closing.cancelled():
        closing.result()


def _client(options: ListenOptions, on_connect: Any, on_message: Any) -> Client:
    return Client(
        options.url,
        on_connect=on_connect,
        on_message=on_message,
        backoff=options.backoff,
        max_attempts=options.max_attempts,
        max_outage=options.max_outage,
        heartbeat=options.heartbeat,
        idle_timeout=options.idle_timeout,
        open_timeout=options.open_timeout,
        close_timeout=options.close_timeout,
        max_size=options.max_size,
        headers=options.headers or None,
        ssl=tls_context(options.ca),
        proxy=options.proxy,
    )


def _close_quietly(stream: TextIO) -> None:
    """Close ``stream``; a write that failed already was reported, and its buffer cannot be written either."""
    with contextlib.suppress(OSError, ValueError):
        stream.close()


def _open_out(path: Path) -> TextIO:
    try:
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise UsageError(f"argument --out: {path}: {exc.strerror or exc}") from exc
