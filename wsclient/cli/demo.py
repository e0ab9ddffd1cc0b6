"""``wsclient demo``: a collector survives a scripted series of faults, and nothing is lost.

A local :class:`~wsclient.testing.FlakyServer` serves a feed of
sequence-numbered ticks that keeps producing whether or not anyone is
connected, and keeps a bounded history. The collector, on wsclient,
subscribes in ``on_connect`` with the last sequence number it has, so the
server replays what was produced during the outage. Faults are injected one
after the other; the summary says how each was seen, how long recovery took,
and whether any tick was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from ..backoff import Backoff
from ..client import Client
from ..config import Data
from ..heartbeat import Heartbeat
from ..session import Session
from ..testing import FlakyServer
from .options import (
    EXIT_CODES_HELP,
    EXIT_GAVE_UP,
    EXIT_OK,
    EXIT_TERMINATED,
    OutputFailed,
    Subcommands,
    add_output_options,
)
from .status_line import StatusLine

__all__ = ["Collector", "FaultResult", "TickFeed", "add_command", "run_demo"]


def add_command(commands: Subcommands) -> None:
    """Add ``demo`` and its options to the ``wsclient`` command."""
    parser = commands.add_parser(
        "demo",
        help="watch a collector survive scripted faults against a local server (no network needed)",
        description="Run a collector against a local server while faults are injected, then report what was lost.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=_run, log_level=logging.ERROR, usage_error=parser.error)
    parser.add_argument("--fast", action="store_true", help="run the same script about ten times faster")
    add_output_options(parser)


async def _run(args: argparse.Namespace, status: StatusLine | None) -> int:
    """Run the demo; SIGTERM stops it, cleaned up, with 143 (Ctrl-C with 130, through ``KeyboardInterrupt``)."""
    if sys.stdout is None:
        raise OutputFailed("stdout", OSError(errno.EBADF, "stdout is closed"))
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    terminated = False

    def on_sigterm() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        ok = await run_demo(fast=args.fast, status=status)
    except asyncio.CancelledError:
        if not terminated:
            raise
        task.uncancel()
        return EXIT_TERMINATED
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
    return EXIT_OK if ok else EXIT_GAVE_UP


class TickFeed:
    """Ticks ``{"seq": n}`` produced every ``interval`` seconds, with the last ``history`` kept for resume.

    A connection first sends ``{"op": "subscribe", "resume": n}``; the feed
    replays ticks after ``n`` (flagged ``"replay": true``) and then streams live ones.
    """

    def __init__(self, interval: float, history: int = 100_000) -> None:
        self.interval = interval
        self.history: deque[int] = deque(maxlen=history)
        self.next_seq = 1
        self.stalled: set[ServerConnection] = set()
        self._changed = asyncio.Event()

    @property
    def produced(self) -> int:
        return self.next_seq - 1

    async def produce(self) -> None:
        """Produce ticks until cancelled."""
        while True:
            self.history.append(self.next_seq)
            self.next_seq += 1
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()
            await asyncio.sleep(self.interval)

    def stall(self, connections: set[ServerConnection]) -> None:
        """Stop sending on ``connections``: with reading paused too, the peer looks alive but is not."""
        self.stalled |= connections

    def release_stalled(self) -> None:
        """Abort the stalled connections (their client gave up on them)."""
        for connection in self.stalled:
            connection.transport.abort()
        self.stalled.clear()

    async def handle(self, connection: ServerConnection) -> None:
        """Serve one connection: wait for the subscription, replay, then stream."""
        subscription = json.loads(await connection.recv())
        resume = int(subscription.get("resume", 0))
        async with asyncio.TaskGroup() as tg:
            writer = tg.create_task(self._send_from(connection, resume + 1))
            closed = tg.create_task(connection.wait_closed())
            await asyncio.wait({writer, closed}, return_when=asyncio.FIRST_COMPLETED)
            writer.cancel()
            closed.cancel()

    async def _send_from(self, connection: ServerConnection, seq: int) -> None:
        live_from = self.next_seq
        with contextlib.suppress(ConnectionClosed):
            while True:
                if connection in self.stalled:
                    await connection.wait_closed()
                    return
                oldest = self.next_seq - len(self.history)
                seq = max(seq, oldest)  # older ticks fell out of the history: the collector sees a gap
                if seq < self.next_seq:
                    tick: dict[str, object] = {"seq": seq}
                    if seq < live_from:
                        tick["replay"] = True
                    await connection.send(json.dumps(tick))
                    seq += 1
                    continue
                await self._changed.wait()


@dataclass
class Collector:
    """The application under test: keeps every tick once, in order, and knows where it has gaps."""

    last_seq: int = 0
    received: int = 0
    duplicates: int = 0
    replayed: int = 0
    sessions: int = 0
    session_live: int = 0
    missing: list[tuple[int, int]] = field(default_factory=list)
    """Ranges of sequence numbers that never arrived (resume failed)."""
    replayed_by_session: list[int] = field(default_factory=list)
    missing_by_session: list[int] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def on_connect(self, session: Session) -> None:
        """Subscribe again, from the last tick received: the server replays the rest."""
        await session.send(json.dumps({"op": "subscribe", "resume": self.last_seq}))
        self.sessions += 1
        self.session_live = 0
        self.replayed_by_session.append(0)
        self.missing_by_session.append(0)
        self._notify()

    def on_message(self, message: Data) -> None:
        tick = json.loads(message)
        seq = int(tick["seq"])
        if seq <= self.last_seq:
            self.duplicates += 1
            return
        if seq > self.last_seq + 1:
            self.missing.append((self.last_seq + 1, seq - 1))
            self.missing_by_session[-1] += seq - 1 - self.last_seq
        self.last_seq = seq
        self.received += 1
        if tick.get("replay"):
            self.replayed += 1
            self.replayed_by_session[-1] += 1
        else:
            self.session_live += 1
        self._notify()

    @property
    def lost(self) -> int:
        return sum(end - start + 1 for start, end in self.missing)

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` holds (the caller bounds the wait)."""
        while not predicate():
            await self._changed.wait()


