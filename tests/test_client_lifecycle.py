"""Starting, stopping, giving up and being cancelled, with nothing left behind."""

from __future__ import annotations

import asyncio

import pytest
from helpers import MS, fast, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.testing import FlakyServer


async def test_states_through_a_life(server: FlakyServer) -> None:
    client = wsclient.Client(server.url, **fast())
    assert client.state is wsclient.State.IDLE
    with capture_logs() as events:
        async with client:
            assert client.state is wsclient.State.OPEN
            server.drop()
            await server.wait_for_connections(2)
            await client.wait_open(timeout=5)
    assert client.state is wsclient.State.CLOSED
    transitions = [(e["old"], e["new"]) for e in events if e["event"] == "state"]
    assert transitions == [
        ("idle", "connecting"),
        ("connecting", "open"),
        ("open", "reconnecting"),
        ("reconnecting", "open"),
        ("open", "closing"),
        ("closing", "closed"),
    ]
    assert client.stats.sessions == 2
    assert client.stats.reconnects == 1


async def test_close_is_idempotent_and_safe_to_call_concurrently(server: FlakyServer) -> None:
    client = wsclient.Client(server.url, **fast())
    async with client:
        await asyncio.gather(client.close(), client.close(), client.close())
        assert client.state is wsclient.State.CLOSED
        await client.close()
    await server.wait_disconnected()
    assert server.accepted == 1


async def test_close_before_start() -> None:
    client = wsclient.Client("ws://127.0.0.1:9", **fast())
    await client.close()
    assert client.state is wsclient.State.CLOSED
    with pytest.raises(RuntimeError, match="cannot start"):
        await client.start()


