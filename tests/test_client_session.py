"""Sessions: fresh tasks on every connection, on_connect, the outbox, heartbeat and idle timeout."""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os

import pytest
from helpers import MS, fast, until
from structlog.testing import capture_logs
from tenacity import AsyncRetrying, RetryCallState
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.heartbeat import HeartbeatTimer, IdleTimer
from wsclient.testing import FlakyServer


def session_tasks(kind: str) -> dict[str, asyncio.Task[object]]:
    return {t.get_name(): t for t in asyncio.all_tasks() if t.get_name().startswith(f"wsclient-{kind}-")}


async def test_reconnect_restarts_heartbeat_and_the_old_one_is_gone(server: FlakyServer) -> None:
    heartbeat = wsclient.Heartbeat(interval=20 * MS, timeout=200 * MS)
    async with wsclient.Client(server.url, **fast(heartbeat=heartbeat, idle_timeout=5.0)) as client:
        first = client.session
        assert first is not None
        # Nothing buffered: the session is ready at once and runs no sender task.
        assert first.ready
        assert not session_tasks("sender")
        # The heartbeat and the idle watchdog are timers; a heartbeat task lives only while a beat waits for its pong.
        old_timers = first._timers
        assert [type(timer) for timer in old_timers] == [HeartbeatTimer, IdleTimer]
        assert isinstance(old_timers[0], HeartbeatTimer)
        assert all(timer.running for timer in old_timers)
        await until(lambda: old_timers[0].beats >= 2)
        server.drop()
        await server.wait_for_connections(2)
        await client.wait_open(timeout=5)
        second = client.session
        assert second is not None
        assert second.id != first.id
        assert not any(timer.running for timer in old_timers)
        old_beats = old_timers[0].beats
        assert all(timer.running for timer in second._timers)
        # The new heartbeat beats, and only the new one.
        new = second._timers[0]
        assert isinstance(new, HeartbeatTimer)
        await until(lambda: new.beats >= 3)
        assert old_timers[0].beats == old_beats
        assert set(session_tasks("heartbeat")) <= {f"wsclient-heartbeat-{second.id}"}
        # The server answers its pings and the session stays up.
        await client.send("ping me")
        assert await client.recv() == "ping me"
    assert not session_tasks("heartbeat")
    assert not session_tasks("sender")
    assert not any(timer.running for timer in second._timers)


async def test_the_sender_is_a_task_only_while_the_outbox_holds_messages(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast(compression=None, close_timeout=0.2)) as client:
        first = client.session
        assert first is not None
        await client.send("direct")
        assert await client.recv() == "direct"
        assert first.ready
        assert not session_tasks("sender")
        await server.stop()
        await until(lambda: client.session is None)
        buffered = [os.urandom(256 * 1024) for _ in range(64)]
        for message in buffered:
            await client.send(message)
        # The next connection never reads: the flush backs up and its sender stays visible.
        server.stall_next()
        await server.start()
        await until(lambda: bool(session_tasks("sender")))
        second = client.session
        assert second is not None
        assert set(session_tasks("sender")) == {f"wsclient-sender-{second.id}"}
        assert not second.ready  # a send now waits behind the buffered messages
        await client.send("after the buffered ones")
        server.drop()
        # The next session flushes what is left, in order, and its sender ends with the outbox empty.
        await until(lambda: client.stats.sessions == 3 and not client.unsent(), timeout=10)
        third = client.session
        assert third is not None
        await until(lambda: not session_tasks("sender"))
        assert third.ready
        await until(lambda: "after the buffered ones" in server.received)
        # What the stalled connection took is lost; the rest arrived in order, the direct send last.
        arrived = server.received[1:]
        assert arrived == [*buffered[len(buffered) + 1 - len(arrived) :], "after the buffered ones"]
        assert client.stats.messages_out + client.stats.sends_interrupted == len(buffered) + 2
        assert client.stats.sends_interrupted == 1


async def test_a_send_behind_a_tombstone_on_an_open_session_starts_a_sender(server: FlakyServer) -> None:
    # The flush ends once no live message is left, so an expired one may stay behind as a tombstone; a send
    # then queues behind it, and only a sender started for that send writes it.
    await server.stop()
    async with asyncio.timeout(5):
        client = wsclient.Client(server.url, **fast())
        await client.start()
        try:
            await client.send("buffered")
            await client.send("expires", ttl=MS)
            await until(lambda: client.stats.expired == 1)
            await server.start()
            await client.wait_open()
            await server.wait_for_received(1)
            assert client.session is not None
            await until(lambda: client.session is not None and client.session.ready and not session_tasks("sender"))
            queue = client._outbox.queue
            assert queue is not None
            assert len(queue) == 1  # the tombstone
            await client.send("after")
            await server.wait_for_received(2)
            assert server.received == ["buffered", "after"]
            await until(lambda: not session_tasks("sender"))
            assert client.stats.messages_out == 2
            assert not client.unsent()
        finally:
            await client.close()


