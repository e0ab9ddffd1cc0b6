"""Ten thousand connections in one client process, the server in another, and a restart of that server.

    python -m benchmarks.run --only scale            # 10,000 connections, 2 rounds
    python -m benchmarks.run --only scale --quick    # 2,000 connections, 1 round

Four contenders, each in its own process, one after another and interleaved
round by round: raw websockets (``async for ws in connect()``, as its docs
recommend for reconnecting), wsclient on websockets, raw picows (a
hand-written loop: reconnect at once after a drop, sleep ``PICOWS_RETRY``
seconds after a failed attempt) and wsclient on picows. Every contender
keeps the default heartbeat of its library (raw picows has none by default:
it gets picows' own auto ping with wsclient's interval and timeout).

The server is ``python -m benchmarks.servers scale``: picows, listening on
enough loopback addresses that no address carries more than
``PER_ADDRESS`` connections (the ephemeral port range is per destination),
with a listen backlog of ``SCALE_BACKLOG``. Both processes raise their
open-file limit to the hard limit and stop with a clear error if it is too
low.

Per contender: RSS per connection (after ``gc.collect()``, the difference
over the baseline of an idle process with every module imported), CPU over
an idle window (percent of one core), the time to connect all at once, then
the server process is killed and started again on the same port: the time
from its listening again until every connection is back, the peak of
handshakes per 100 ms it saw, the attempts the clients saw fail (refused,
which only a port nobody listens on answers, and otherwise: reset, timed
out, handshake failed) and the kernel's listen queue overflows
(``TcpExtListenOverflows``, for the whole host: a full backlog drops the
SYN, so the client sees a slow connect, not an error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import logging
import math
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog
from websockets.asyncio.client import connect
from websockets.client import process_exception
from websockets.exceptions import ConnectionClosed

import wsclient
from benchmarks.servers import raise_file_limit

if TYPE_CHECKING:
    from benchmarks.run import Row, Settings

KINDS = ("websockets", "wsclient", "picows", "wsclient on picows")
"""The contenders; the first two form the websockets scenario, the last two the picows one."""

PER_ADDRESS = 4000
"""Connections per loopback address at most (28,232 ephemeral ports here, some held in TIME_WAIT by a previous run)."""

FILE_MARGIN = 64
"""Open files a process needs besides its connections."""

PICOWS_RETRY = 1.0
"""Seconds the raw picows loop sleeps after a failed attempt."""

CONNECT_LIMIT = 180.0
"""Seconds a contender has to connect all, and again to bring all back."""

POLL = 0.02
"""Seconds between two looks at the connections not yet (back) up: the resolution of the times."""

HEARTBEAT = wsclient.Heartbeat()

METRICS = (
    ("rss", "RSS per connection", "KiB"),
    ("cpu", "idle CPU, default heartbeat", "% of a core"),
    ("connect", "connect all at once", "s"),
    ("back", "all back after a restart", "s"),
    ("peak", "peak handshakes / 100 ms", ""),
    ("refused", "attempts refused (server down)", ""),
    ("failed", "attempts failed otherwise", ""),
    ("overflows", "listen queue overflows", ""),
)


def addresses(connections: int) -> list[str]:
    """Loopback addresses enough for ``connections``: 127.0.0.1, 127.0.0.2, ..."""
    return [f"127.0.0.{i + 1}" for i in range(max(1, math.ceil(connections / PER_ADDRESS)))]


# The client process.


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(figures: dict[str, Any]) -> None:
    print(json.dumps(figures), flush=True)


class Holder:
    """Sessions opened so far by one raw connection loop."""

    __slots__ = ("sessions",)

    def __init__(self) -> None:
        self.sessions = 0


Failures = list[tuple[float, str]]


async def hold_websockets(url: str, holder: Holder, failures: Failures) -> None:
    """websockets' reconnecting iterator, reading every message, as its documentation shows."""

    def failed(exc: Exception) -> Exception | None:
        failures.append((time.monotonic(), type(exc).__name__))
        return process_exception(exc)

    async for ws in connect(url, process_exception=failed):
        holder.sessions += 1
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            continue