async def test_start_twice_is_an_error(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(RuntimeError, match="cannot start: it is open"):
            await client.start()


async def test_recv_before_start_is_an_error() -> None:
    client = wsclient.Client("ws://127.0.0.1:9", **fast())
    with pytest.raises(RuntimeError, match="not started"):
        await client.recv()
    with pytest.raises(RuntimeError, match="not started"):
        await client.wait_open()


async def test_send_before_start_is_buffered_for_the_first_session(server: FlakyServer) -> None:
    client = wsclient.Client(server.url, **fast())
    await client.send("early")
    async with client:
        assert await client.recv() == "early"


async def test_send_rejects_what_is_not_a_message(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(TypeError, match="str or bytes"):
            await client.send({"op": "subscribe"})  # type: ignore[arg-type]


async def test_recv_and_send_after_close(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        pass
    with pytest.raises(wsclient.ClientClosed):
        await client.recv()
    with pytest.raises(wsclient.ClientClosed):
        await client.send("too late")
    assert [m async for m in client] == []


async def test_messages_received_before_close_can_still_be_read(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        for i in range(3):
            await client.send(str(i))
        await until(lambda: client.stats.messages_in == 3)
    assert [m async for m in client] == ["0", "1", "2"]


async def test_gave_up_after_max_attempts(server: FlakyServer) -> None:
    await server.stop()
    with capture_logs() as events, pytest.raises(wsclient.GaveUp) as caught:
        async with wsclient.Client(server.url, **fast(max_attempts=4)):
            pass
    assert caught.value.attempts == 4
    assert isinstance(caught.value.__cause__, ConnectionRefusedError)
    assert [e["event"] for e in events].count("connect_failed") == 4
    assert [e["attempts"] for e in events if e["event"] == "gave_up"] == [4]


async def test_gave_up_mid_life_reaches_the_reader(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast(max_attempts=3)) as client:
        await server.stop()
        with pytest.raises(wsclient.GaveUp) as caught:
            await client.recv()
        # A session that dropped before stable_after is the first failure of the outage.
        assert caught.value.attempts == 3
        assert client.state is wsclient.State.CLOSED
        outage = client.stats.outages[-1]
        assert outage.end is not None
        assert outage.attempts == 2


async def test_sessions_that_drop_before_stable_after_continue_one_outage() -> None:
    # Accept, then reject at once: each session is one more attempt of the same outage, and the backoff grows.
    async def overloaded(connection: ServerConnection) -> None:
        await connection.close(1011, "overloaded")

    delays: list[float] = []

    async def sleep(delay: float) -> None:
        delays.append(delay)

    backoff = wsclient.Backoff(initial=MS, maximum=1.0, jitter=False, stable_after=60.0)
    async with FlakyServer(handler=overloaded) as server:
        client = wsclient.Client(server.url, **fast(max_attempts=4, backoff=backoff))
        client._supervisor._sleep = sleep  # record the delays instead of waiting them
        with capture_logs() as events:
            await client.start()
            with pytest.raises(wsclient.GaveUp) as caught:
                async with asyncio.timeout(5):
                    await client.wait_closed()
    assert caught.value.attempts == 4
    assert client.stats.sessions == 4
    assert [e["attempt"] for e in events if e["event"] == "retrying"] == [1, 2, 3]
    assert delays == pytest.approx([MS, 2 * MS, 4 * MS])


async def test_after_a_stable_session_max_attempts_counts_connection_attempts(server: FlakyServer) -> None:
    backoff = wsclient.Backoff(initial=MS, maximum=10 * MS, stable_after=0)
    async with wsclient.Client(server.url, **fast(max_attempts=3, backoff=backoff)) as client:
        await server.stop()
        with pytest.raises(wsclient.GaveUp) as caught:
            await client.recv()
    assert caught.value.attempts == 3
    assert client.stats.outages[-1].attempts == 3


async def test_gave_up_after_max_outage(server: FlakyServer) -> None:
    await server.stop()
    with pytest.raises(wsclient.GaveUp) as caught:
        async with wsclient.Client(server.url, **fast(max_outage=30 * MS)):
            pass
    assert caught.value.elapsed >= 30 * MS
    assert caught.value.attempts >= 2


async def test_wait_open_times_out_while_the_server_is_down(server: FlakyServer) -> None:
    await server.stop()
    client = wsclient.Client(server.url, **fast())
    await client.start()
    try:
        with pytest.raises(TimeoutError):
            await client.wait_open(timeout=20 * MS)
        assert client.state is wsclient.State.CONNECTING
    finally:
        await client.close()
    assert client.state is wsclient.State.CLOSED


async def test_close_while_reconnecting(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await server.stop()
        await until(lambda: client.stats.connect_attempts >= 3)
    assert client.state is wsclient.State.CLOSED


async def test_cancelling_the_task_that_runs_async_with_closes_everything(server: FlakyServer) -> None:
    entered = asyncio.Event()

    async def bot() -> None:
        async with wsclient.Client(server.url, **fast()) as client:
            entered.set()
            async for _ in client:
                pass

    task = asyncio.create_task(bot())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.wait_disconnected()


async def test_cancelling_while_connecting(server: FlakyServer) -> None:
    await server.stop()
    client = wsclient.Client(server.url, **fast())
    task = asyncio.create_task(client.__aenter__())
    await until(lambda: client.stats.connect_attempts >= 2)  # refused, and retrying
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_close_is_bounded_when_the_server_never_answers(server: FlakyServer) -> None:
    async with asyncio.timeout(5):
        async with wsclient.Client(server.url, **fast(close_timeout=50 * MS)) as client:
            server.stall()
    assert client.state is wsclient.State.CLOSED
    assert client.stats.last_cause == "user_close"


async def test_close_is_bounded_when_the_application_stopped_reading() -> None:
    async with FlakyServer("stream", stream_interval=0) as flood:
        async with asyncio.timeout(5):
            # Reading paused, the client never sees the server's closing frame: close_timeout runs out, then it aborts.
            async with wsclient.Client(flood.url, **fast(inbox_size=4, max_queue=2, close_timeout=0.1)) as client:
                await until(lambda: client.session is not None and client.session.reading_paused())
                await until(lambda: flood.seq > 1000)
        assert client.state is wsclient.State.CLOSED
        received = [m async for m in client]
        # The inbox bound plus what one read from the socket held, not the server's flood.
        assert 4 <= len(received) < 64


async def test_close_from_inside_the_message_handler(server: FlakyServer) -> None:
    seen: list[str | bytes] = []
    client: wsclient.Client

    async def handler(message: str | bytes) -> None:
        seen.append(message)
        if message == "quit":
            await client.close()

    client = wsclient.Client(server.url, on_message=handler, **fast())
    await client.start()
    await client.wait_open(timeout=5)
    await client.send("quit")
    await until(lambda: client.state is wsclient.State.CLOSED)
    await client.close()
    assert seen == ["quit"]
    assert client.stats.last_cause == "user_close"


async def test_close_from_inside_on_connect(server: FlakyServer) -> None:
    client: wsclient.Client

    async def on_connect(session: wsclient.Session) -> None:
        await client.close()

    client = wsclient.Client(server.url, on_connect=on_connect, **fast())
    with pytest.raises(wsclient.ClientClosed):
        async with client:
            pass
    assert client.state is wsclient.State.CLOSED
    assert server.accepted == 1


async def test_close_during_a_slow_on_connect_does_not_wait_for_the_flush(server: FlakyServer) -> None:
    started = asyncio.Event()

    async def slow_login(session: wsclient.Session) -> None:
        started.set()
        await asyncio.Event().wait()

    client = wsclient.Client(server.url, on_connect=slow_login, **fast(close_timeout=5.0))
    await client.send("buffered")
    await client.start()
    await asyncio.wait_for(started.wait(), 5)
    async with asyncio.timeout(1):
        await client.close()
    assert client.unsent() == ["buffered"]


async def test_on_connect_is_bounded_by_open_timeout(server: FlakyServer) -> None:
    calls = 0

    async def hangs_once(session: wsclient.Session) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()

    with capture_logs() as events:
        async with wsclient.Client(server.url, on_connect=hangs_once, **fast(open_timeout=30 * MS)) as client:
            assert client.stats.sessions == 1
    failure = next(e for e in events if e["event"] == "on_connect_failed")
    assert "within open_timeout" in failure["error"]
    assert calls == 2


@pytest.mark.parametrize(
    ("code", "reason", "match"),
    [(1006, "", "code must be"), (2000, "", "code must be"), (True, "", "code must be"), (1000, "x" * 124, "reason")],
)
async def test_close_rejects_codes_it_may_not_send(server: FlakyServer, code: int, reason: str, match: str) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(ValueError, match=match):
            await client.close(code, reason)
        assert client.state is wsclient.State.OPEN


async def test_close_with_an_application_code(server: FlakyServer) -> None:
    codes: list[int | None] = []

    async def record(connection: ServerConnection) -> None:
        await connection.wait_closed()
        codes.append(connection.close_code)

    server.handler = record
    async with wsclient.Client(server.url, **fast()) as client:
        await client.close(4000, "shutting down")
    await server.wait_disconnected()
    assert codes == [4000]


async def test_a_session_cancelled_before_its_tasks_ran_leaves_no_coroutine_unawaited(server: FlakyServer) -> None:
    async def cancelled_at_once(session: wsclient.Session) -> None:
        # A cancellation of the client's own task (a CancelledError merely raised here would be a CallbackError).
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)

    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=10 * MS)
    client = wsclient.Client(server.url, on_connect=cancelled_at_once, **fast(heartbeat=heartbeat, idle_timeout=1.0))
    await client.start()
    with pytest.raises(wsclient.ClientClosed):
        await client.wait_open(timeout=5)
    await client.close()
    assert client.state is wsclient.State.CLOSED
