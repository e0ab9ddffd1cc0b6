"""The heartbeat's and the idle watchdog's verdicts as tables, and the situations they judge, on both transports."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import pytest
from helpers import MS, fast, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient import Cause
from wsclient.heartbeat import beat_verdict, held_back, idle_verdict
from wsclient.testing import FlakyServer

BOUND = 10.0
"""No test here waits longer than this for what it expects."""

TIMEOUT = Cause.HEARTBEAT_TIMEOUT
STALLED = Cause.WRITE_STALLED

# pinged, answered, sign of life, stalled, missed before, missed_pongs -> verdict, missed after
BEATS = [
    # A pong answers everything and forgives what was missed before.
    (True, True, None, False, 0, 3, None, 0),
    (True, True, None, False, 2, 3, None, 0),
    # No pong and no other sign of life: dead, whatever came before.
    (True, False, None, False, 0, 3, TIMEOUT, 0),
    (False, False, None, False, 0, 3, TIMEOUT, 0),
    (True, False, None, True, 1, 3, TIMEOUT, 1),
    # Data arrived but the pong did not: forgiven up to missed_pongs times in a row.
    (True, False, "data_received", False, 0, 3, None, 1),
    (True, False, "data_received", False, 1, 3, None, 2),
    (True, False, "data_received", False, 2, 3, TIMEOUT, 3),
    (True, False, "data_received", False, 0, 1, TIMEOUT, 1),
    (True, False, "data_drained", False, 0, 3, None, 1),
    (True, False, "data_drained", False, 2, 3, TIMEOUT, 3),
    # Data arrived while our writes stayed blocked with nothing taken: stalled, not dead.
    (True, False, "data_received", True, 0, 3, STALLED, 0),
    (False, False, "data_received", True, 0, 3, STALLED, 0),
    # Stalled writes with only drained data as a sign is a contradiction the link never reports; drain wins.
    (True, False, "data_drained", True, 0, 3, None, 1),
    # Our own backpressure is never held against the peer, and does not count as a missed pong.
    (True, False, "reading_paused", False, 0, 3, None, 0),
    (True, False, "reading_paused", False, 2, 3, None, 2),
    (True, False, "reading_paused", True, 2, 3, None, 2),
    (False, False, "reading_paused", False, 0, 1, None, 0),
    # An application message has no pong: any inbound data within the timeout is its answer.
    (False, False, "data_received", False, 0, 1, None, 0),
    (False, False, "data_drained", False, 5, 1, None, 5),
]


@pytest.mark.parametrize(("pinged", "answered", "sign", "stalled", "missed", "missed_pongs", "cause", "after"), BEATS)
def test_beat_verdict(
    pinged: bool,
    answered: bool,
    sign: str | None,
    stalled: bool,
    missed: int,
    missed_pongs: int,
    cause: Cause | None,
    after: int,
) -> None:
    verdict = beat_verdict(
        pinged=pinged, answered=answered, sign=sign, stalled=stalled, missed=missed, missed_pongs=missed_pongs
    )
    assert verdict == (cause, after)


# now, last_rx, idle_timeout, reading paused -> verdict, when to look next
LOOKS = [
    # Data came recently: look again when the silence could first have lasted long enough.
    (100.0, 99.0, 5.0, False, None, 104.0),
    (100.0, 99.0, 5.0, True, None, 104.0),
    (100.0, 100.0, 5.0, False, None, 105.0),
    # Silent for the whole timeout: idle, at once.
    (100.0, 95.0, 5.0, False, Cause.IDLE_TIMEOUT, 100.0),
    (100.0, 50.0, 5.0, False, Cause.IDLE_TIMEOUT, 100.0),
    # Silent because we paused reading: our doing, look again a whole timeout later.
    (100.0, 95.0, 5.0, True, None, 105.0),
    (100.0, 50.0, 5.0, True, None, 105.0),
]


@pytest.mark.parametrize(("now", "last_rx", "idle_timeout", "paused", "cause", "next_at"), LOOKS)
def test_idle_verdict(
    now: float, last_rx: float, idle_timeout: float, paused: bool, cause: Cause | None, next_at: float
) -> None:
    assert idle_verdict(now, last_rx, idle_timeout, paused) == (cause, next_at)


class Held:
    """What :func:`held_back` reads of a connection, at one moment of a beat."""

    def __init__(self, paused: bool, unread: int | None, resumed: float, last_rx: float) -> None:
        self.paused = paused
        self._unread = unread
        self.reading_resumed = resumed
        self.last_rx = last_rx

    def reading_paused(self) -> bool:
        return self.paused

    def unread(self) -> int | None:
        return self._unread


# reading paused, bytes unread in the socket, reading resumed at, last bytes at; the beat was sent at 5.0
HELD = [
    # Reading paused with the peer's bytes waiting unread: its pong may be among them.
    (True, 10, 0.0, 0.0, True),
    # Where the platform cannot tell, the benefit of the doubt.
    (True, None, 0.0, 0.0, True),
    # Reading paused and nothing waits: everything the peer sent was read, a pong would have been seen.
    (True, 0, 0.0, 0.0, False),
    (True, 0, 6.0, 7.0, False),
    # Reading resumed during the beat and data came after: the pong may be behind what we held back.
    (False, None, 6.0, 7.0, True),
    (False, 0, 5.0, 5.0, True),
    # Resumed during the beat and not read yet: the peer's bytes still wait.
    (False, 10, 6.0, 5.5, True),
    (False, None, 6.0, 5.5, True),
    # Resumed during the beat but nothing came after it, or resumed before the beat: nothing held back.
    (False, 0, 6.0, 5.5, False),
    (False, 0, 4.0, 7.0, False),
    (False, None, 0.0, 7.0, False),
]


@pytest.mark.parametrize(("paused", "unread", "resumed", "last_rx", "held"), HELD)
def test_held_back(paused: bool, unread: int | None, resumed: float, last_rx: float, held: bool) -> None:
    link = Held(paused, unread, resumed, last_rx)
    assert held_back(link, 5.0) is held  # type: ignore[arg-type]


def test_held_back_since_a_recent_pause() -> None:
    # Reading resumed two beats ago: what the peer queued while we paused may still stand before its pong.
    link = Held(False, 0, 3.0, 7.0)
    assert not held_back(link, 5.0)  # type: ignore[arg-type]
    assert held_back(link, 5.0, recent=2.0)  # type: ignore[arg-type]
    assert not held_back(link, 5.0, recent=4.0)  # type: ignore[arg-type]


def burst_then_deaf(burst: int) -> Callable[[ServerConnection], Awaitable[None]]:
    """A server whose first connection sends ``burst`` messages, then neither reads nor sends; later ones read.

    The burst goes out in one write (plain text frames, uncompressed even where deflate was agreed), so that
    the client reads all of it before it pauses reading: nothing is left unread in its socket.
    """
    count = 0

    async def handle(connection: ServerConnection) -> None:
        nonlocal count
        count += 1
        if count == 1:
            connection.transport.write(b"".join(bytes([0x81, 8]) + b"burst %02d" % n for n in range(burst)))
            connection.transport.pause_reading()
            await connection.wait_closed()
            return
        async for _ in connection:
            pass

    return handle


@pytest.mark.parametrize(
    ("transport", "compression"),
    [("websockets", "deflate"), ("websockets", None), ("picows", None)],
    indirect=["transport"],
)
async def test_a_peer_that_stops_reading_is_noticed_while_the_application_sends_and_does_not_read(
    transport: str, compression: str | None
) -> None:
    heartbeat = wsclient.Heartbeat(interval=20 * MS, timeout=40 * MS)
    settings = fast(heartbeat=heartbeat, inbox_size=4, max_queue=2, max_buffered=10_000, close_timeout=2.0)
    if transport == "websockets":
        settings["compression"] = compression
    loop = asyncio.get_running_loop()
    async with FlakyServer(handler=burst_then_deaf(32)) as server:  # type: ignore[arg-type]
        with capture_logs() as events:
            client = wsclient.Client(server.url, **settings)
            async with asyncio.timeout(BOUND):
                await client.start()
                # The burst filled the inbox: reading is paused, and the application never reads.
                await until(lambda: client.session is not None and client.session.reading_paused())
                started = loop.time()
                while client.stats.outages_total == 0:
                    # Blocks once the peer's buffers are full, until the heartbeat ends the session.
                    await client.send(os.urandom(64 * 1024))
                    await asyncio.sleep(0)
                noticed = loop.time() - started
                closing = loop.time()
                await client.close()
                closed = loop.time() - closing
    assert client.stats.outages[0].cause in (wsclient.Cause.HEARTBEAT_TIMEOUT, wsclient.Cause.WRITE_STALLED)
    assert not any(e.get("reason") == "reading_paused" for e in events)
    # Filling the socket buffers takes part of it; a loaded machine the rest.
    assert noticed < 2.0
    # The dead session is gone: close() ends the next one, which reads, at once, not after close_timeout.
    assert closed < 1.0


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
async def test_a_reader_slower_than_a_flood_is_never_taken_for_a_dead_peer(transport: str) -> None:
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=20 * MS)
    loop = asyncio.get_running_loop()
    async with FlakyServer("stream", stream_interval=0) as flood:
        with capture_logs() as events:
            async with wsclient.Client(flood.url, **fast(heartbeat=heartbeat, inbox_size=64)) as client:
                await client.wait_open(timeout=BOUND)
                received = 0
                # Slowly, then as fast as it can: the pongs wait behind the data the reader held back.
                for pause, seconds in ((5 * MS, 1.0), (0.0, 1.0)):
                    until_at = loop.time() + seconds
                    while loop.time() < until_at:
                        await client.recv()
                        received += 1
                        if pause and received % 16 == 0:
                            await asyncio.sleep(pause)
                assert client.stats.sessions == 1
    ends = [e for e in events if e["event"] in ("heartbeat_timeout", "write_stalled", "idle_timeout")]
    assert ends == []
    assert client.stats.outages_total == 0


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
async def test_a_peer_that_half_closes_while_it_does_not_read_releases_a_waiting_send(transport: str) -> None:
    blocked = asyncio.Event()

    async def deaf_then_eof(connection: ServerConnection) -> None:
        connection.transport.pause_reading()
        await blocked.wait()
        # The peer goes away: its EOF comes while the client's writes wait on it.
        connection.transport.write_eof()
        await connection.wait_closed()

    heartbeat = wsclient.Heartbeat(interval=20 * MS, timeout=40 * MS)
    settings = fast(heartbeat=heartbeat, compression=None, max_buffered=10_000, close_timeout=0.2)
    if transport == "picows":
        del settings["compression"]
    loop = asyncio.get_running_loop()
    async with (
        FlakyServer(handler=deaf_then_eof) as server,  # type: ignore[arg-type]
        asyncio.timeout(BOUND),
        wsclient.Client(server.url, **settings) as client,
    ):
        await client.wait_open()
        session = client.session
        assert session is not None
        sending = asyncio.create_task(client.send(os.urandom(4 * 1024 * 1024)))
        await until(lambda: session.write_backlog() > 0 and not sending.done())
        blocked.set()
        started = loop.time()
        await sending
        waited = loop.time() - started
    # Within close_timeout (or the heartbeat's verdict), not once the peer reads again (it never does).
    assert waited < 1.0
