"""FlakyServer: its own lifecycle under concurrent calls, and faults it can take back."""

from __future__ import annotations

import asyncio

from helpers import MS, fast, refused

import wsclient
from wsclient.testing import FlakyServer


async def test_concurrent_starts_share_one_listener(server: FlakyServer) -> None:
    await server.stop()
    await asyncio.gather(server.start(), server.start(), server.restart())
    assert server.running
    async with wsclient.Client(server.url, **fast()) as client:
        await client.send("one listener")
        assert await client.recv() == "one listener"


async def test_stop_racing_a_start_wins_when_called_last(server: FlakyServer) -> None:
    await server.stop()
    await asyncio.gather(server.start(), server.stop())
    assert not server.running
    assert await refused(server.port)


async def test_resume_reads_again_after_stall(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast(compression=None, max_size=None)) as client:
        server.stall()
        assert server.stalled == 1
        # Far more than the socket buffers hold: the client's write blocks on the stalled reader.
        blocked = asyncio.create_task(client.send("x" * 8_000_000))
        try:
            done, _ = await asyncio.wait({blocked}, timeout=50 * MS)
            assert not done, "the write should wait for the stalled reader"
            server.resume()
            assert server.stalled == 0
            async with asyncio.timeout(5):
                await blocked
        finally:
            blocked.cancel()
        assert await client.recv() == "x" * 8_000_000
        assert client.stats.sessions == 1
