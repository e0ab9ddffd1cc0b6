"""Every way out: cancellations, failing user code, races with the supervisor, and the accounting of sends.

Each test here names the path it guards. Where a message is handed to
``send()``, the test checks that it ends in exactly one place: written,
interrupted, still unsent, dropped by the overflow policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from helpers import MS, fast, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

import wsclient
from wsclient.testing import FlakyServer

BOUND = 5.0
"""Every test here finishes well inside this, whatever the server does."""


def accounted(client: wsclient.Client) -> int:
    """Messages handed to ``send()`` that the client can account for: each in exactly one place."""
    stats = client.stats
    return stats.messages_out + stats.sends_interrupted + len(client.unsent()) + stats.dropped


def per_connection(*handlers: Callable[[ServerConnection], object]) -> Callable[[ServerConnection], object]:
    """A server handler that runs ``handlers[n]`` for the n-th connection, then echoes."""
    count = 0

    async def handle(connection: ServerConnection) -> None:
        nonlocal count
        count += 1
        if count <= len(handlers):
            result = handlers[count - 1](connection)
            if asyncio.iscoroutine(result):
                await result
            return
        async for message in connection:
            await connection.send(message)

    return handle


def writes_blocked(client: wsclient.Client) -> bool:
    """Whether the live session's writes wait for a peer that does not take them (flow control paused)."""
    session = client.session
    return session is not None and session.write_stalled(asyncio.get_running_loop().time(), 1)


def socket_transport(session: wsclient.Session) -> asyncio.BaseTransport:
    """The asyncio transport under the session's connection, on either wsclient transport."""
    connection = session.connection
    transport: asyncio.BaseTransport = getattr(connection, "underlying_transport", None) or connection.transport
    return transport


def socket_closed(transport: asyncio.BaseTransport) -> bool:
    """Whether the client's socket behind ``transport`` is closed (the server may not notice if it does not read)."""
    return bool(transport.get_extra_info("socket").fileno() == -1)


async def never_reads(connection: ServerConnection) -> None:
    connection.transport.pause_reading()
    await connection.wait_closed()


# wait_open and async with


async def test_async_with_keeps_waiting_while_first_sessions_drop_at_once() -> None:
    async def drop_at_once(connection: ServerConnection) -> None:
        connection.transport.abort()

    async with FlakyServer(handler=per_connection(*[drop_at_once] * 5)) as server:  # type: ignore[arg-type]
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
            assert client.state is wsclient.State.OPEN
            await client.send("through")
            assert await client.recv() == "through"
        assert server.accepted == 6


async def test_wait_open_raises_only_when_the_client_stopped(server: FlakyServer) -> None:
    server.flap_next(3, code=1011)
    client = wsclient.Client(server.url, **fast())
    await client.start()
    await client.wait_open(timeout=BOUND)
    assert client.stats.sessions >= 1
    await client.close()
    with pytest.raises(wsclient.ClientClosed):
        await client.wait_open(timeout=BOUND)


# An exception escaping a session


async def test_a_heartbeat_message_callable_returning_a_dict_is_a_fatal_bug(server: FlakyServer) -> None:
    heartbeat = wsclient.Heartbeat(interval=5 * MS, timeout=50 * MS, message=lambda: {"op": "ping"})  # type: ignore[arg-type, return-value]
    with capture_logs() as events:
        async with asyncio.timeout(BOUND):
            client = wsclient.Client(server.url, **fast(heartbeat=heartbeat))
            async with client:
                with pytest.raises(wsclient.CallbackError) as caught:
                    await client.wait_closed()
    assert caught.value.callback == "Heartbeat.message"
    assert isinstance(caught.value.__cause__, TypeError)
    assert "dict" in str(caught.value)
    assert client.state is wsclient.State.CLOSED
    await server.wait_disconnected()
    assert server.accepted == 1
    failure = next(e for e in events if e["event"] == "session_failed")
    assert isinstance(failure["exc_info"], wsclient.CallbackError)
    assert "illegal state transition" not in repr(events)