@dataclass
class FaultResult:
    """How the collector went through one fault."""

    name: str
    seen_as: str = "-"
    detected: float | None = None
    recovered: float | None = None
    attempts: int = 0
    replayed: int = 0
    survived: bool = False


@dataclass(frozen=True)
class Timing:
    """The demo's time scale: ``--fast`` divides every duration by ten."""

    scale: float

    def __call__(self, seconds: float) -> float:
        return seconds * self.scale


Inject = Callable[[], Awaitable[None]]


async def run_demo(
    *, fast: bool = False, status: StatusLine | None = None, stdout: TextIO | None = None, history: int = 100_000
) -> bool:
    """Run the demo, print its summary to ``stdout``; ``True`` when every fault was survived and nothing lost.

    ``history`` is how many ticks the server keeps for resume: too few, and the demo shows the loss.
    """
    out = sys.stdout if stdout is None else stdout
    t = Timing(0.1 if fast else 1.0)
    feed = TickFeed(interval=0.005 if fast else 0.01, history=history)
    collector = Collector()

    def say(line: str) -> None:
        if status is not None:
            status.clear()
        try:
            out.write(line + "\n")
            out.flush()
        except (OSError, ValueError) as exc:
            raise OutputFailed("stdout", exc) from exc

    async with FlakyServer(handler=feed.handle) as server:
        client = Client(
            server.url,
            on_connect=collector.on_connect,
            on_message=collector.on_message,
            backoff=Backoff(initial=t(0.2), maximum=t(2.0), stable_after=t(1.0), max_retry_after=t(1.0)),
            heartbeat=Heartbeat(interval=t(1.0), timeout=t(1.0)),
            open_timeout=t(5.0) + 1.0,
            close_timeout=t(2.0),
        )
        current = ["starting"]
        if status is not None:
            status.render = lambda: (
                f"{current[0]} | {client.state.value} | {collector.received} ticks | "
                f"{client.stats.reconnects} reconnects | last close {client.stats.last_close_code or '-'}"
            )

        async def server_down() -> None:
            await server.stop()
            await asyncio.sleep(t(2.0))
            await server.start()

        async def refuse_503() -> None:
            server.reject_next(503, {"Retry-After": "1"})
            server.drop()

        async def half_open() -> None:
            feed.stall(set(server.connections))
            server.stall()

        async def restart_1001() -> None:
            await server.close_all(1001, "server restart")

        async def drop() -> None:
            server.drop()

        faults: list[tuple[str, Inject]] = [
            ("abrupt drop (no close frame)", drop),
            (f"server down for {t(2.0):g} s", server_down),
            ("server restart, close 1001", restart_1001),
            ("drop, then 503 + Retry-After: 1", refuse_503),
            ("half-open connection (peer silent)", half_open),
        ]
        say(f"wsclient demo: a collector on {server.url} survives {len(faults) + 1} faults; nothing may be lost.")
        producer = asyncio.create_task(feed.produce(), name="demo-feed")
        status_task = asyncio.create_task(status.run(), name="demo-status") if status is not None else None
        results: list[FaultResult] = []
        try:
            await client.start()
            ended = asyncio.create_task(client.wait_closed(), name="demo-client")
            try:
                for number, (name, inject) in enumerate(faults, 1):
                    current[0] = f"steady before fault {number}/{len(faults) + 1}"
                    await asyncio.sleep(t(2.0))
                    current[0] = f"fault {number}/{len(faults) + 1}: {name}"
                    result = await _run_fault(name, inject, client, collector, server, t)
                    feed.release_stalled()
                    results.append(result)
                    say(_fault_line(number, result))
                current[0] = "steady before the end"
                await asyncio.sleep(t(2.0))
                current[0] = "closing with 1000"
                final = await _finish(feed, producer, server, client, collector, ended, t)
                results.append(final)
                say(_fault_line(len(results), final))
            finally:
                await client.close()
                await asyncio.wait({ended})
                with contextlib.suppress(Exception):
                    ended.result()
        finally:
            producer.cancel()
            await asyncio.wait({producer})
            if status_task is not None:
                status_task.cancel()
                await asyncio.wait({status_task})
    return _summary(results, feed, collector, client, say)