async def test_on_connect_resubscribes_before_buffered_sends_and_before_messages(server: FlakyServer) -> None:
    async def subscribe(session: wsclient.Session) -> None:
        await session.send(json.dumps({"op": "subscribe", "session": session.id}))
        # on_connect may read the server's answer directly from the session.
        assert json.loads(await session.recv())["op"] == "subscribe"

    async with wsclient.Client(server.url, on_connect=subscribe, **fast()) as client:
        await server.stop()
        await client.send("buffered-1")
        await client.send("buffered-2")
        assert client.stats.buffered == 2
        await server.start()
        await server.wait_for_received(4)
        # The application sees the echoes of the buffered sends, not the subscribe answer.
        assert [await client.recv(), await client.recv()] == ["buffered-1", "buffered-2"]
    ops = [json.loads(m)["op"] if m.startswith("{") else m for m in server.received if isinstance(m, str)]
    assert ops == ["subscribe", "subscribe", "buffered-1", "buffered-2"]


async def test_outbox_keeps_order_across_reconnects(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await client.send("live-0")
        await server.wait_for_received(1)
        await server.stop()
        # Written after the client noticed: a write into the dying connection would be lost in flight.
        await until(lambda: client.state is wsclient.State.RECONNECTING)
        for i in range(50):
            await client.send(f"buffered-{i}")
        await server.start()
        await client.wait_open(timeout=5)
        for i in range(50, 60):
            await client.send(f"buffered-{i}")
        await server.wait_for_received(61)
    assert server.received == ["live-0"] + [f"buffered-{i}" for i in range(60)]
    assert client.stats.messages_out == 61
    assert client.unsent() == []


async def test_full_outbox_raises_buffer_full_while_disconnected(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast(max_buffered=3)) as client:
        await server.stop()
        await until(lambda: client.state is wsclient.State.RECONNECTING)
        for i in range(3):
            await client.send(str(i))
        with pytest.raises(wsclient.BufferFull, match="3 messages"):
            await client.send("one too many")
        await server.start()
        await server.wait_for_received(3)
    assert server.received == ["0", "1", "2"]


async def test_drop_oldest_counts_what_it_drops(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast(max_buffered=2, overflow="drop_oldest")) as client:
        await server.stop()
        await until(lambda: client.state is wsclient.State.RECONNECTING)
        with capture_logs() as events:
            for i in range(5):
                await client.send(str(i))
        assert client.stats.dropped == 3
        assert [e["event"] for e in events].count("buffer_dropped_oldest") == 3
        assert client.unsent() == ["3", "4"]
        await server.start()
        await server.wait_for_received(2)
    assert server.received == ["3", "4"]


async def test_overflow_wait_blocks_until_the_next_session_flushes(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast(max_buffered=1, overflow="wait")) as client:
        await server.stop()
        await until(lambda: client.state is wsclient.State.RECONNECTING)
        await client.send("first")
        blocked = asyncio.create_task(client.send("second"))
        await asyncio.sleep(10 * MS)
        assert not blocked.done()
        await server.start()
        await blocked
        await server.wait_for_received(2)
    assert server.received == ["first", "second"]


async def test_unsent_messages_are_returned_at_close_not_lost(server: FlakyServer) -> None:
    client = wsclient.Client(server.url, **fast())
    with capture_logs() as events:
        async with client:
            await server.stop()
            await until(lambda: client.state is wsclient.State.RECONNECTING)
            await client.send("a")
            await client.send(b"b")
    assert client.unsent() == ["a", b"b"]
    assert {"event": "unsent", "messages": 2} in [{k: e[k] for k in ("event", "messages") if k in e} for e in events]
    with pytest.raises(wsclient.ClientClosed):
        await client.send("late")


async def test_close_flushes_the_outbox_first(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await server.stop()
        await until(lambda: client.state is wsclient.State.RECONNECTING)
        for i in range(20):
            await client.send(f"m{i}")
        await server.start()
        await client.wait_open(timeout=5)
    await server.wait_for_received(20)
    assert server.received == [f"m{i}" for i in range(20)]
    assert client.unsent() == []


async def test_twenty_drops_in_a_row_one_stream_no_lost_sends(stream_server: FlakyServer) -> None:
    sent: list[str] = []
    async with wsclient.Client(stream_server.url, **fast()) as client:
        received = 0
        seqs: list[int] = []
        for drop in range(20):
            async for message in client:
                seqs.append(json.loads(message)["seq"])
                received += 1
                if received % 5 == 0:
                    break
            stream_server.drop()
            outages = drop + 1
            await until(lambda: client.stats.outages_total >= outages)  # noqa: B023 - awaited at once
            note = f"note-{drop}"
            sent.append(note)
            await client.send(note)
        await stream_server.wait_for(lambda: sum(1 for m in stream_server.received if m in sent) == 20)
        assert client.stats.reconnects >= 19
        assert client.stats.outages_total >= 19
        assert all(o.end is not None and o.end >= o.start for o in list(client.stats.outages)[:-1])
    notes = [m for m in stream_server.received if isinstance(m, str) and m.startswith("note-")]
    assert notes == sent
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_heartbeat_catches_a_half_open_peer_while_recv_is_pending(server: FlakyServer) -> None:
    heartbeat = wsclient.Heartbeat(interval=20 * MS, timeout=50 * MS)
    with capture_logs() as events:
        async with wsclient.Client(server.url, **fast(heartbeat=heartbeat)) as client:
            pending = asyncio.create_task(client.recv())
            server.stall()
            await server.wait_for_connections(2)
            await client.send("alive again")
            assert await asyncio.wait_for(pending, 5) == "alive again"
    first_end = next(e for e in events if e["event"] == "disconnected")
    assert (first_end["cause"], first_end["closed_by"], first_end["code"]) == ("heartbeat_timeout", "nobody", 1006)
    assert client.stats.outages[0].cause == "heartbeat_timeout"
    assert "heartbeat_timeout" in [e["event"] for e in events]


async def test_a_slow_reader_is_not_mistaken_for_a_dead_peer() -> None:
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=20 * MS)
    async with FlakyServer("stream", stream_interval=0) as flood:
        with capture_logs() as events:
            async with wsclient.Client(
                flood.url,
                # Reading paused, the client never sees the server's closing frame: a short close_timeout ends it.
                **fast(heartbeat=heartbeat, inbox_size=8, max_queue=4, idle_timeout=50 * MS, close_timeout=0.1),
            ) as client:
                # Do not read: the inbox fills, the session stops reading, pongs wait behind data.
                await until(lambda: sum(e.get("reason") == "reading_paused" for e in events) >= 5)
                assert client.stats.sessions == 1
                assert client.state is wsclient.State.OPEN
                first = json.loads(await client.recv())
                assert first["seq"] == 0
    assert "heartbeat_timeout" not in [e["event"] for e in events]
    assert "idle_timeout" not in [e["event"] for e in events]


async def test_application_heartbeat_message(server: FlakyServer) -> None:
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=100 * MS, message='{"op": "ping"}')
    async with wsclient.Client(server.url, **fast(heartbeat=heartbeat)) as client:
        await server.wait_for_received(3)
        assert await client.recv() == '{"op": "ping"}'
        assert client.stats.sessions == 1
    assert set(server.received) == {'{"op": "ping"}'}