async def hold_picows(url: str, holder: Holder, failures: Failures) -> None:
    """A hand-written picows loop: reconnect at once after a drop, sleep after a failed attempt."""
    from picows import WSError, WSListener, ws_connect

    while True:
        try:
            transport, _ = await ws_connect(
                WSListener,
                url,
                enable_auto_ping=True,
                auto_ping_idle_timeout=HEARTBEAT.interval,
                auto_ping_reply_timeout=HEARTBEAT.timeout,
            )
        except (OSError, TimeoutError, WSError) as exc:
            failures.append((time.monotonic(), type(exc).__name__))
            await asyncio.sleep(PICOWS_RETRY)
            continue
        holder.sessions += 1
        await transport.wait_disconnected()


def count_connect_failures(failures: Failures) -> None:
    """Note wsclient's ``connect_failed`` events (error type and time); drop every event after that."""

    def note(logger: Any, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if event.get("event") == "connect_failed":
            failures.append((time.monotonic(), str(event.get("error", "")).split(":")[0]))
        raise structlog.DropEvent

    structlog.configure(
        processors=[note],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )


async def all_reach(sessions: Callable[[int], int], count: int, total: int) -> bool:
    """Wait until every connection ``i < total`` has opened ``count`` sessions; ``False`` after ``CONNECT_LIMIT``."""
    pending: list[int] | range = range(total)
    deadline = time.monotonic() + CONNECT_LIMIT
    while True:
        pending = [i for i in pending if sessions(i) < count]
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(POLL)  # the contenders have no event to wait on; the poll is bounded


async def client_main(kind: str, hosts: list[str], port: int, connections: int, idle: float) -> None:
    """Connect, measure, and report twice on stdout: once all are up, once all are back after the restart.

    The restart's time (``time.monotonic()`` of the server listening again, a
    clock shared by processes) comes on stdin.
    """
    limit = raise_file_limit()
    if limit < connections + FILE_MARGIN:
        emit({"error": f"open-file limit {limit} < {connections} connections + {FILE_MARGIN}: raise it (ulimit -Hn)"})
        return
    failures: Failures = []
    if kind.startswith("wsclient"):
        count_connect_failures(failures)
    if kind.endswith("picows"):
        # The modules' own memory is not a connection's.
        importlib.import_module("wsclient.transports.picows" if kind.startswith("wsclient") else "picows")
    urls = [f"ws://{hosts[i % len(hosts)]}:{port}/" for i in range(connections)]
    clients: list[wsclient.Client[Any]] = []
    holders: list[Holder] = []
    tasks: list[asyncio.Task[None]] = []
    gc.collect()
    before = rss()
    started = time.monotonic()
    if kind.startswith("wsclient"):
        transport: Literal["websockets", "picows"] = "picows" if kind.endswith("picows") else "websockets"
        clients = [wsclient.Client(url, transport=transport) for url in urls]
        for client in clients:
            await client.start()

        def sessions(i: int) -> int:
            return clients[i].stats.sessions
    else:
        hold = hold_picows if kind == "picows" else hold_websockets
        holders = [Holder() for _ in urls]
        tasks = [asyncio.create_task(hold(url, holder, failures)) for url, holder in zip(urls, holders, strict=True)]

        def sessions(i: int) -> int:
            return holders[i].sessions

    if not await all_reach(sessions, 1, connections):
        emit({"error": f"not all connected within {CONNECT_LIMIT:g} s"})
        return
    connected = time.monotonic() - started
    gc.collect()
    after = rss()
    cpu = cpu_seconds()
    await asyncio.sleep(idle)
    cpu = cpu_seconds() - cpu
    emit(
        {
            "rss": (after - before) / connections / 1024,
            "cpu": cpu / idle * 100,
            "connect": connected,
            "failed_connecting": len(failures),
        }
    )
    mark = len(failures)
    up_line = asyncio.create_task(asyncio.to_thread(sys.stdin.readline))
    if not await all_reach(sessions, 2, connections):
        emit({"error": f"not all back within {CONNECT_LIMIT:g} s of the restart"})
        return
    back_at = time.monotonic()
    up = float(await up_line)
    # A refusal is the kernel's answer while nothing listens; anything else failed against a listening server
    # (or one being killed). Times would not tell them apart: a loop busy with thousands of drops notes late.
    kinds = Counter(name for _, name in failures[mark:])
    refused = kinds.pop("ConnectionRefusedError", 0)
    emit({"back": back_at - up, "failed": sum(kinds.values()), "failed_by_type": dict(kinds), "refused": refused})
    # The process's exit closes every socket at once; closing 10,000 connections one by one would only add time.
    del tasks
    sys.stdout.flush()
    os._exit(0)


# The benchmark process.


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (the whole host)."""
    with open("/proc/net/netstat") as netstat:
        lines = [line.split() for line in netstat if line.startswith("TcpExt:")]
    names, values = lines[0], lines[1]
    return sum(int(values[names.index(name)]) for name in ("ListenOverflows",) if name in names)


async def start_server(hosts: list[str], port: int) -> tuple[asyncio.subprocess.Process, int, float]:
    """Start the ``scale`` server; returns its process, its port and when it listened (``time.monotonic()``)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.servers",
        "scale",
        "--port",
        str(port),
        "--hosts",
        *hosts,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).split()
        if len(line) < 6 or line[0] != b"PORT":
            raise RuntimeError(f"the scale server did not start: {b' '.join(line)!r}")
    except BaseException:
        await stop(process)
        raise
    return process, int(line[1]), float(line[3])


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.kill()
    await process.wait()