async def test_a_heartbeat_message_callable_that_raises_is_a_fatal_bug(server: FlakyServer) -> None:
    def broken() -> str:
        raise KeyError("ts")

    heartbeat = wsclient.Heartbeat(interval=5 * MS, timeout=50 * MS, message=broken)
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast(heartbeat=heartbeat)) as client:
        with pytest.raises(wsclient.CallbackError, match=r"Heartbeat\.message raised KeyError"):
            await client.recv()
    await server.wait_disconnected()
    assert server.accepted == 1


# Cancelled close


async def test_a_cancelled_close_aborts_and_no_session_opens_after_it() -> None:
    async with FlakyServer(handler=per_connection(never_reads)) as server:  # type: ignore[arg-type]
        client = wsclient.Client(server.url, **fast(close_timeout=5.0, compression=None))
        await client.start()
        await client.wait_open(timeout=BOUND)
        handed = 0

        async def flood() -> None:
            nonlocal handed
            while True:
                handed += 1
                await client.send(os.urandom(256 * 1024))

        sender = asyncio.create_task(flood())
        # The server does not read: the writes block, and so would the close handshake.
        await until(lambda: writes_blocked(client))
        assert client.session is not None
        transport = socket_transport(client.session)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.close(), 50 * MS)
        assert time.monotonic() - started < 1.0
        assert client.state is wsclient.State.CLOSED
        with pytest.raises(wsclient.ClientClosed):
            await asyncio.wait_for(sender, BOUND)
        assert socket_closed(transport)
        async with asyncio.timeout(0.1):
            await client.close()
        assert server.accepted == 1
        assert accounted(client) == handed - 1  # the last send() raised ClientClosed: not handed over


async def test_a_timeout_around_async_with_leaves_nothing_running() -> None:
    async with FlakyServer(handler=per_connection(never_reads)) as server:  # type: ignore[arg-type]
        # The body is cancelled; leaving the block still tries a graceful close, bounded by close_timeout.
        client = wsclient.Client(server.url, **fast(close_timeout=0.3, compression=None))
        transports = []

        async def flood_until_cancelled() -> None:
            async with asyncio.timeout(0.2), client:
                assert client.session is not None
                transports.append(socket_transport(client.session))
                while True:
                    await client.send(os.urandom(64 * 1024))

        with pytest.raises(TimeoutError):
            await flood_until_cancelled()
        assert client.state is wsclient.State.CLOSED
        assert socket_closed(transports[0])
        assert server.accepted == 1


async def test_close_right_after_start_ends_closed() -> None:
    client = wsclient.Client("ws://127.0.0.1:9", **fast())
    await client.start()
    await client.close()
    assert client.state is wsclient.State.CLOSED
    with pytest.raises(wsclient.ClientClosed):
        await client.recv()


@pytest.mark.parametrize("step", range(8))
async def test_cancelling_close_at_any_step_leaves_a_closed_client(server: FlakyServer, step: int) -> None:
    client = wsclient.Client(server.url, **fast())
    async with asyncio.timeout(BOUND):
        await client.start()
        await client.wait_open()
        await client.send("before")
        closing = asyncio.create_task(client.close())
        for _ in range(step):
            await asyncio.sleep(0)
        closing.cancel()
        await asyncio.wait({closing})
        await client.close()
    assert client.state is wsclient.State.CLOSED
    await server.wait_disconnected()
    assert server.accepted == 1
    assert accounted(client) == 1


# close_timeout bounds the whole close


async def test_close_timeout_bounds_the_flush_and_the_handshake_together() -> None:
    async with FlakyServer(handler=per_connection(never_reads)) as server:  # type: ignore[arg-type]
        await server.stop()
        client = wsclient.Client(server.url, **fast(close_timeout=0.2, compression=None))
        await client.start()
        for _ in range(64):
            await client.send(os.urandom(256 * 1024))
        await server.start()
        await client.wait_open(timeout=BOUND)
        await until(lambda: writes_blocked(client))
        started = time.monotonic()
        await client.close()
        elapsed = time.monotonic() - started
        assert elapsed < 0.35, f"close took {elapsed:.2f}s with close_timeout=0.2"
        assert client.state is wsclient.State.CLOSED
        assert accounted(client) == 64
        assert client.stats.sends_interrupted == 1
        assert client.unsent()