async def test_application_heartbeat_without_answer_ends_the_session() -> None:
    stamps = itertools.count()
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS, message=lambda: f"ping {next(stamps)}")
    async with FlakyServer("silent") as server:
        async with wsclient.Client(server.url, **fast(heartbeat=heartbeat)):
            await server.wait_for_connections(2)
            await server.wait_for_received(2)
        assert client_pings_are_fresh(server.received)


def client_pings_are_fresh(received: list[str | bytes]) -> bool:
    numbers = [int(str(m).split()[1]) for m in received]
    return numbers == sorted(numbers) and len(set(numbers)) == len(numbers) and len(numbers) >= 2


async def test_idle_timeout_ends_a_quiet_feed() -> None:
    async with FlakyServer("silent") as server, wsclient.Client(server.url, **fast(idle_timeout=30 * MS)) as client:
        await server.wait_for_connections(2)
        await until(lambda: client.stats.last_cause is not None)
        assert client.stats.last_cause == "idle_timeout"


async def test_headers_and_url_callables_run_before_every_attempt(server: FlakyServer) -> None:
    tokens = itertools.count(1)

    async def fresh_headers() -> dict[str, str]:
        await asyncio.sleep(0)
        return {"Authorization": f"Bearer token-{next(tokens)}"}

    paths = itertools.count(1)
    async with wsclient.Client(
        lambda: f"{server.url}/feed?sig={next(paths)}", headers=fresh_headers, **fast()
    ) as client:
        server.drop()
        await server.wait_for_connections(2)
        await client.wait_open(timeout=5)
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer token-1", "Bearer token-2"]
    assert [r.path for r in server.requests] == ["/feed?sig=1", "/feed?sig=2"]


async def test_on_message_handler_gets_every_message_and_survives_its_errors(server: FlakyServer) -> None:
    seen: list[str] = []

    async def handler(message: str | bytes) -> None:
        seen.append(str(message))
        if message == "boom":
            raise ValueError("handler bug")

    with capture_logs() as events:
        async with wsclient.Client(server.url, on_message=handler, **fast()) as client:
            for message in ("a", "boom", "b"):
                await client.send(message)
            await until(lambda: len(seen) == 3)
            with pytest.raises(RuntimeError, match="on_message"):
                await client.recv()
    assert seen == ["a", "boom", "b"]
    failures = [e for e in events if e["event"] == "on_message_failed"]
    assert len(failures) == 1
    assert client.stats.sessions == 1


