"""How sessions shorter than ``stable_after`` feed the retry count, against real servers on loopback.

A session of several seconds pays most of its outage's count back, so a client
comes back promptly after it; a server that accepts and drops at once, or
within a few hundred milliseconds, still sees the delays grow.
"""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import MS, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.testing import FlakyServer


def delays(events: list[dict[str, Any]]) -> list[float]:
    """The delays the client announced before its retries, in order."""
    return [e["delay"] for e in events if e["event"] == "retrying"]


async def test_after_a_session_of_several_seconds_the_client_is_back_promptly_once_the_upstream_is() -> None:
    # The defaults scaled down 10x (stable_after is 20 times initial): an outage of four attempts, a session of
    # 0.45 stable_after (4.5 s with the defaults), then the upstream restarts. The whole count carried on would
    # wait 16 initial delays (0.8 s here, up to 8 s with the defaults) before the first attempt after it.
    backoff = wsclient.Backoff(initial=50 * MS, maximum=3.0, jitter=False, stable_after=1.0)
    async with FlakyServer("echo") as upstream:
        await upstream.stop()
        with capture_logs() as events:
            client = wsclient.Client(upstream.url, backoff=backoff, heartbeat=None)
            await client.start()
            try:
                await until(lambda: len(delays(events)) == 4)  # the fourth attempt failed
                await upstream.start()
                await asyncio.wait_for(client.wait_open(), 5)
                up = delays(events)
                # The session's own length is the input of this scenario, not a wait for something to happen.
                await asyncio.sleep(0.45)
                await upstream.restart()
                back_at = asyncio.get_running_loop().time()
                await until(lambda: client.stats.sessions == 2)
                back_after = asyncio.get_running_loop().time() - back_at
            finally:
                await client.close()
    assert up == [0.05, 0.1, 0.2, 0.4]
    # 1 / 0.45 allows twice the first delay, and no more: 0.1 s, not 0.8 s.
    assert delays(events)[len(up) :] == [0.1]
    assert back_after < 0.5


async def test_a_server_that_accepts_and_drops_at_once_still_backs_off() -> None:
    backoff = wsclient.Backoff(initial=5 * MS, maximum=0.5, jitter=False, stable_after=1.0)
    async with FlakyServer("echo") as server:
        server.flap_next(7)
        with capture_logs() as events:
            async with wsclient.Client(server.url, backoff=backoff, heartbeat=None) as client:
                await until(lambda: client.stats.sessions == 8, timeout=10)
    assert delays(events) == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32]


async def test_a_server_that_drops_after_a_few_hundred_milliseconds_still_backs_off() -> None:
    # 20 ms of a 1 s stable_after is 200 ms of the default 10 s: each session caps the next delay at 50 initial
    # delays, so the delays double up to 32 of them and stay there.
    backoff = wsclient.Backoff(initial=5 * MS, maximum=0.5, jitter=False, stable_after=1.0)

    async def brief(connection: ServerConnection) -> None:
        await asyncio.sleep(20 * MS)
        await connection.close(1011, "flapping")

    async with FlakyServer(handler=brief) as server:
        with capture_logs() as events:
            async with wsclient.Client(server.url, backoff=backoff, heartbeat=None) as client:
                await until(lambda: client.stats.sessions == 8, timeout=10)
    waits = delays(events)
    assert waits[:4] == [0.005, 0.01, 0.02, 0.04]
    assert waits == sorted(waits)
    assert waits[-1] >= 0.08
    ended = [e["duration"] for e in events if e["event"] == "disconnected"]
    assert all(d < 0.1 for d in ended), ended