# Accounting of what send() was handed


async def test_a_message_being_flushed_when_the_session_is_cancelled_is_counted() -> None:
    async with FlakyServer(handler=per_connection(never_reads)) as server:  # type: ignore[arg-type]
        await server.stop()
        client = wsclient.Client(server.url, **fast(close_timeout=0.1, compression=None, max_buffered=300))
        await client.start()
        for _ in range(300):
            await client.send(os.urandom(64 * 1024))
        await server.start()
        await client.wait_open(timeout=BOUND)
        await until(lambda: writes_blocked(client))
        await client.close()
        assert accounted(client) == 300
        assert client.stats.sends_interrupted == 1


async def test_a_cancelled_direct_send_is_counted(server: FlakyServer) -> None:
    server.stall_next()
    # The stalled server never answers the close: a short close_timeout ends the wait sooner.
    async with (
        asyncio.timeout(BOUND),
        wsclient.Client(server.url, **fast(compression=None, close_timeout=0.1)) as client,
    ):
        handed = 0
        while True:
            handed += 1
            sending = asyncio.create_task(client.send(os.urandom(512 * 1024)))
            await asyncio.wait({sending}, timeout=50 * MS)
            if not sending.done():
                break
        sending.cancel()
        await asyncio.wait({sending})
        assert client.stats.sends_interrupted == 1
    assert accounted(client) == handed


# max_outage counts only time down


async def test_max_outage_counts_only_time_without_a_session() -> None:
    async def up_then_1011(connection: ServerConnection) -> None:
        await asyncio.sleep(60 * MS)
        await connection.close(1011, "short session")

    async with FlakyServer(handler=up_then_1011) as server:  # type: ignore[arg-type]
        client = wsclient.Client(server.url, **fast(max_outage=0.1))
        async with asyncio.timeout(BOUND), client:
            await until(lambda: client.stats.sessions >= 5)
            assert client.state is not wsclient.State.CLOSED
        await server.stop()
        with pytest.raises(wsclient.GaveUp) as caught:
            async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast(max_outage=0.1)):
                pass
        assert 0.1 <= caught.value.elapsed < 1.0


# What send() refuses, and when it waits