async def test_sync_handler(server: FlakyServer) -> None:
    seen: list[str | bytes] = []
    async with wsclient.Client(server.url, on_message=seen.append, **fast()) as client:
        await client.send(b"\x00\x01")
        await until(lambda: len(seen) == 1)
    assert seen == [b"\x00\x01"]


async def test_session_exposes_subprotocol_and_response_headers() -> None:
    async def on_connect(session: wsclient.Session) -> None:
        assert session.subprotocol == "v2"
        assert "Sec-WebSocket-Accept" in session.response_headers
        assert session.is_open

    async with FlakyServer(subprotocols=["v2"]) as server:
        client = wsclient.Client(server.url, subprotocols=["v1", "v2"], on_connect=on_connect, **fast())
        async with client:
            assert client.session is not None
            assert client.session.subprotocol == "v2"


async def test_flapping_server_backs_off_and_a_stable_session_resets(server: FlakyServer) -> None:
    flaps = 4

    async def flap_then_echo(connection: ServerConnection) -> None:
        if server.accepted <= flaps:
            await connection.close(1011, "overloaded")
            return
        async for message in connection:
            await connection.send(message)

    server.handler = flap_then_echo
    backoff = wsclient.Backoff(initial=MS, maximum=64 * MS, multiplier=2.0, jitter=False, stable_after=30 * MS)
    with capture_logs() as events:
        async with wsclient.Client(server.url, **fast(backoff=backoff)) as client:
            await server.wait_for_connections(flaps + 1)
            await until(lambda: client.stats.sessions == flaps + 1)
            # Stay up past stable_after, then drop: the next outage starts from the first delay again.
            session = client.session
            assert session is not None
            await until(lambda: asyncio.get_running_loop().time() - session.started > 40 * MS)
            server.drop()
            await server.wait_for_connections(flaps + 2)
            await client.wait_open(timeout=5)
    delays = [e["delay"] for e in events if e["event"] == "retrying"]
    # Each flapping session counts as a failed attempt: 1, 2, 4, 8 ms; then a reset to 1 ms.
    assert delays == [0.001, 0.002, 0.004, 0.008, 0.001]


async def test_a_peer_that_sends_but_no_longer_reads_is_dead_after_missed_pongs(stream_server: FlakyServer) -> None:
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=20 * MS, missed_pongs=3)
    with capture_logs() as events:
        async with wsclient.Client(stream_server.url, **fast(heartbeat=heartbeat)) as client:
            # The stream goes on, but the server stops reading: its pongs never come.
            stream_server.stall()
            await stream_server.wait_for_connections(2)
            assert json.loads(await client.recv())["seq"] == 0
    deferred = [e["missed"] for e in events if e["event"] == "heartbeat_deferred"]
    assert deferred[:2] == [1, 2]
    first_end = next(e for e in events if e["event"] == "disconnected")
    assert first_end["cause"] == "heartbeat_timeout"


async def test_an_idle_client_holds_one_task_no_retry_loop_and_no_empty_queues(server: FlakyServer) -> None:
    # What an idle connection costs: the supervisor, running the session, waits; the heartbeat and idle
    # watchdog are timers; the sender, the retry loop, the queues and the outage history are made when needed.
    heartbeat = wsclient.Heartbeat(interval=60.0, timeout=10.0)
    clients = [wsclient.Client(server.url, **fast(heartbeat=heartbeat, idle_timeout=60.0)) for _ in range(3)]
    try:
        for client in clients:
            await client.__aenter__()
        tasks = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("wsclient-")]
        assert tasks == ["wsclient-supervisor"] * len(clients)
        gc.collect()  # a finished retry loop is a reference cycle: garbage, but only the collector frees it
        # Only these clients' loops count: a stopped client keeps its loop in the traceback of its error.
        supervisors = [client._supervisor for client in clients]
        loops = [o for o in gc.get_objects() if isinstance(o, AsyncRetrying)]
        assert not [o for o in loops if getattr(o.before_sleep, "__self__", None) in supervisors]
        states = [o for o in gc.get_objects() if isinstance(o, RetryCallState)]
        assert not [o for o in states if getattr(o.retry_object.before_sleep, "__self__", None) in supervisors]
        for client in clients:
            assert client.session is not None
            assert [timer.running for timer in client.session._timers] == [True, True]
            assert client._inbox._items is None
            assert client._outbox.queue is None
            assert client.stats._outages is None
    finally:
        for client in clients:
            await client.close()