async def handshake_times(host: str, port: int) -> list[float]:
    async with connect(f"ws://{host}:{port}/stats", compression=None, max_size=None) as ws:
        return [float(t) for t in json.loads(await ws.recv())]


async def scale_round(kind: str, connections: int, idle: float) -> dict[str, float] | str:
    """One contender in its own process against a fresh server: figures by ``METRICS`` key, or why it failed."""
    hosts = addresses(connections)
    processes: list[asyncio.subprocess.Process] = []
    try:
        server, port, _ = await start_server(hosts, 0)
        processes.append(server)
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.scale",
            kind,
            str(connections),
            str(idle),
            str(port),
            *hosts,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        processes.append(child)
        assert child.stdin is not None
        assert child.stdout is not None
        limit = 2 * CONNECT_LIMIT + idle
        first = json.loads(await asyncio.wait_for(child.stdout.readline(), limit) or b'{"error": "client exited"}')
        if "error" in first:
            return str(first["error"])
        overflows = listen_overflows()
        await stop(server)
        server, _, up = await start_server(hosts, port)
        processes.append(server)
        child.stdin.write(f"{up}\n".encode())
        await child.stdin.drain()
        second = json.loads(await asyncio.wait_for(child.stdout.readline(), limit) or b'{"error": "client exited"}')
        if "error" in second:
            return str(second["error"])
        overflows = listen_overflows() - overflows
        times = await handshake_times(hosts[0], port)
    except TimeoutError:
        return "no answer from the client process in time"
    finally:
        for process in processes:
            await stop(process)
    buckets = Counter(int((t - up) * 10) for t in times if t >= up)
    return {**first, **second, "peak": max(buckets.values(), default=0), "overflows": overflows}


async def scale(settings: Settings) -> list[Row]:
    """The scenario for ``benchmarks.run``: ten times ``idle_clients`` connections, ``repeats // 2`` rounds."""
    from benchmarks.run import cost

    connections = settings.idle_clients * 10
    rows: dict[str, list[Row]] = {}
    for kind in KINDS:
        family = "picows" if kind.endswith("picows") else "websockets"
        scenario = f"{connections:,} connections, {family}"
        rows[kind] = [cost(scenario, kind, metric, unit, reference=kind == family) for _, metric, unit in METRICS]
        if family == "picows" and importlib.util.find_spec("picows") is None:
            for row in rows[kind]:
                row.note = "skipped: picows not installed"
    for _ in range(max(1, settings.repeats // 2)):
        for kind in KINDS:
            if rows[kind][0].note.startswith("skipped"):
                continue
            figures = await scale_round(kind, connections, settings.idle_seconds)
            if isinstance(figures, str):
                print(f"scale, {kind}: {figures}", file=sys.stderr, flush=True)
                for row in rows[kind]:
                    row.note = f"failed: {figures}" if not row.runs else row.note
                continue
            for row, (key, _, _) in zip(rows[kind], METRICS, strict=True):
                row.runs.append(figures[key])
    return [row for kind in KINDS for row in rows[kind]]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="One contender's process (run by the scale scenario).")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("connections", type=int)
    parser.add_argument("idle", type=float, help="seconds of the idle window")
    parser.add_argument("port", type=int)
    parser.add_argument("hosts", nargs="+")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(client_main(args.kind, args.hosts, args.port, args.connections, args.idle))