async def test_a_lone_surrogate_is_refused_at_once_and_changes_nothing(server: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(UnicodeEncodeError):
            await client.send("\ud800")
        await client.send("still open")
        assert await client.recv() == "still open"
        await server.stop()
        await until(lambda: client.state is wsclient.State.RECONNECTING)
        with pytest.raises(UnicodeEncodeError):
            await client.send("buffered \udfff")
        assert client.unsent() == []
        assert client.stats.sessions == 1
    assert client.stats.messages_out == 1
    assert client.stats.sends_interrupted == 0


async def test_a_session_send_refuses_a_lone_surrogate(server: FlakyServer) -> None:
    async def on_connect(session: wsclient.Session) -> None:
        with pytest.raises(UnicodeEncodeError):
            await session.send("\ud800")
        await session.send("ok")

    async with asyncio.timeout(BOUND), wsclient.Client(server.url, on_connect=on_connect, **fast()) as client:
        assert await client.recv() == "ok"
    assert client.stats.sessions == 1


async def test_a_zero_outbox_that_waits_sends_once_a_session_opens(server: FlakyServer) -> None:
    await server.stop()
    client = wsclient.Client(server.url, **fast(max_buffered=0, overflow="wait"))
    async with asyncio.timeout(BOUND):
        await client.start()
        sending = asyncio.create_task(client.send("after the outage"))
        await until(lambda: client.stats.connect_attempts >= 2)
        assert not sending.done()
        await server.start()
        await sending
        assert await client.recv() == "after the outage"
        await client.close()
    assert client.stats.messages_out == 1


# Reading a stopped client


async def test_reading_a_stopped_client_again_does_not_grow_a_traceback(server: FlakyServer) -> None:
    server.flap_next(1, code=1008, reason="policy")
    client = wsclient.Client(server.url, **fast())
    await client.start()
    with pytest.raises(wsclient.FatalCloseError):
        await client.wait_closed()
    seen = []
    for _ in range(200):
        try:
            await client.recv()
        except wsclient.FatalCloseError as exc:
            seen.append(exc)
    assert len(seen) == 200
    assert len({id(exc) for exc in seen}) == 200
    assert all(exc.code == 1008 and exc.reason == "policy" for exc in seen)
    assert len(traceback.extract_tb(seen[-1].__traceback__)) < 10
    with pytest.raises(wsclient.FatalCloseError) as again:
        await client.wait_open()
    assert again.value.code == 1008


# Bugs in user code surface at once


def test_a_plain_function_on_connect_is_refused_at_construction() -> None:
    def subscribe(session: wsclient.Session) -> None:
        pass

    with pytest.raises(TypeError, match="on_connect must be an async function"):
        wsclient.Client("ws://127.0.0.1:9", on_connect=subscribe)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_connect must be an async function"):
        wsclient.Client("ws://127.0.0.1:9", on_connect=lambda session: None)  # type: ignore[arg-type, return-value]


def test_async_callables_of_every_shape_are_accepted_as_on_connect() -> None:
    import functools

    async def subscribe(session: wsclient.Session, channel: str) -> None:
        pass

    class Subscriber:
        async def __call__(self, session: wsclient.Session) -> None:
            pass

    for hook in (functools.partial(subscribe, channel="ticks"), Subscriber()):
        wsclient.Client("ws://127.0.0.1:9", on_connect=hook)


@pytest.mark.parametrize("which", ["url", "headers"])
async def test_a_url_or_headers_callable_with_a_bug_stops_after_one_attempt(server: FlakyServer, which: str) -> None:
    def broken() -> str:
        raise KeyError("token")

    arguments = {"url": broken} if which == "url" else {"url": server.url, "headers": broken}
    client = wsclient.Client(**arguments, **fast())  # type: ignore[arg-type]
    with pytest.raises(wsclient.CallbackError) as caught:
        async with asyncio.timeout(BOUND), client:
            pass
    assert caught.value.callback == which
    assert isinstance(caught.value.__cause__, KeyError)
    assert server.accepted == 0


async def test_a_headers_callable_that_cannot_reach_its_token_service_is_retried(server: FlakyServer) -> None:
    calls = 0

    async def token() -> dict[str, str]:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError("token service down")
        return {"Authorization": "Bearer t"}

    async with asyncio.timeout(BOUND), wsclient.Client(server.url, headers=token, **fast()) as client:
        assert client.stats.sessions == 1
    assert calls == 3


async def test_an_on_message_failing_on_every_message_logs_once_and_counts(stream_server: FlakyServer) -> None:
    received = 0

    def broken(message: wsclient.Data) -> None:
        nonlocal received
        received += 1
        raise ValueError("cannot parse")

    with capture_logs() as events:
        async with asyncio.timeout(BOUND), wsclient.Client(stream_server.url, on_message=broken, **fast()) as client:
            await until(lambda: received >= 50)
    failures = [e for e in events if e["event"] == "on_message_failed"]
    assert len(failures) == 1
    assert isinstance(failures[0]["exc_info"], ValueError)
    assert client.stats.handler_errors >= 50
    assert client.stats.sessions == 1


async def test_a_close_policy_that_raises_is_a_fatal_bug(server: FlakyServer) -> None:
    def policy(end: wsclient.SessionEnd) -> str:
        raise AttributeError("typo")

    server.flap_next(1, code=1011)
    with pytest.raises(wsclient.CallbackError, match="close_actions raised AttributeError"):
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, close_actions=policy, **fast()) as client:
            await client.wait_closed()
    assert server.accepted == 1


