"""Chaos soak: a resumable stream behind a FaultProxy while hundreds of seeded faults fire.

The application resumes the stream from its last sequence number in
``on_connect`` and, there too, sends again what it wrote into connections
that broke before the server acknowledged it. At the end every sequence
number must have arrived exactly once and in order, every message handed to
``send()`` must have reached the server exactly once and in order (after the
server drops the duplicates that acknowledgements lost in flight make
unavoidable), the library must have written each message once, plus once
per resend, and no task, file descriptor or memory may have leaked.

Requests with random timeouts run meanwhile: each ends in exactly one of
reply, timeout or interrupted, and the server never sees a request that
timed out while it was still buffered.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import statistics
import tracemalloc
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from helpers import MS, until
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

import wsclient
from wsclient.testing import FaultProxy, FlakyServer

STREAM_BATCH = 5
STREAM_PACE = 5 * MS
SEND_PACE = 4 * MS
BREAKER_EVERY = 25


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass
class StreamServer:
    """The server's side: a sequence-numbered stream from any resume point, and acknowledgements."""

    arrived: list[int] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    breakers_fired: int = 0
    requests_seen: set[int] = field(default_factory=set)

    async def handle(self, connection: ServerConnection) -> None:
        try:
            hello = json.loads(await connection.recv())
            async with asyncio.TaskGroup() as tg:
                reader = tg.create_task(self._read(connection))
                writer = tg.create_task(self._stream(connection, hello["resume"] + 1))
                await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
                reader.cancel()
                writer.cancel()
        except ConnectionClosed:
            pass

    async def _read(self, connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in connection:
                message = json.loads(raw)
                if "req" in message:
                    self.requests_seen.add(message["req"])
                    await connection.send(json.dumps({"reply": message["req"]}))
                    continue
                ident = message["id"]
                if ident in self.seen:
                    self.duplicates += 1
                else:
                    self.seen.add(ident)
                    self.arrived.append(ident)
                    if message.get("breaker"):
                        # Break the connection in the middle of the client's outbox flush.
                        self.breakers_fired += 1
                        connection.transport.abort()
                        return
                await connection.send(json.dumps({"ack": ident}))

    async def _stream(self, connection: ServerConnection, seq: int) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                for _ in range(STREAM_BATCH):
                    await connection.send(json.dumps({"seq": seq}))
                    seq += 1
                await asyncio.sleep(STREAM_PACE)


@dataclass
class Application:
    """The client's side: resume from the last sequence number, resend what was written but not acknowledged."""

    rng: random.Random
    proxy: FaultProxy
    client: wsclient.Client | None = None
    last_seq: int = -1
    max_acked: int = -1
    next_id: int = 0
    resends: int = 0
    resumes: int = 0
    out_of_order: int = 0
    received: int = 0
    on_connect_faults: int = 0
    requests: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    never_sent: set[int] = field(default_factory=set)
    """Requests that timed out while buffered: the server must never see them."""
    late_replies: int = 0

    def payload(self, ident: int, breaker: bool = False) -> str:
        return json.dumps({"id": ident, "breaker": breaker, "pad": "x" * (ident % 64)})

    async def on_connect(self, session: wsclient.Session) -> None:
        assert self.client is not None
        # A message is written at once when the session is open; count what the library will count.
        self.resumes += session.is_open
        await session.send(json.dumps({"resume": self.last_seq}))
        # Buffered requests are not resent by hand: their timeout decides.
        unsent = [ident for ident in (json.loads(m).get("id") for m in self.client.unsent()) if ident is not None]
        first_unsent = unsent[0] if unsent else self.next_id
        # Written into a connection that broke before the server acknowledged them.
        for ident in range(self.max_acked + 1, first_unsent):
            if session.is_open:
                self.resends += 1
                await session.send(self.payload(ident))
        if self.rng.random() < 0.08:
            self.on_connect_faults += 1
            self.proxy.reset()

    async def send_forever(self) -> None:
        assert self.client is not None
        while True:
            ident = self.next_id
            disconnected = self.client.state is not wsclient.State.OPEN
            await self.client.send(self.payload(ident, breaker=disconnected and ident % BREAKER_EVERY == 0))
            self.next_id += 1
            await asyncio.sleep(SEND_PACE)

    async def request_forever(self) -> None:
        assert self.client is not None
        while True:
            key = self.requests
            self.requests += 1
            outcome = "cancelled"
            try:
                reply = await self.client.request(json.dumps({"req": key}), key=key, timeout=self.rng.uniform(MS, 0.08))
                assert json.loads(reply) == {"reply": key}
                outcome = "reply"
            except wsclient.RequestTimeout as exc:
                outcome = "timeout"
                if not exc.sent:
                    self.never_sent.add(key)
            except wsclient.RequestInterrupted:
                outcome = "interrupted"
            finally:
                self.outcomes[outcome] += 1
            await asyncio.sleep(self.rng.uniform(0, 2 * SEND_PACE))

    async def receive(self) -> None:
        assert self.client is not None
        async for raw in self.client:
            message = json.loads(raw)
            if "reply" in message:
                self.late_replies += 1  # its request timed out before it came
            elif "seq" in message:
                if message["seq"] != self.last_seq + 1:
                    self.out_of_order += 1
                self.last_seq = message["seq"]
                self.received += 1
            else:
                self.max_acked = max(self.max_acked, message["ack"])


class FaultSchedule:
    """Seeded random faults of every kind, one every 40-200 ms."""

    def __init__(self, rng: random.Random, server: FlakyServer, proxy: FaultProxy) -> None:
        self.rng = rng
        self.server = server
        self.proxy = proxy
        self.fired: Counter[str] = Counter()
        self.kinds: dict[str, Callable[[], Awaitable[None]]] = {
            "reset": self.reset,
            "blackhole": self.blackhole,
            "latency": self.latency,
            "throttle": self.throttle,
            "slice": self.slice,
            "refuse": self.refuse,
            "cut_mid_handshake": self.cut,
            "server_close": self.server_close,
            "handshake_rejected": self.reject,
            "server_restart": self.restart,
            "server_stall": self.stall,
            "handshake_stall": self.stall_handshake,
            "flapping": self.flap,
        }

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        names = sorted(self.kinds)
        while loop.time() < deadline:
            await asyncio.sleep(self.rng.uniform(0.04, 0.2))
            name = self.rng.choice(names)
            self.fired[name] += 1
            await self.kinds[name]()
        await self.proxy.clear()

    async def pause(self, low: float = 0.05, high: float = 0.15) -> None:
        await asyncio.sleep(self.rng.uniform(low, high))

    async def reset(self) -> None:
        self.proxy.reset()

    async def blackhole(self) -> None:
        self.proxy.blackhole()
        await self.pause(0.05, 0.2)
        self.proxy.restore()

    async def latency(self) -> None:
        self.proxy.latency = 10 * MS
        await self.pause()
        self.proxy.latency = 0

    async def throttle(self) -> None:
        self.proxy.bandwidth = 100_000
        await self.pause()
        self.proxy.bandwidth = 0

    async def slice(self) -> None:
        self.proxy.slice_size = self.rng.randint(1, 16)
        await self.pause()
        self.proxy.slice_size = 0

    async def refuse(self) -> None:
        await self.proxy.refuse()
        self.proxy.reset()
        await self.pause()
        await self.proxy.accept()

    async def cut(self) -> None:
        self.proxy.cut_after = self.rng.randint(20, 600)
        self.proxy.reset()
        await self.pause()
        self.proxy.cut_after = None

    async def server_close(self) -> None:
        await self.server.close_all(self.rng.choice([1001, 1011, 1012, 1013, 1014]), "chaos")

    async def reject(self) -> None:
        self.server.reject_next(self.rng.choice([429, 500, 503]), {"Retry-After": "0"})
        self.proxy.reset()

    async def restart(self) -> None:
        await self.server.stop()
        await self.pause()
        await self.server.start()

    async def stall(self) -> None:
        self.server.stall()

    async def stall_handshake(self) -> None:
        self.server.stall_handshake_next()
        self.proxy.reset()

    async def flap(self) -> None:
        self.server.flap_next(self.rng.randint(1, 3))
        self.proxy.reset()


class SummaryAtTheEnd:
    """Writes the soak's summary in pytest's terminal summary, where CI output shows it without ``-s``."""

    def __init__(self, line: str) -> None:
        self.line = line

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_sep("-", "chaos soak")
        terminalreporter.write_line(self.line)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


async def test_chaos_soak(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    seconds: float = request.config.getoption("--soak-seconds")
    seed: int = request.config.getoption("--soak-seed")
    rng = random.Random(seed)
    fds_before = open_fds()
    tasks_before = asyncio.all_tasks()
    stream = StreamServer()
    tracemalloc.start()
    # The client library and websockets; the servers' recordings are bounded by their history.
    filters = [
        tracemalloc.Filter(True, f"*{os.sep}wsclient{os.sep}*"),
        tracemalloc.Filter(True, f"*{os.sep}websockets{os.sep}*"),
        tracemalloc.Filter(False, f"*{os.sep}wsclient{os.sep}testing{os.sep}*"),
    ]
    try:
        async with FlakyServer(handler=stream.handle, history=100) as server, FaultProxy(server.port) as proxy:
            app = Application(rng, proxy)
            client = wsclient.Client(
                proxy.url,
                on_connect=app.on_connect,
                backoff=wsclient.Backoff(initial=5 * MS, maximum=50 * MS, stable_after=0.5, overload_delay=5 * MS),
                heartbeat=wsclient.Heartbeat(interval=30 * MS, timeout=60 * MS),
                open_timeout=0.3,
                close_timeout=0.5,
                max_buffered=100_000,
                reply_key=wsclient.json_field("reply"),
            )
            app.client = client
            schedule = FaultSchedule(rng, server, proxy)
            async with client, asyncio.TaskGroup() as tg:
                receiver = tg.create_task(app.receive())
                sender = tg.create_task(app.send_forever())
                requester = tg.create_task(app.request_forever())

                async def settle(what: str, predicate: Callable[[], bool], timeout: float = 20) -> None:
                    try:
                        await until(predicate, timeout=timeout)
                    except TimeoutError:
                        raise AssertionError(
                            f"not settled within {timeout}s: {what}; state {client.state.value}, "
                            f"buffered {client.stats.buffered}, sent {app.next_id}, arrived {len(stream.arrived)}, "
                            f"acked up to {app.max_acked}, last seq {app.last_seq}, stats {client.stats}"
                        ) from None

                async def quiet_snapshot() -> tracemalloc.Snapshot:
                    # Compare like with like: faults off, the outbox flushed, what was sent acknowledged.
                    await settle("open", lambda: client.state is wsclient.State.OPEN)
                    await settle("outbox flushed", lambda: client.stats.buffered == 0)
                    sent_so_far = app.next_id
                    await settle("sends acknowledged", lambda: app.max_acked >= sent_so_far - 1)
                    gc.collect()  # connections and transports are cycles: garbage, not growth
                    return tracemalloc.take_snapshot().filter_traces(filters)

                await schedule.run(seconds / 2)
                middle = await quiet_snapshot()
                await schedule.run(seconds / 2)
                end = await quiet_snapshot()
                sender.cancel()
                requester.cancel()
                await asyncio.wait({requester})
                # Every fault is off: the last session delivers what is left.
                sent = app.next_id
                # Settle on the last acknowledgement, not on a count: a lost message must fail the
                # assertion below with the summary, not time out here.
                await settle("every send acknowledged", lambda: app.max_acked == sent - 1)
                await settle("the stream flows", lambda: app.received > 0 and app.last_seq >= 0)
                stats = client.stats
                receiver.cancel()
    finally:
        tracemalloc.stop()
    gc.collect()
    tasks_left = [t for t in asyncio.all_tasks() - tasks_before if t is not asyncio.current_task() and not t.done()]
    diffs = end.compare_to(middle, "lineno")
    growth = sum(stat.size_diff for stat in diffs)
    grew = "; ".join(str(stat) for stat in diffs[:3])
    recoveries = [o.duration for o in stats.outages if o.duration is not None]
    faults = sum(schedule.fired.values()) + app.on_connect_faults + stream.breakers_fired
    summary = (
        f"soak {seconds:.0f}s seed {seed}: faults {faults} ({dict(sorted(schedule.fired.items()))}, "
        f"on_connect {app.on_connect_faults}, mid-flush {stream.breakers_fired}); "
        f"reconnects {stats.reconnects}; recovery p50 {percentile(recoveries, 50) * 1000:.0f} ms "
        f"p99 {percentile(recoveries, 99) * 1000:.0f} ms; stream {app.received} messages, "
        f"{app.out_of_order} out of order; sent {sent}, arrived {len(stream.arrived)}, "
        f"written into broken connections and sent again {app.resends} (server dropped {stream.duplicates} "
        f"duplicates), sends interrupted {stats.sends_interrupted}; requests {app.requests} "
        f"{dict(sorted(app.outcomes.items()))}, {len(app.never_sent)} timed out unsent, "
        f"{app.late_replies} late replies; memory growth in 2nd half {growth} B; "
        f"fds {fds_before} -> {open_fds()}; tasks left {len(tasks_left)}"
    )
    with capsys.disabled():
        print(f"\n{summary}")
    request.config.pluginmanager.register(SummaryAtTheEnd(summary), "wsclient-soak-summary")

    assert faults >= 300, summary
    assert len(schedule.fired) == len(schedule.kinds), "every kind of fault fired"
    assert app.on_connect_faults > 0
    assert stream.breakers_fired > 0
    # The stream: every sequence number once, in order, across every reconnect.
    assert app.out_of_order == 0, summary
    # The sends: each id reached the server once (duplicates dropped by id) and in order.
    assert stream.arrived == list(range(sent)), summary
    # The library wrote every message once, and each resend once: it lost and doubled nothing.
    # Requests too: each written once, or expired unsent; each ended in exactly one way.
    written = stats.messages_out + stats.sends_interrupted
    assert written + stats.expired == sent + app.resends + app.resumes + app.requests, summary
    assert sum(app.outcomes.values()) == app.requests, summary
    assert app.outcomes["cancelled"] <= 1, summary
    assert app.outcomes["reply"] > 0, summary
    assert not app.never_sent & stream.requests_seen, summary
    # Expired: the requests that timed out unsent, and perhaps the one cancelled at the end.
    assert len(app.never_sent) <= stats.expired <= len(app.never_sent) + app.outcomes["cancelled"], summary
    assert stats.reconnects >= 100, summary
    assert growth < 256 * 1024, f"{summary}; grew most: {grew}"
    assert open_fds() == fds_before, summary
    assert tasks_left == [], summary
