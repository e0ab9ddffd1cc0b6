"""Run every benchmark scenario side by side with the peers and print one Markdown table.

    python -m benchmarks.run            # the full run (about 6 minutes on 2 cores)
    python -m benchmarks.run --quick    # smaller counts and fewer rounds (under 2 minutes)

Each figure is the median over repeated runs and a ratio to the reference
contender measured in the same run. Peers that are not installed
(``pip install -e ".[bench]"``) are reported as skipped. The JSON goes to
``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import itertools
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import structlog
from tenacity import AsyncRetrying, RetryCallState
from websockets.asyncio.client import connect
from websockets.client import backoff as websockets_backoff
from websockets.client import process_exception
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode

import wsclient
import wsclient.sync
from benchmarks.scale import scale
from wsclient.testing import FlakyServer

RESULTS = Path(__file__).parent / "results"

TransportName = Literal["websockets", "picows"]


@dataclass
class Row:
    """One contender's figure in one scenario; ``ratio`` is to the scenario's reference."""

    scenario: str
    contender: str
    metric: str
    unit: str
    runs: list[float] = field(default_factory=list)
    reference: bool = False
    higher_is_better: bool = True
    note: str = ""
    median: float | None = None
    ratio: float | None = None


def cost(scenario: str, contender: str, metric: str, unit: str, *, reference: bool) -> Row:
    """A row where less is better: times, attempts, memory."""
    return Row(scenario, contender, metric, unit, reference=reference, higher_is_better=False)


@dataclass
class Settings:
    messages: int
    repeats: int
    round_trips: int
    recovery_rounds: int
    storm_clients: int
    idle_clients: int
    idle_seconds: float
    simulated_outages: int


FULL = Settings(200_000, 5, 5_000, 10, 1_000, 1_000, 20.0, 20_000)
QUICK = Settings(20_000, 3, 1_000, 3, 200, 200, 3.0, 2_000)


# Servers in their own process.


@contextlib.asynccontextmanager
async def server_process(kind: str, port: int = 0) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.servers",
        kind,
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 10)
    try:
        yield int(line.split()[1]), process
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


# 1. Receive throughput.


async def recv_websockets(url: str) -> int:
    count = 0
    async with connect(url, compression=None, max_size=None) as ws:
        async for _ in ws:
            count += 1
    return count


async def recv_wsclient(url: str, transport: TransportName = "websockets") -> int:
    count = 0
    async with wsclient.Client(url, compression=None, max_size=None, transport=transport) as client:
        async for _ in client:
            count += 1
    return count


async def recv_wsclient_handler(url: str, transport: TransportName = "websockets") -> int:
    count = 0

    def on_message(_: wsclient.Data) -> None:
        nonlocal count
        count += 1

    async with wsclient.Client(
        url, compression=None, max_size=None, on_message=on_message, transport=transport
    ) as client:
        await client.wait_closed()
    return count


async def recv_aiohttp(url: str) -> int:
    import aiohttp

    count = 0
    async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=0, max_msg_size=0) as ws:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                count += 1
    return count


async def recv_picows(url: str) -> int:
    """Raw picows, reading every payload as any real consumer must (a frame's data lives only in the callback)."""
    from picows import WSListener, WSMsgType, ws_connect

    class CountingListener(WSListener):
        count = 0
        last: str = ""

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT:
                self.last = frame.get_payload_as_utf8_text()
                self.count += 1
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    transport, listener = await ws_connect(CountingListener, url, max_frame_size=1 << 30)
    assert isinstance(listener, CountingListener)
    await transport.wait_disconnected()
    return int(listener.count)


async def recv_websocket_client(url: str) -> int:
    """The blocking websocket-client library, in a thread as an asyncio application would run it.

    Its UTF-8 check is pure Python unless ``wsaccel`` is installed (hundreds of times slower at 4 KiB): skipped.
    """
    import websocket  # type: ignore[import-not-found,unused-ignore]

    def receive() -> int:
        ws = websocket.create_connection(url, enable_multithread=False, skip_utf8_validation=True)
        count = 0
        try:
            while True:
                opcode, _ = ws.recv_data()
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    return count
                count += 1
        finally:
            ws.close()

    return await asyncio.to_thread(receive)


def recv_wsclient_sync_blocking(url: str, transport: TransportName = "websockets") -> int:
    count = 0
    with wsclient.sync.Client(url, compression=None, max_size=None, transport=transport) as client:
        for _ in client:
            count += 1
    return count


async def recv_wsclient_sync(url: str, transport: TransportName = "websockets") -> int:
    """The sync client in a thread, iterated there as a program without asyncio would."""
    return await asyncio.to_thread(recv_wsclient_sync_blocking, url, transport)


def recv_websockets_sync_blocking(url: str) -> int:
    from websockets.sync.client import connect as sync_connect

    count = 0
    with sync_connect(url, compression=None, max_size=None) as ws:
        for _ in ws:
            count += 1
    return count


async def recv_websockets_sync(url: str) -> int:
    """websockets' own sync client (a thread reading the socket, a queue to the caller), in a thread."""
    return await asyncio.to_thread(recv_websockets_sync_blocking, url)


RECEIVERS: list[tuple[str, Callable[[str], Awaitable[int]], str | None]] = [
    ("websockets `async for`", recv_websockets, None),
    ("wsclient `async for`", recv_wsclient, None),
    ("wsclient `on_message`", recv_wsclient_handler, None),
    ("aiohttp", recv_aiohttp, "aiohttp"),
    ("picows (reads each payload)", recv_picows, "picows"),
    ("wsclient on picows `async for`", partial(recv_wsclient, transport="picows"), "picows"),
    ("wsclient on picows `on_message`", partial(recv_wsclient_handler, transport="picows"), "picows"),
    ("websocket-client (thread, no UTF-8 check)", recv_websocket_client, "websocket"),
    ("websockets sync `for` (thread)", recv_websockets_sync, None),
    ("wsclient.sync `for` (thread)", recv_wsclient_sync, None),
    ("wsclient.sync on picows `for` (thread)", partial(recv_wsclient_sync, transport="picows"), "picows"),
]


async def receive_throughput(settings: Settings) -> list[Row]:
    rows = []
    async with server_process("blast") as (port, _):
        for size in (64, 4096):
            url = f"ws://127.0.0.1:{port}/{size}/{settings.messages}"
            scenario = f"receive {size} B"
            for index, (name, _, module) in enumerate(RECEIVERS):
                row = Row(scenario, name, "messages/s", "msg/s", reference=index == 0)
                rows.append(row)
                if module and importlib.util.find_spec(module) is None:
                    row.note = f"skipped: {module} not installed"
                    continue
            # Interleave contenders run by run, so a slow moment of the machine hits all of them.
            for _ in range(settings.repeats):
                for row, (_, receive, _) in zip(rows[-len(RECEIVERS) :], RECEIVERS, strict=True):
                    if row.note:
                        continue
                    gc.collect()
                    started = time.perf_counter()
                    received = await receive(url)
                    elapsed = time.perf_counter() - started
                    assert received == settings.messages, f"{row.contender} got {received}"
                    row.runs.append(received / elapsed)
    return rows


# 2. Send throughput and round trips.


async def send_websockets(url: str, payload: str, count: int) -> None:
    async with connect(url, compression=None) as ws:
        for _ in range(count):
            await ws.send(payload)
        assert await ws.recv() == "done"


async def send_wsclient(url: str, payload: str, count: int, transport: TransportName = "websockets") -> None:
    async with wsclient.Client(url, compression=None, transport=transport) as client:
        for _ in range(count):
            await client.send(payload)
        assert await client.recv() == "done"


async def send_picows(url: str, payload: str, count: int) -> None:
    """Raw picows, waiting while its write buffer is over the high-water mark as a correct sender must."""
    from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    class Sender(WSListener):
        drained: asyncio.Future[None] | None = None

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT and not done.done():
                done.set_result(None)

        def pause_writing(self) -> None:
            self.drained = loop.create_future()

        def resume_writing(self) -> None:
            if self.drained is not None:
                self.drained.set_result(None)
                self.drained = None

    transport, listener = await ws_connect(Sender, url)
    assert isinstance(listener, Sender)
    for _ in range(count):
        # Encoded per message, as a sender of messages that differ must.
        transport.send(WSMsgType.TEXT, payload.encode())
        if listener.drained is not None:
            await listener.drained
    await done
    transport.send_close(WSCloseCode.OK)
    transport.disconnect()
    await transport.wait_disconnected()


SENDERS: list[tuple[str, Callable[[str, str, int], Awaitable[None]], str | None]] = [
    ("websockets `send`", send_websockets, None),
    ("wsclient `send`", send_wsclient, None),
    ("picows `send`", send_picows, "picows"),
    ("wsclient on picows `send`", partial(send_wsclient, transport="picows"), "picows"),
]


async def send_throughput(settings: Settings) -> list[Row]:
    rows = []
    async with server_process("sink") as (port, _):
        for size in (64, 4096):
            payload = "x" * size
            frame_bytes = len(Frame(Opcode.TEXT, payload.encode()).serialize(mask=True))
            url = f"ws://127.0.0.1:{port}/{frame_bytes}/{settings.messages}"
            senders = [s for s in SENDERS if s[2] is None or importlib.util.find_spec(s[2]) is not None]
            pair = [
                Row(f"send {size} B", name, "messages/s", "msg/s", reference=index == 0)
                for index, (name, _, _) in enumerate(senders)
            ]
            rows += pair
            for _ in range(settings.repeats):
                for row, send in zip(pair, [s[1] for s in senders], strict=True):
                    gc.collect()
                    started = time.perf_counter()
                    await send(url, payload, settings.messages)
                    row.runs.append(settings.messages / (time.perf_counter() - started))
    return rows


async def echo_websockets(url: str, count: int) -> list[float]:
    times = []
    async with connect(url, compression=None) as ws:
        for _ in range(count):
            started = time.perf_counter()
            await ws.send("ping")
            await ws.recv()
            times.append(time.perf_counter() - started)
    return times


async def echo_wsclient(url: str, count: int, transport: TransportName = "websockets") -> list[float]:
    times = []
    async with wsclient.Client(url, compression=None, transport=transport) as client:
        for _ in range(count):
            started = time.perf_counter()
            await client.send("ping")
            await client.recv()
            times.append(time.perf_counter() - started)
    return times


async def echo_picows(url: str, count: int) -> list[float]:
    """Raw picows: each reply resolves a future from the frame callback, read as text."""
    from picows import WSCloseCode, WSListener, WSMsgType, ws_connect

    loop = asyncio.get_running_loop()

    class Echo(WSListener):
        reply: asyncio.Future[str] | None = None

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.TEXT and self.reply is not None:
                self.reply.set_result(frame.get_payload_as_utf8_text())

    transport, listener = await ws_connect(Echo, url)
    assert isinstance(listener, Echo)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        listener.reply = loop.create_future()
        transport.send(WSMsgType.TEXT, b"ping")
        await listener.reply
        times.append(time.perf_counter() - started)
    transport.send_close(WSCloseCode.OK)
    transport.disconnect()
    await transport.wait_disconnected()
    return times


def echo_websocket_client_blocking(url: str, count: int) -> list[float]:
    import websocket  # type: ignore[import-not-found,unused-ignore]

    times = []
    ws = websocket.create_connection(url, enable_multithread=False, skip_utf8_validation=True)
    try:
        for _ in range(count):
            started = time.perf_counter()
            ws.send("ping")
            ws.recv()
            times.append(time.perf_counter() - started)
    finally:
        ws.close()
    return times


def echo_websockets_sync_blocking(url: str, count: int) -> list[float]:
    from websockets.sync.client import connect as sync_connect

    times = []
    with sync_connect(url, compression=None) as ws:
        for _ in range(count):
            started = time.perf_counter()
            ws.send("ping")
            ws.recv()
            times.append(time.perf_counter() - started)
    return times


def echo_wsclient_sync_blocking(url: str, count: int, transport: TransportName = "websockets") -> list[float]:
    times = []
    with wsclient.sync.Client(url, compression=None, transport=transport) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.send("ping")
            client.recv()
            times.append(time.perf_counter() - started)
    return times


def in_thread(echo: Callable[[str, int], list[float]]) -> Callable[[str, int], Awaitable[list[float]]]:
    """A blocking contender run in a thread, as the sync receivers are."""

    async def run(url: str, count: int) -> list[float]:
        return await asyncio.to_thread(echo, url, count)

    return run


ECHOERS: list[tuple[str, Callable[[str, int], Awaitable[list[float]]], str | None]] = [
    ("websockets", echo_websockets, None),
    ("wsclient", echo_wsclient, None),
    ("picows", echo_picows, "picows"),
    ("wsclient on picows", partial(echo_wsclient, transport="picows"), "picows"),
    ("websocket-client (thread, no UTF-8 check)", in_thread(echo_websocket_client_blocking), "websocket"),
    ("websockets sync (thread)", in_thread(echo_websockets_sync_blocking), None),
    ("wsclient.sync (thread)", in_thread(echo_wsclient_sync_blocking), None),
    ("wsclient.sync on picows (thread)", in_thread(partial(echo_wsclient_sync_blocking, transport="picows")), "picows"),
]


async def round_trips(settings: Settings) -> list[Row]:
    async with server_process("echo") as (port, _):
        url = f"ws://127.0.0.1:{port}/"
        rows = {
            (name, q): cost("echo round trip", name, f"p{q}", "µs", reference=name == "websockets")
            for name, _, _ in ECHOERS
            for q in (50, 99)
        }
        for (name, _, module), q in itertools.product(ECHOERS, (50, 99)):
            if module and importlib.util.find_spec(module) is None:
                rows[(name, q)].note = f"skipped: {module} not installed"
        for _ in range(settings.repeats):
            for name, echo, module in ECHOERS:
                if module and importlib.util.find_spec(module) is None:
                    continue
                times = sorted(await echo(url, settings.round_trips))
                for q in (50, 99):
                    rows[(name, q)].runs.append(times[int(len(times) * q / 100) - 1] * 1e6)
    return list(rows.values())


Requester = Callable[[int], Awaitable[None]]
"""One request with the given id, awaited until its reply came."""


@contextlib.asynccontextmanager
async def futures_map_requester(url: str) -> AsyncIterator[Requester]:
    """The hand-written way: a reader task resolving a dict of futures by the reply's ``id``."""
    pending: dict[int, asyncio.Future[str | bytes]] = {}
    loop = asyncio.get_running_loop()
    async with connect(url, compression=None) as ws:

        async def read() -> None:
            async for message in ws:
                future = pending.pop(json.loads(message)["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)

        async def request(n: int) -> None:
            future = pending[n] = loop.create_future()
            await ws.send(json.dumps({"id": n, "method": "ping"}))
            async with asyncio.timeout(10):
                await future

        reader = asyncio.create_task(read())
        try:
            yield request
        finally:
            reader.cancel()
            await asyncio.wait({reader})


@contextlib.asynccontextmanager
async def wsclient_requester(url: str) -> AsyncIterator[Requester]:
    async with wsclient.Client(url, compression=None, reply_key=wsclient.json_field("id")) as client:

        async def request(n: int) -> None:
            await client.request(json.dumps({"id": n, "method": "ping"}), key=n, timeout=10)

        yield request


REQUESTERS: list[tuple[str, Callable[[str], contextlib.AbstractAsyncContextManager[Requester]]]] = [
    ("hand-written futures map on websockets", futures_map_requester),
    ("wsclient `request()`", wsclient_requester),
]


async def interleaved_requests(url: str, count: int) -> dict[str, list[float]]:
    """Time ``count`` round trips of each requester, taking turns request by request on connections open together.

    On a shared machine a stall of a few milliseconds (another process
    scheduled on the core) lands on some requests of whoever runs at that
    moment; with the contenders one after the other, a burst of load falls on
    one contender's window and moves its p99 alone. Taking turns spreads it
    over both. The order of the turn alternates, so neither always goes first.
    """
    times: dict[str, list[float]] = {name: [] for name, _ in REQUESTERS}
    async with contextlib.AsyncExitStack() as stack:
        contenders = [(name, await stack.enter_async_context(open_(url))) for name, open_ in REQUESTERS]
        turns = [contenders, contenders[::-1]]
        for n in range(count):
            for name, request in turns[n % 2]:
                started = time.perf_counter()
                await request(n)
                times[name].append(time.perf_counter() - started)
    return times


async def request_round_trips(settings: Settings) -> list[Row]:
    async with server_process("echo") as (port, _):
        url = f"ws://127.0.0.1:{port}/"
        rows = {
            (name, q): cost("request round trip", name, f"p{q}", "µs", reference=name == REQUESTERS[0][0])
            for name, _ in REQUESTERS
            for q in (50, 99)
        }
        for _ in range(settings.repeats):
            gc.collect()
            for name, times in (await interleaved_requests(url, settings.round_trips)).items():
                times.sort()
                for q in (50, 99):
                    rows[(name, q)].runs.append(times[int(len(times) * q / 100) - 1] * 1e6)
    return list(rows.values())


# 3. Recovery after a server restart.


class Contender:
    """A client that streams from the server forever and notes when messages arrive and attempts start."""

    def __init__(self) -> None:
        self.last_message = 0.0
        self.since = 0.0
        self.first_since: float | None = None
        """When the first message after ``since`` reached the application."""
        self.attempts = 0

    def received(self) -> None:
        now = self.last_message = time.perf_counter()
        if self.first_since is None and now > self.since:
            self.first_since = now

    def watch_from(self, since: float) -> None:
        self.since, self.first_since = since, None

    async def run(self, url: str) -> None:
        raise NotImplementedError


class Wsclient(Contender):
    def __init__(self, backoff: wsclient.Backoff = wsclient.Backoff()) -> None:
        super().__init__()
        self.backoff = backoff

    async def run(self, url: str) -> None:
        async with wsclient.Client(url, backoff=self.backoff) as client:
            async for _ in client:
                self.attempts = client.stats.connect_attempts
                self.received()


class WebsocketsConnectLoop(Contender):
    async def run(self, url: str) -> None:
        def count(exc: Exception) -> Exception | None:
            self.attempts += 1
            return process_exception(exc)

        self.attempts = 1
        async for ws in connect(url, process_exception=count):
            try:
                async for _ in ws:
                    self.received()
            except ConnectionClosed:
                self.attempts += 1
                continue


class BlogLoop(Contender):
    async def run(self, url: str) -> None:
        while True:
            self.attempts += 1
            try:
                async with connect(url) as ws:
                    async for _ in ws:
                        self.received()
            except (OSError, ConnectionClosed):
                await asyncio.sleep(2)


async def wait_for(predicate: Callable[[], bool], seconds: float) -> None:
    async with asyncio.timeout(seconds):
        while not predicate():  # noqa: ASYNC110 - the contenders' counters have no event; the poll is bounded
            await asyncio.sleep(0.001)


def simulated_recovery(delays: Callable[[], Iterator[float]], outage: float, runs: int) -> tuple[float, float]:
    """Median time from the end of an outage to the first attempt after it, and mean attempts, that one included.

    ``delays()`` yields a contender's waits between attempts, from its own library (tenacity's
    strategy for wsclient, websockets' ``backoff()`` generator), so the model cannot drift from the code.
    """
    late, attempts = [], []
    for _ in range(runs):
        elapsed = 0.0
        for count, delay in enumerate(delays()):
            elapsed += delay
            if elapsed >= outage:
                late.append(elapsed - outage)
                attempts.append(count + 1)
                break
    return statistics.median(late), statistics.mean(attempts)


def wsclient_delays(backoff: wsclient.Backoff) -> Iterator[float]:
    """The supervisor's waits after a drop: tenacity's strategy at attempts 1, 2, 3..."""
    wait = backoff.wait()
    for attempt in itertools.count(1):
        state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        state.set_exception((ConnectionRefusedError, ConnectionRefusedError(), None))
        yield wait(state)


def websockets_delays() -> Iterator[float]:
    """``async for ws in connect()`` after a drop: one attempt at once, then websockets' ``backoff()``."""
    yield 0.0
    yield from websockets_backoff()


OUTAGE = 1.0
HOLD = wsclient.Backoff().stable_after + 1.0
"""Each round starts once every session has been up longer than ``stable_after``, as between real outages."""


def simulated_rows(scenario: str, settings: Settings) -> list[Row]:
    """The same outage simulated many times with each library's own delays: the medians the runs scatter around."""
    rows = []
    models: list[tuple[str, Callable[[], Iterator[float]]]] = [
        ("websockets `async for ws in connect()`", websockets_delays),
        ("wsclient defaults", lambda: wsclient_delays(wsclient.Backoff())),
        ("wsclient `Backoff(multiplier=1.5)`", lambda: wsclient_delays(wsclient.Backoff(multiplier=1.5))),
    ]
    for index, (name, delays) in enumerate(models):
        late, attempts = simulated_recovery(delays, OUTAGE, settings.simulated_outages)
        rows.append(cost(scenario, name, "simulated: to first attempt", "s", reference=index == 0))
        rows.append(cost(scenario, name, "simulated: attempts per outage", "", reference=index == 0))
        rows[-2].runs, rows[-1].runs = [late], [attempts]
    return rows


RECOVERY_CLIENTS = 8
"""Clients of each contender in one recovery round: each is a sample of its library's random delays."""


def recovery_contenders() -> list[tuple[str, Callable[[], Contender]]]:
    return [
        ("websockets `async for ws in connect()`", WebsocketsConnectLoop),
        ("wsclient defaults", Wsclient),
        ("wsclient `Backoff(multiplier=1.5)`", lambda: Wsclient(wsclient.Backoff(multiplier=1.5))),
        ("hand-written loop, sleep 2 s", BlogLoop),
    ]


async def recovery(settings: Settings) -> list[Row]:
    """All contenders stream from one server at once; every round stops it for one second and starts it again.

    Each contender is ``RECOVERY_CLIENTS`` clients, so one round gives that many samples of its random delays
    (10 rounds of one client each scattered the medians from 0.22x to 0.47x).
    """
    contenders = [(name, [make() for _ in range(RECOVERY_CLIENTS)]) for name, make in recovery_contenders()]
    everyone = [client for _, clients in contenders for client in clients]
    scenario = f"recovery after a {OUTAGE:g} s outage"
    rows = []
    for index, (name, _) in enumerate(contenders):
        rows.append(cost(scenario, name, "to first message", "s", reference=index == 0))
        rows.append(cost(scenario, name, "attempts per outage", "", reference=index == 0))
    rows += simulated_rows(scenario, settings)
    async with FlakyServer("stream", stream_interval=0.01) as server, asyncio.TaskGroup() as tasks:
        runs = [tasks.create_task(client.run(server.url)) for client in everyone]
        try:
            await wait_for(lambda: all(c.last_message > 0 for c in everyone), 30)
            for _ in range(settings.recovery_rounds):
                await asyncio.sleep(HOLD)
                before = [[c.attempts for c in clients] for _, clients in contenders]
                await server.stop()
                await asyncio.sleep(OUTAGE)
                up = time.perf_counter()
                for client in everyone:
                    client.watch_from(up)
                await server.start()
                await wait_for(lambda: all(c.first_since is not None for c in everyone), 120)
                for i, (_, clients) in enumerate(contenders):
                    for client, attempts in zip(clients, before[i], strict=True):
                        assert client.first_since is not None
                        rows[2 * i].runs.append(client.first_since - up)
                        rows[2 * i + 1].runs.append(client.attempts - attempts)
        finally:
            for run in runs:
                run.cancel()
    return rows


# 4. Reconnect storm.


async def storm_round(clients: int, backoff: wsclient.Backoff) -> tuple[float, float, float]:
    """Restart the server under ``clients`` connected clients.

    Returns the peak and mean handshakes per 100 ms at the server, and the seconds until all are back.
    """
    async with server_process("storm") as (port, process):
        url = f"ws://127.0.0.1:{port}/"
        pool = [wsclient.Client(url, backoff=backoff, heartbeat=None, compression=None) for _ in range(clients)]
        await asyncio.gather(*(c.start() for c in pool))
        await wait_for(lambda: all(c.state is wsclient.State.OPEN for c in pool), 60)
        process.kill()
        await process.wait()
    await asyncio.sleep(0.5)
    async with server_process("storm", port) as (_, _):
        started = time.monotonic()
        await wait_for(lambda: all(c.stats.sessions >= 2 for c in pool), 120)
        back = time.monotonic() - started
        async with connect(f"ws://127.0.0.1:{port}/stats") as ws:
            attempts = json.loads(await ws.recv())
        await asyncio.gather(*(c.close() for c in pool))
    buckets = Counter(int((t - started) * 10) for t in attempts if t >= started and t != attempts[-1])
    span = max(buckets) + 1 if buckets else 1
    return max(buckets.values(), default=0), sum(buckets.values()) / span, back


async def reconnect_storm(settings: Settings) -> list[Row]:
    scenario = f"storm, {settings.storm_clients} clients"
    contenders = [
        ("wsclient, no jitter", wsclient.Backoff(jitter=False)),
        ("wsclient defaults (full jitter)", wsclient.Backoff()),
        ("wsclient `Backoff(multiplier=1.5)`", wsclient.Backoff(multiplier=1.5)),
    ]
    rows: dict[str, tuple[Row, Row, Row]] = {
        name: (
            cost(scenario, name, "peak attempts / 100 ms", "", reference=index == 0),
            cost(scenario, name, "mean attempts / 100 ms", "", reference=index == 0),
            cost(scenario, name, "all back after", "s", reference=index == 0),
        )
        for index, (name, _) in enumerate(contenders)
    }
    for _ in range(settings.repeats):
        for name, backoff in contenders:
            for row, figure in zip(rows[name], await storm_round(settings.storm_clients, backoff), strict=True):
                row.runs.append(figure)
    return [row for triple in rows.values() for row in triple]


# 5. Memory and CPU per idle connection, each contender in its own process.


IDLE_SCRIPT = """
import asyncio, gc, importlib, json, logging, resource, sys, time
import structlog
import wsclient
from websockets.asyncio.client import connect

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096

async def main(kind, url, n, seconds):
    if "picows" in kind:
        importlib.import_module("picows")  # the module's own memory is not a connection's
        importlib.import_module("wsclient.transports.picows")
    gc.collect(); before = rss()
    if kind == "websockets":
        conns = [await connect(url, ping_interval=5, ping_timeout=5) for _ in range(n)]
    elif kind == "picows":
        # What a picows user writes: a listener that does nothing, picows' own keepalive with the same interval.
        from picows import WSListener, ws_connect
        conns = [
            (await ws_connect(
                WSListener, url, enable_auto_ping=True, auto_ping_idle_timeout=5, auto_ping_reply_timeout=5
            ))[0]
            for _ in range(n)
        ]
    else:
        transport = "picows" if kind.startswith("wsclient on picows") else "websockets"
        conns = [
            wsclient.Client(url, heartbeat=wsclient.Heartbeat(interval=5, timeout=5), transport=transport)
            for _ in range(n)
        ]
        for c in conns:
            await c.__aenter__()
    gc.collect(); after = rss()
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    await asyncio.sleep(seconds)
    cpu = sum(resource.getrusage(resource.RUSAGE_SELF)[:2]) - cpu0
    print(json.dumps({"rss_per_connection": (after - before) / n, "cpu_per_minute": cpu / seconds * 60}))
    for c in conns:
        if kind == "picows":
            from picows import WSCloseCode
            c.send_close(WSCloseCode.OK)
            c.disconnect()
            await c.wait_disconnected()
        else:
            await c.close()

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
"""

IDLE_BASE = "WSCLIENT_BENCH_BASE"
"""An environment variable: the root of another checkout of wsclient, measured beside this one ("..., before")."""


async def idle_connections(settings: Settings) -> list[Row]:
    """RSS and CPU per idle connection, each contender in its own process, the contenders interleaved round by round.

    Each library's rows have their own reference: wsclient against raw websockets, wsclient on picows against
    raw picows. With ``WSCLIENT_BENCH_BASE`` set to another checkout, its wsclient is measured in the same rounds.
    """
    base = os.environ.get(IDLE_BASE)
    has_picows = importlib.util.find_spec("picows") is not None
    contenders: list[tuple[str, str, str | None]] = [("websockets", "websockets", None)]
    if base:
        contenders.append(("wsclient, before", "wsclient", base))
    contenders.append(("wsclient", "wsclient", None))
    if has_picows:
        contenders.append(("picows", "picows", None))
        if base:
            contenders.append(("wsclient on picows, before", "wsclient on picows", base))
        contenders.append(("wsclient on picows", "wsclient on picows", None))
    rows: dict[str, tuple[Row, Row]] = {}
    for name, kind, _ in contenders:
        library = "picows" if "picows" in kind else "websockets"
        scenario = f"{settings.idle_clients} idle connections" + (" on picows" if library == "picows" else "")
        reference = name == library
        rows[name] = (
            cost(scenario, name, "RSS per connection", "KiB", reference=reference),
            cost(scenario, name, "CPU per minute (all)", "s", reference=reference),
        )
    async with server_process("echo") as (port, _):
        for _ in range(max(1, settings.repeats // 2)):
            for name, kind, tree in contenders:
                env = None if tree is None else {**os.environ, "PYTHONPATH": tree}
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    IDLE_SCRIPT,
                    kind,
                    f"ws://127.0.0.1:{port}/",
                    str(settings.idle_clients),
                    str(settings.idle_seconds),
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                    cwd=tree,  # python -c looks in its working directory first
                )
                out, _ = await process.communicate()
                figures = json.loads(out.decode().strip().splitlines()[-1])
                rss, cpu = rows[name]
                rss.runs.append(figures["rss_per_connection"] / 1024)
                cpu.runs.append(figures["cpu_per_minute"])
    return [row for pair in rows.values() for row in pair]


# Report.

# 8. The cost of OpenTelemetry instrumentation.


def meter_provider(interval: float) -> Any:
    """An SDK meter provider whose periodic reader collects every ``interval`` seconds into a no-op exporter.

    ``None`` when the ``prometheus`` extra (which brings the SDK) is not installed.
    """
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        return None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, PeriodicExportingMetricReader

    class Discard(MetricExporter):
        """Takes every collection and keeps nothing: the cost measured is the collection's."""

        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            pass

    reader = PeriodicExportingMetricReader(Discard(), export_interval_millis=interval * 1000)
    return MeterProvider(metric_readers=[reader])


@contextlib.contextmanager
def instrumented(client: Any, provider: Any) -> Iterator[None]:
    """Report ``client`` to ``provider`` while the block runs (nothing when ``provider`` is ``None``)."""
    if provider is None:
        yield
        return
    from wsclient.otel import instrument

    handle = instrument(client, meter_provider=provider)
    try:
        yield
    finally:
        handle.uninstrument()


async def recv_wsclient_otel(url: str, transport: TransportName, provider: Any) -> int:
    count = 0
    client = wsclient.Client(url, compression=None, max_size=None, transport=transport)
    with instrumented(client, provider):
        async with client:
            async for _ in client:
                count += 1
    return count


async def send_wsclient_otel(url: str, payload: str, count: int, transport: TransportName, provider: Any) -> None:
    client = wsclient.Client(url, compression=None, transport=transport)
    with instrumented(client, provider):
        async with client:
            for _ in range(count):
                await client.send(payload)
            assert await client.recv() == "done"


OTEL_INTERVAL = 0.1
"""Seconds between two collections: far more often than any exporter would, so that each run sees several."""


async def instrumentation_cost(settings: Settings) -> list[Row]:
    """Receive and send 64 B with ``wsclient.otel`` instrumentation against without, on both transports.

    Runs alternate between the two, more of them than the other scenarios: the difference sought is a few percent.
    """
    provider = meter_provider(OTEL_INTERVAL)
    transports: list[TransportName] = ["websockets"]
    if importlib.util.find_spec("picows") is not None:
        transports.append("picows")
    rows: list[Row] = []
    payload = "x" * 64
    frame_bytes = len(Frame(Opcode.TEXT, payload.encode()).serialize(mask=True))
    async with server_process("blast") as (blast, _), server_process("sink") as (sink, _):
        for transport in transports:
            on = "" if transport == "websockets" else " on picows"
            for direction in ("receive", "send"):
                scenario = f"otel cost: {direction} 64 B{on}"
                off_row = Row(scenario, f"wsclient{on}, not instrumented", "messages/s", "msg/s", reference=True)
                on_row = Row(scenario, f"wsclient{on}, instrumented (SDK, reader every 0.1 s)", "messages/s", "msg/s")
                rows += [off_row, on_row]
                if provider is None:
                    on_row.note = "skipped: opentelemetry-sdk not installed"
                for repeat in range(2 * settings.repeats):
                    pair = [(off_row, None), (on_row, provider)]
                    for row, used in pair if repeat % 2 else reversed(pair):  # neither always runs first
                        if row.note:
                            continue
                        gc.collect()
                        started = time.perf_counter()
                        if direction == "receive":
                            url = f"ws://127.0.0.1:{blast}/64/{settings.messages}"
                            assert await recv_wsclient_otel(url, transport, used) == settings.messages
                        else:
                            url = f"ws://127.0.0.1:{sink}/{frame_bytes}/{settings.messages}"
                            await send_wsclient_otel(url, payload, settings.messages, transport, used)
                        row.runs.append(settings.messages / (time.perf_counter() - started))
    if provider is not None:
        provider.shutdown()
    return rows


SCENARIOS: dict[str, Callable[[Settings], Awaitable[list[Row]]]] = {
    "receive": receive_throughput,
    "send": send_throughput,
    "echo": round_trips,
    "request": request_round_trips,
    "recovery": recovery,
    "storm": reconnect_storm,
    "idle": idle_connections,
    "otel": instrumentation_cost,
    "scale": scale,
}


def summarise(rows: list[Row]) -> None:
    references = {}
    for row in rows:
        row.median = statistics.median(row.runs) if row.runs else None
        if row.reference:
            references[(row.scenario, row.metric)] = row.median
    for row in rows:
        reference = references.get((row.scenario, row.metric))
        if row.median is not None and reference:
            row.ratio = row.median / reference


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def markdown(rows: list[Row]) -> str:
    lines = ["| scenario | contender | metric | median | ratio | runs |", "|---|---|---|---|---|---|"]
    for row in rows:
        unit = f" {row.unit}" if row.unit else ""
        ratio = "reference" if row.reference else (f"{row.ratio:.2f}x" if row.ratio is not None else "-")
        median = row.note or f"{fmt(row.median)}{unit}"
        lines.append(f"| {row.scenario} | {row.contender} | {row.metric} | {median} | {ratio} | {len(row.runs)} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    versions = {}
    for name in ("websockets", "aiohttp", "picows", "websocket-client", "tenacity", "structlog"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name)
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions}


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller counts and fewer rounds")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these scenarios")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    # As an application in production would filter: errors only, on stderr, so no contender pays for debug
    # lines and a storm's thousand connect_failed warnings stay out of the table.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 65536)), hard))
    rows: list[Row] = []
    for name, scenario in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += await scenario(settings)
    summarise(rows)
    about = machine()
    print(
        f"\n{about['cores']} cores, {about['cpu']}, Python {about['python']}, "
        + ", ".join(f"{k} {v}" for k, v in about["versions"].items())
        + "\n"
    )
    print(markdown(rows))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / time.strftime("%Y%m%dT%H%M%S.json")
    out.write_text(
        json.dumps({"machine": about, "settings": asdict(settings), "rows": [asdict(r) for r in rows]}, indent=2)
    )
    print(f"\nJSON: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