async def test_a_classify_error_that_raises_is_a_fatal_bug(server: FlakyServer) -> None:
    def classify(exc: BaseException) -> wsclient.Action | None:
        raise RuntimeError("bug in classifier")

    await server.stop()
    with pytest.raises(wsclient.CallbackError, match="classify_error"):
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, classify_error=classify, **fast()):
            pass


# Down since


async def test_down_since_covers_the_first_connect_and_every_outage(server: FlakyServer) -> None:
    await server.stop()
    before = time.time()
    client = wsclient.Client(server.url, **fast())
    assert client.stats.down_since is None
    async with asyncio.timeout(BOUND):
        await client.start()
        await until(lambda: client.stats.connect_attempts >= 2)
        down_since = client.stats.down_since
        assert down_since is not None
        assert before <= down_since <= time.time()
        assert client.stats.current_outage is None
        await server.start()
        await client.wait_open()
        assert client.stats.down_since is None
        server.drop()
        await until(lambda: client.stats.down_since is not None)
        await client.wait_open()
        await client.close()


# What other servers do


async def test_a_peer_that_sends_but_stopped_reading_ends_as_write_stalled() -> None:
    async def chatty_but_deaf(connection: ServerConnection) -> None:
        connection.transport.pause_reading()
        while True:
            await connection.send("tick")
            await asyncio.sleep(2 * MS)

    heartbeat = wsclient.Heartbeat(interval=20 * MS, timeout=60 * MS)
    async with FlakyServer(handler=per_connection(chatty_but_deaf)) as server:  # type: ignore[arg-type]
        settings = fast(heartbeat=heartbeat, compression=None, max_buffered=10_000)
        with capture_logs() as events:
            async with asyncio.timeout(BOUND), wsclient.Client(server.url, **settings) as client:
                handed = 0
                while client.stats.outages_total == 0:
                    # Blocks once the peer's buffers are full, until the heartbeat ends the session;
                    # then buffers without waiting, so let the supervisor run.
                    await client.send(os.urandom(256 * 1024))
                    handed += 1
                    await asyncio.sleep(0)
                await client.wait_open()
                await client.send("after")
                while await client.recv() != "after":
                    pass
        assert client.stats.outages[0].cause == wsclient.Cause.WRITE_STALLED
        assert any(e["event"] == "write_stalled" for e in events)
        assert accounted(client) == handed + 1


@pytest.mark.websockets_only("permessage-deflate exists on websockets only")
async def test_max_size_limits_the_message_not_its_compressed_frame() -> None:
    size = 2**20 - 1024

    async def send_incompressible(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(os.urandom(int(message)))

    async with FlakyServer(handler=send_incompressible) as server:  # type: ignore[arg-type]
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
            assert client.session is not None
            assert client.session.connection.protocol.extensions
            await client.send(str(size))
            message = await client.recv()
            assert len(message) == size
            await client.send(str(2**20 + 1))
            with pytest.raises(wsclient.FatalCloseError) as caught:
                await client.recv()
        assert (caught.value.code, caught.value.closed_by) == (1009, "client")


async def test_response_headers_are_case_insensitive() -> None:
    async with FlakyServer(subprotocols=["chat"]) as server:
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, subprotocols=["chat"], **fast()) as client:
            assert client.session is not None
            headers = client.session.response_headers
            assert headers.get("sec-websocket-protocol") == "chat"
            assert headers.get("SEC-WEBSOCKET-PROTOCOL") == "chat"
        server.reject_next(401, {"www-authenticate": "Bearer"})
        with pytest.raises(wsclient.HandshakeRejected) as caught:
            async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()):
                pass
        assert caught.value.headers.get("WWW-Authenticate") == "Bearer"


async def test_a_close_policy_callable_reconnects_after_a_servers_keepalive_close(server: FlakyServer) -> None:
    def policy(end: wsclient.SessionEnd) -> str | None:
        return "reconnect" if end.reason == "ping timed out" else None

    server.flap_next(1, code=1000, reason="ping timed out")
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, close_actions=policy, **fast()) as client:
        await server.wait_for_connections(2)
        await client.wait_open()
        await client.send("back")
        assert await client.recv() == "back"
    assert client.stats.reconnects >= 1


