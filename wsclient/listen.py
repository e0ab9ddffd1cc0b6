"""``wsclient listen``: print every message of a feed, through drops, and record where data is missing.

A resilient ``wscat`` for people and for data collection: messages go to
stdout (raw, or JSON lines), ``--out`` appends JSON lines with a gap record
for every outage, ``--send`` messages are sent on every fresh session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import signal
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .backoff import Backoff
from .client import Client
from .config import Data
from .heartbeat import Heartbeat
from .metrics_http import serve_metrics
from .session import Session
from .stats import Outage, Stats
from .status_line import StatusLine, describe_client

__all__ = ["ListenOptions", "Recorder", "UsageError", "gap_record", "listen", "message_record", "tls_context"]


class UsageError(Exception):
    """An option the client refused (a bad URL, a bad value): the command exits with 2."""


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
    ca: Path | None = None
    metrics_port: str | None = None


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
    """

    def __init__(
        self, stats: Stats, stdout: TextIO, out: TextIO | None, *, jsonl: bool, quiet: bool, status: StatusLine | None
    ) -> None:
        self._stats = stats
        self._stdout = stdout
        self._out = out
        self._jsonl = jsonl
        self._quiet = quiet
        self._status = status
        self._gaps_written = 0
        self.messages = 0

    def gaps_written(self) -> int:
        """Gap records written so far."""
        return self._gaps_written

    def message(self, message: Data, session_id: str | None) -> None:
        self.gaps()
        self.messages += 1
        record = message_record(message, session_id, time.time())
        self._write_file(record)
        if self._quiet:
            return
        if self._jsonl:
            self._print(json.dumps(record))
        elif isinstance(message, str):
            self._print(message)
        else:
            more = "..." if len(message) > 32 else ""
            self._print(f"<binary message, {len(message)} bytes: {message[:32].hex()}{more}>")

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
            self._write_file(record)
            if self._jsonl and not self._quiet:
                self._print(json.dumps(record))

    def _write_file(self, record: dict[str, Any]) -> None:
        if self._out is not None:
            self._out.write(json.dumps(record) + "\n")

    def _print(self, line: str) -> None:
        if self._status is not None and self._stdout.isatty():
            self._status.clear()
        self._stdout.write(line + "\n")
        self._stdout.flush()


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
    started = time.monotonic()
    stop = asyncio.Event()
    sends = list(options.send)

    async def on_connect(session: Session) -> None:
        for message in sends:
            await session.send(message)

    def on_message(message: Data) -> None:
        if options.count is not None and recorder.messages >= options.count:
            return  # arrived while closing after --count messages
        session = client.session
        try:
            recorder.message(message, session.id if session is not None else None)
        except BrokenPipeError:
            stop.set()  # the reader of stdout went away (``| head``): stop cleanly
        if options.count is not None and recorder.messages >= options.count:
            stop.set()

    try:
        client = _client(options, on_connect if sends else None, on_message)
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    if status is not None:
        status.render = lambda: describe_client(client, started)
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(_open_out(options.out)) if options.out else None
        recorder = Recorder(client.stats, stdout, out, jsonl=options.jsonl, quiet=options.quiet, status=status)
        if options.metrics_port is not None:
            try:
                stack.enter_context(serve_metrics(client, options.metrics_port, gaps=recorder.gaps_written))
            except ValueError as exc:
                raise UsageError(f"--metrics-port: {exc}") from exc
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
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
                    await client.close(1000)
                await asyncio.wait({stopped, ended})
            ended.result()
        finally:
            if status_task is not None:
                status_task.cancel()
                await asyncio.wait({status_task})
            recorder.gaps()


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
        headers=options.headers or None,
        ssl=tls_context(options.ca),
    )


def _open_out(path: Path) -> TextIO:
    try:
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError as exc:
        raise UsageError(f"--out {path}: {exc.strerror or exc}") from exc
