"""FaultProxy: each fault, switched on and off while a real client talks through it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
from collections.abc import AsyncIterator

import pytest
from helpers import MS, fast, refused, until

import wsclient
from wsclient.testing import FaultProxy, FlakyServer


@pytest.fixture
async def proxy(server: FlakyServer) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(server.port) as fault_proxy:
        yield fault_proxy


async def echo(client: wsclient.Client, message: str) -> str | bytes:
    await client.send(message)
    return await client.recv()


async def test_traffic_passes_through(proxy: FaultProxy, server: FlakyServer) -> None:
    async with wsclient.Client(proxy.url, **fast()) as client:
        assert await echo(client, "through") == "through"
    assert proxy.accepted == 1
    assert proxy.bytes_forwarded > 0
    assert server.received == ["through"]


async def test_reset_looks_like_a_broken_connection(proxy: FaultProxy, server: FlakyServer) -> None:
    async with wsclient.Client(proxy.url, **fast()) as client:
        assert proxy.reset() == 1
        await server.wait_for_connections(2)
        assert await echo(client, "after reset") == "after reset"
    assert client.stats.outages[0].cause == "connection_lost"
    assert proxy.resets == 1


async def test_reset_sends_an_rst_not_a_fin(proxy: FaultProxy, server: FlakyServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\n")  # half a handshake: the server waits for the rest
        await until(lambda: proxy.connections == 1 and proxy.bytes_forwarded > 0)
        assert proxy.reset() == 1
        # A FIN would read as b"" (end of stream); an RST is an error.
        with pytest.raises(ConnectionResetError):
            async with asyncio.timeout(5):
                await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_blackhole_is_caught_by_the_heartbeat_and_restore_lets_it_back(
    proxy: FaultProxy, server: FlakyServer
) -> None:
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS)
    async with wsclient.Client(proxy.url, **fast(heartbeat=heartbeat, open_timeout=50 * MS)) as client:
        proxy.blackhole()
        assert proxy.blackholed
        # Dead peer noticed; new handshakes go into the hole and time out.
        await until(lambda: client.stats.connect_attempts >= 3)
        assert client.state is wsclient.State.RECONNECTING
        assert client.stats.outages[0].cause == "heartbeat_timeout"
        proxy.restore()
        await client.wait_open(timeout=5)
        assert await echo(client, "restored") == "restored"


async def test_latency_delays_each_direction(proxy: FaultProxy) -> None:
    async with wsclient.Client(proxy.url, **fast()) as client:
        proxy.latency = 20 * MS
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await echo(client, "slow") == "slow"
        assert loop.time() - started >= 40 * MS


async def test_bandwidth_throttles(proxy: FaultProxy) -> None:
    async with wsclient.Client(proxy.url, **fast(compression=None)) as client:
        proxy.bandwidth = 200_000
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await echo(client, "x" * 10_000) == "x" * 10_000
        # 10 kB each way at 200 kB/s.
        assert loop.time() - started >= 0.09


async def test_sliced_writes_still_make_whole_messages(proxy: FaultProxy) -> None:
    proxy.slice_size = 1
    async with wsclient.Client(proxy.url, **fast()) as client:
        message = "sliced " * 100
        assert await echo(client, message) == message


async def test_refuse_stops_new_connections_not_open_ones(proxy: FaultProxy, server: FlakyServer) -> None:
    async with wsclient.Client(proxy.url, **fast()) as client:
        await proxy.refuse()
        assert proxy.refusing
        assert await echo(client, "still open") == "still open"
        proxy.reset()
        await until(lambda: client.stats.connect_attempts >= 3)
        assert server.accepted == 1
        await proxy.accept()
        await client.wait_open(timeout=5)
        assert await echo(client, "back") == "back"


async def test_cut_after_n_bytes_breaks_the_handshake(proxy: FaultProxy, server: FlakyServer) -> None:
    proxy.cut_after = 40
    client = wsclient.Client(proxy.url, **fast())
    await client.start()
    try:
        await until(lambda: client.stats.connect_attempts >= 3)
        assert client.state is wsclient.State.CONNECTING
        await proxy.clear()
        await client.wait_open(timeout=5)
        assert await echo(client, "whole") == "whole"
    finally:
        await client.close()


async def test_scheduled_faults_fire_later(proxy: FaultProxy, server: FlakyServer) -> None:
    async with wsclient.Client(proxy.url, **fast()) as client:
        await client.wait_open(timeout=5)
        loop = asyncio.get_running_loop()
        start = loop.time()
        proxy.schedule(10 * MS, proxy.refuse)
        proxy.schedule(20 * MS, proxy.reset)
        proxy.schedule(60 * MS, proxy.accept)
        await until(lambda: proxy.resets == 1)
        assert proxy.refusing
        # Refused until the scheduled accept: the reconnect cannot come earlier.
        await until(lambda: client.stats.reconnects == 1)
        assert loop.time() - start >= 60 * MS
        assert not proxy.refusing
        assert proxy.accepted == 2
        assert client.stats.connect_attempts > 2


async def test_stop_cancels_a_scheduled_fault_that_is_still_running(server: FlakyServer) -> None:
    started = asyncio.Event()

    async def long_blackhole(proxy: FaultProxy) -> None:
        proxy.blackhole()
        started.set()
        await asyncio.sleep(3600)

    async with asyncio.timeout(5):
        async with FaultProxy(server.port) as proxy:
            proxy.schedule(MS, lambda: long_blackhole(proxy))
            await started.wait()
        # Stopped at once, and with every fault off.
        assert not proxy.blackholed


@pytest.mark.parametrize("overflow", ["error", "drop_oldest"])
async def test_sender_waiting_for_space_when_the_peer_dies_gets_the_overflow_policy(
    proxy: FaultProxy, server: FlakyServer, overflow: str
) -> None:
    """A send that waits for outbox space while open must not hang once the session is gone."""
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS)
    settings = fast(heartbeat=heartbeat, open_timeout=50 * MS, max_buffered=5, overflow=overflow)
    async with wsclient.Client(proxy.url, **settings) as client:
        proxy.blackhole()
        sent = 0
        async with asyncio.timeout(5):
            while client.state is not wsclient.State.RECONNECTING or client.stats.dropped < 3:
                session = client.session
                if session is not None and session.is_open:
                    await asyncio.sleep(0)  # let the heartbeat notice; once it has, send without yielding
                try:
                    await client.send(f"m{sent}")
                except wsclient.BufferFull:
                    assert overflow == "error"
                    assert client.state is wsclient.State.RECONNECTING
                    break
                sent += 1
        assert len(client.unsent()) == 5
        proxy.restore()
        await client.wait_open(timeout=5)


async def test_concurrent_starts_share_one_listener(proxy: FaultProxy) -> None:
    await proxy.refuse()
    await asyncio.gather(proxy.accept(), proxy.accept(), proxy.start())
    async with wsclient.Client(proxy.url, **fast()) as client:
        assert await echo(client, "one listener") == "one listener"


async def test_start_is_idempotent(server: FlakyServer) -> None:
    async with FaultProxy(server.port) as proxy:
        port = proxy.port
        await proxy.start()
        await asyncio.gather(proxy.start(), proxy.start())
        assert proxy.port == port
    assert await refused(port)


async def test_a_scheduled_accept_racing_clear_is_harmless(proxy: FaultProxy) -> None:
    await proxy.refuse()
    proxy.schedule(0, proxy.accept)
    await proxy.clear()
    await until(lambda: proxy.scheduled == 0)
    proxy.check()
    assert not proxy.refusing
    async with wsclient.Client(proxy.url, **fast()) as client:
        assert await echo(client, "after the race") == "after the race"


async def test_a_failed_scheduled_coroutine_is_raised_by_stop(server: FlakyServer) -> None:
    async def broken() -> None:
        raise RuntimeError("fault went wrong")

    proxy = FaultProxy(server.port)
    await proxy.start()
    proxy.schedule(0, broken)
    await until(lambda: proxy.scheduled == 0)
    with pytest.raises(ExceptionGroup) as raised:
        await proxy.stop()
    assert raised.group_contains(RuntimeError, match="fault went wrong")
    # Reported once: a second stop has nothing left to raise.
    await proxy.stop()


async def test_a_failed_scheduled_callable_is_raised_by_check(proxy: FaultProxy) -> None:
    proxy.schedule(0, lambda: 1 / 0)
    await until(lambda: proxy.scheduled == 0)
    with pytest.raises(ExceptionGroup) as raised:
        proxy.check()
    assert raised.group_contains(ZeroDivisionError)
    proxy.check()


async def test_leaving_the_block_raises_what_a_scheduled_fault_raised(server: FlakyServer) -> None:
    async def broken() -> None:
        raise OSError("no such fault")

    async def use() -> None:
        async with FaultProxy(server.port) as proxy:
            proxy.schedule(0, broken)
            await until(lambda: proxy.scheduled == 0)

    with pytest.raises(ExceptionGroup) as raised:
        await use()
    assert raised.group_contains(OSError, match="no such fault")


async def test_a_failed_scheduled_fault_does_not_hide_the_error_of_the_block(server: FlakyServer) -> None:
    async def broken() -> None:
        raise OSError("no such fault")

    async def fail() -> None:
        async with FaultProxy(server.port) as proxy:
            proxy.schedule(0, broken)
            await until(lambda: proxy.scheduled == 0)
            raise KeyError("the test's own failure")

    with pytest.raises(KeyError) as raised:
        await fail()
    assert any("no such fault" in note for note in raised.value.__notes__)


@pytest.mark.parametrize("steps", range(8))
async def test_stop_during_a_scheduled_accept_leaves_nothing_listening(server: FlakyServer, steps: int) -> None:
    """Cancelled at each of its awaits, a starting listener is closed, not leaked."""
    proxy = FaultProxy(server.port)
    await proxy.start()
    await proxy.refuse()
    started = asyncio.Event()

    async def accept() -> None:
        started.set()
        await proxy.accept()

    proxy.schedule(0, accept)
    await started.wait()
    for _ in range(steps):
        await asyncio.sleep(0)  # step the scheduled accept to its next await
    await proxy.stop()
    assert await refused(proxy.port)
    assert proxy.scheduled == 0


async def test_stop_while_a_connection_is_reaching_the_upstream_does_not_hang() -> None:
    """A connection reset before its upstream answered is not pumped into an upstream that never speaks."""
    silent: list[asyncio.StreamWriter] = []

    async def never_speaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    upstream = await asyncio.start_server(never_speaks, "127.0.0.1", 0)
    try:
        proxy = FaultProxy(upstream.sockets[0].getsockname()[1])
        await proxy.start()
        _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        try:
            await proxy.wait_for_connections(1)
            async with asyncio.timeout(5):
                await proxy.stop()
            assert proxy.connections == 0
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    finally:
        for accepted in silent:
            accepted.close()
        upstream.close()
        await upstream.wait_closed()


async def test_stop_reading_backs_up_the_clients_writes_while_the_server_still_speaks(
    proxy: FaultProxy, server: FlakyServer
) -> None:
    async with wsclient.Client(proxy.url, **fast(compression=None, max_size=None)) as client:
        proxy.stop_reading()
        assert not proxy.reading
        # Far more than the socket buffers hold: the write waits for a reader.
        blocked = asyncio.create_task(client.send("x" * 8_000_000))
        try:
            done, _ = await asyncio.wait({blocked}, timeout=50 * MS)
            assert not done, "the write should wait while the proxy does not read"
            await server.send_all("the server still speaks")
            assert await client.recv() == "the server still speaks"
            assert server.received == []
            proxy.resume_reading()
            async with asyncio.timeout(5):
                await blocked
        finally:
            blocked.cancel()
        assert await client.recv() == "x" * 8_000_000


@pytest.mark.parametrize("kind", ["flaky_server", "fault_proxy"])
async def test_stopping_while_a_crowd_connects_leaves_no_accepted_socket_open(kind: str) -> None:
    """A socket accepted just before the server closes is closed too (the conftest fails on a ResourceWarning)."""
    async with FlakyServer() as upstream:
        for _ in range(20):
            listener: FlakyServer | FaultProxy = FlakyServer() if kind == "flaky_server" else FaultProxy(upstream.port)
            await listener.start()
            crowd = []
            for _ in range(30):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", listener.port))
                crowd.append(sock)
            await asyncio.sleep(0)  # one turn of the loop: the server accepts some of them
            await listener.stop()
            for sock in crowd:
                sock.close()
            gc.collect()


@pytest.mark.parametrize("kind", ["flaky_server", "fault_proxy"])
async def test_a_stop_cancelled_at_its_first_step_still_closes_the_port(kind: str) -> None:
    async with FlakyServer() as upstream:
        listener: FlakyServer | FaultProxy = FlakyServer() if kind == "flaky_server" else FaultProxy(upstream.port)
        await listener.start()
        stopping = asyncio.create_task(listener.stop())
        await asyncio.sleep(0)  # one turn: the stop has begun, and waits for its next one
        stopping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopping
        assert await refused(listener.port)
        await listener.stop()  # idempotent after a cancelled stop