async def test_a_server_close_that_stops_the_client_says_how_to_reconnect(server: FlakyServer) -> None:
    server.flap_next(1, code=1000, reason="bye")
    with capture_logs() as events:
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
            await client.wait_closed()
    warning = next(e for e in events if e["event"] == "stopped_by_server")
    assert warning["log_level"] == "warning"
    assert "reconnect_on_normal_close" in warning["hint"]
    assert client.stats.last_closed_by is wsclient.ClosedBy.SERVER
    assert client.stats.last_cause is wsclient.Cause.CLOSED


async def test_a_503_without_retry_after_comes_back_on_the_ordinary_backoff(server: FlakyServer) -> None:
    server.reject_next(503, count=3)
    backoff = wsclient.Backoff(initial=MS, maximum=MS, overload_delay=30.0)
    started = time.monotonic()
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast(backoff=backoff)) as client:
        assert client.stats.connect_attempts == 4
    assert time.monotonic() - started < 1.0


# Cancellation anywhere


@pytest.mark.parametrize("seed", range(4))
async def test_a_timeout_anywhere_in_a_clients_life_leaves_it_closed_and_accounted(
    server: FlakyServer, seed: int
) -> None:
    rng = random.Random(seed)

    async def subscribe(session: wsclient.Session) -> None:
        # Waits a little, so that a timeout may land inside the hook (its sends are counted apart).
        await asyncio.sleep(rng.uniform(0, 2 * MS) if rng.random() < 0.3 else 0)

    async def life(client: wsclient.Client, returned: list[str]) -> None:
        async with client:
            for n in range(20):
                if rng.random() < 0.1:
                    server.drop()
                await client.send(f"m{n}")
                returned.append(f"m{n}")
                if rng.random() < 0.3:
                    await client.recv()

    for _ in range(50):
        client = wsclient.Client(server.url, on_connect=subscribe, **fast(close_timeout=0.2))
        returned: list[str] = []
        with contextlib.suppress(TimeoutError, wsclient.ClientClosed):
            async with asyncio.timeout(rng.uniform(0, 20 * MS)):
                await life(client, returned)
        assert client.state is wsclient.State.CLOSED
        # A send cut by the timeout may or may not have been handed over; any other is accounted for.
        assert accounted(client) - len(returned) in (0, 1)
    await server.wait_disconnected()


# Less travelled ways out


async def test_a_headers_callable_that_returns_no_mapping_is_a_callback_error(server: FlakyServer) -> None:
    with pytest.raises(wsclient.CallbackError, match="must be a mapping") as caught:
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, headers=lambda: ["x"], **fast()):  # type: ignore[arg-type, return-value]
            pass
    assert caught.value.callback == "headers"
    assert server.accepted == 0


async def test_no_session_opens_after_close_even_when_a_callable_swallows_the_cancellation(
    server: FlakyServer,
) -> None:
    entered = asyncio.Event()

    async def stubborn_headers() -> dict[str, str]:
        entered.set()
        # A callable that ignores cancellation must not bring the client back.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return {}

    client = wsclient.Client(server.url, headers=stubborn_headers, **fast())
    async with asyncio.timeout(BOUND):
        await client.start()
        await entered.wait()
        await client.close()
    assert client.state is wsclient.State.CLOSED
    assert client.stats.sessions == 0
    await server.wait_disconnected()


async def test_session_send_on_a_closed_session_raises_and_counts_nothing(server: FlakyServer) -> None:
    sessions: list[wsclient.Session] = []

    async def keep(session: wsclient.Session) -> None:
        sessions.append(session)

    async with asyncio.timeout(BOUND), wsclient.Client(server.url, on_connect=keep, **fast()) as client:
        server.drop()
        await server.wait_for_connections(2)
        await client.wait_open()
        assert "CLOSED" in repr(sessions[0])
        with pytest.raises(ConnectionClosed):
            await sessions[0].send("too late")
        assert repr(client) == "<wsclient.Client open>"
    assert client.stats.messages_out == 0
    assert client.stats.sends_interrupted == 0