async def _run_fault(
    name: str, inject: Inject, client: Client, collector: Collector, server: FlakyServer, t: Timing
) -> FaultResult:
    result = FaultResult(name)
    stats = client.stats
    outages_before, sessions_before = stats.outages_total, collector.sessions
    rejected_before = len(server.requests) - server.accepted
    injected = time.time()
    await inject()
    back = await _within(
        t(15.0) + 5.0, collector.wait_until(lambda: collector.sessions > sessions_before and collector.session_live > 0)
    )
    if stats.outages_total > outages_before:
        outage = stats.outages[-1]
        result.detected = max(0.0, outage.start - injected)
        result.recovered = None if outage.end is None else outage.end - injected
        result.attempts = outage.attempts
        result.seen_as = f"{stats.last_close_code} {stats.last_cause}"
        if rejected := len(server.requests) - server.accepted - rejected_before:
            result.seen_as += f", {rejected} handshake{'s' if rejected > 1 else ''} refused"
    result.replayed = collector.replayed_by_session[-1] if collector.replayed_by_session else 0
    result.survived = back and not collector.missing
    return result


async def _finish(
    feed: TickFeed,
    producer: asyncio.Task[None],
    server: FlakyServer,
    client: Client,
    collector: Collector,
    ended: asyncio.Task[None],
    t: Timing,
) -> FaultResult:
    """Stop producing, let the collector catch up, then close every connection with 1000."""
    result = FaultResult("end of feed, close 1000")
    producer.cancel()
    await asyncio.wait({producer})
    caught_up = await _within(t(10.0) + 2.0, collector.wait_until(lambda: collector.last_seq >= feed.produced))
    started = time.time()
    await server.close_all(1000, "end of feed")
    done, _ = await asyncio.wait({ended}, timeout=t(10.0) + 2.0)
    stats = client.stats
    result.seen_as = f"{stats.last_close_code} {stats.last_cause}, stopped"
    result.detected = time.time() - started
    result.survived = caught_up and bool(done) and stats.last_close_code == 1000 and ended.exception() is None
    return result


async def _within(seconds: float, waiting: Awaitable[None]) -> bool:
    """Whether ``waiting`` finished within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await waiting
    except TimeoutError:
        return False
    return True


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _fault_line(number: int, result: FaultResult) -> str:
    verdict = "ok" if result.survived else "FAILED"
    if result.recovered is None:
        return f"  [{verdict}] fault {number}: {result.name}: seen as {result.seen_as}"
    return (
        f"  [{verdict}] fault {number}: {result.name}: seen as {result.seen_as}, "
        f"back after {_seconds(result.recovered)}, {result.replayed} ticks replayed"
    )


def _summary(
    results: list[FaultResult], feed: TickFeed, collector: Collector, client: Client, say: Callable[[str], None]
) -> bool:
    rows: list[tuple[str, ...]] = [("#", "fault", "seen as", "detected", "recovered", "attempts", "replayed")]
    for number, r in enumerate(results, 1):
        recovered = _seconds(r.recovered) if r.recovered is not None else ("stopped" if r.survived else "no")
        rows.append(
            (
                str(number),
                r.name,
                r.seen_as,
                _seconds(r.detected),
                recovered,
                str(r.attempts),
                str(r.replayed),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    say("")
    for index, row in enumerate(rows):
        say("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            say("  " + "  ".join("-" * width for width in widths))
    stats = client.stats
    after_outages = list(zip(collector.replayed_by_session, collector.missing_by_session, strict=True))[1:]
    gaps = sum(1 for replayed, missing in after_outages if replayed or missing)
    filled = sum(1 for replayed, missing in after_outages if replayed and not missing)
    lost = feed.produced - collector.received
    ok = all(r.survived for r in results) and lost == 0 and not collector.missing and collector.duplicates == 0
    say("")
    say(
        f"faults injected {len(results)}, reconnects {stats.reconnects}, ticks produced {feed.produced}, "
        f"received {collector.received} ({collector.replayed} replayed after resume), duplicates {collector.duplicates}"
    )
    say(
        f"outages {stats.outages_total}, gaps in the feed detected {gaps}, recovered {filled} "
        f"by resuming from the last sequence number, lost {lost}"
    )
    say("OK: every fault survived, nothing lost." if ok else "FAILED: see the rows marked above.")
    return ok