async def test_a_failing_on_connect_against_a_server_that_never_answers_the_close_is_bounded(
    server: FlakyServer,
) -> None:
    server.stall_next()
    calls = 0

    async def refuses_once(session: wsclient.Session) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise wsclient.Reconnect("not yet")

    started = time.monotonic()
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, on_connect=refuses_once, **fast(close_timeout=0.1)):
        assert calls == 2
    assert time.monotonic() - started < 1.0


async def test_a_flush_cut_by_a_dead_peer_counts_the_message_it_was_writing() -> None:
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS)
    async with FlakyServer(handler=per_connection(never_reads)) as server:  # type: ignore[arg-type]
        await server.stop()
        client = wsclient.Client(server.url, **fast(heartbeat=heartbeat, compression=None, max_buffered=100))
        async with asyncio.timeout(BOUND):
            await client.start()
            for _ in range(100):
                await client.send(os.urandom(256 * 1024))
            await server.start()
            await until(lambda: client.stats.outages_total >= 1)
            assert client.stats.sends_interrupted == 1
            assert accounted(client) == 100
            await client.wait_open()
            await client.close()
        assert client.stats.outages[0].cause == wsclient.Cause.HEARTBEAT_TIMEOUT
        assert accounted(client) == 100


async def test_text_mode_decodes_binary_frames_and_ends_a_session_on_invalid_utf8() -> None:
    async def binary(connection: ServerConnection) -> None:
        await connection.send(b"text", text=False)
        await connection.send(b"\xff not UTF-8", text=False)
        await connection.wait_closed()

    async with FlakyServer(handler=binary) as server:  # type: ignore[arg-type]
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, text=True, **fast()) as client:
            assert await client.recv() == "text"
            with pytest.raises(wsclient.FatalCloseError) as caught:
                await client.recv()
        assert (caught.value.code, caught.value.closed_by) == (1007, "client")


def test_text_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="text must be a bool"):
        wsclient.Client("ws://127.0.0.1:9", text="yes")  # type: ignore[call-overload]


async def test_a_timeout_raised_by_on_connect_itself_keeps_its_message(server: FlakyServer) -> None:
    calls = 0

    async def waits_for_an_ack(session: wsclient.Session) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("no ack from the auth service")

    with capture_logs() as events:
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, on_connect=waits_for_an_ack, **fast()):
            pass
    failure = next(e for e in events if e["event"] == "on_connect_failed")
    assert failure["error"] == "TimeoutError: no ack from the auth service"


def lose_connection(session: wsclient.Session, how: str) -> None:
    """End the connection as this side does (a heartbeat verdict), or as a transport does when a write fails."""
    if how == "dropped":
        session.abort(wsclient.Cause.HEARTBEAT_TIMEOUT)
        return
    raw: Any = session.transport.raw
    (raw.underlying_transport if hasattr(raw, "underlying_transport") else raw.transport).abort()


@pytest.mark.parametrize("how", ["dropped", "failed"])
async def test_sends_in_the_step_a_connection_is_lost_wait_for_the_next_session(
    server: FlakyServer, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    # The transports report a lost connection a loop step later. Sends meanwhile went into the dead socket,
    # lost while counted as written (and the transport's library logged a warning past five such writes).
    # A connection this side dropped takes none of them; one that failed takes the first, counted as
    # interrupted (its write is what failed): the rest wait in the outbox for the next session.
    lost = 0 if how == "dropped" else 1
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        session = client.session
        assert session is not None
        lose_connection(session, how)
        for number in range(10):
            await client.send(f"m{number}")
        assert (client.stats.messages_out, client.stats.sends_interrupted) == (0, lost)
        assert accounted(client) == 10
        await server.wait_for(lambda: "m9" in server.received)
        # An interrupted message may or may not have reached the server (Stats.sends_interrupted).
        assert server.received in ([f"m{number}" for number in range(start, 10)] for start in {0, lost})
        assert client.stats.messages_out == 10 - lost
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING and record.name != "wsclient"]
