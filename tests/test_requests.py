"""Requests and replies, send deadlines and the disconnect hook, against a real JSON server on loopback.

Each test of the semantics table (connected, buffered, dropped mid-flight,
timeout, close) names its row. Where messages are handed over, the test
checks that each ends in exactly one place: written, interrupted, still
unsent, dropped, or expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import MS, fast, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.testing import FlakyServer

BOUND = 5.0


def accounted(client: wsclient.Client) -> int:
    stats = client.stats
    return stats.messages_out + stats.sends_interrupted + len(client.unsent()) + stats.dropped + stats.expired


class Rpc:
    """The server side: answers ``{"id": k, "op": ...}`` with ``{"id": k, "result": ...}`` and records what it saw.

    ``op`` is ``"echo"`` (reply at once), ``"hold"`` (never reply), ``"late"``
    (reply after ``delay`` seconds), ``"drop"`` (abort the connection),
    ``"close"`` (close with ``code``), ``"push"`` (send ``{"push": n}`` first),
    ``"gather"`` (hold until ``n`` gather requests came, then answer them in reverse).
    """

    def __init__(self) -> None:
        self.seen: list[tuple[float, Any]] = []
        self.gathered: list[tuple[ServerConnection, Any]] = []

    def ids(self) -> list[Any]:
        return [key for _, key in self.seen]

    async def handle(self, connection: ServerConnection) -> None:
        async for raw in connection:
            message = json.loads(raw)
            key = message.get("id")
            self.seen.append((time.monotonic(), key))
            op = message.get("op", "echo")
            if op == "hold":
                continue
            if op == "drop":
                connection.transport.abort()
                return
            if op == "close":
                await connection.close(message["code"])
                return
            if op == "late":
                await asyncio.sleep(message["delay"])
            if op == "push":
                await connection.send(json.dumps({"push": key}))
            if op == "gather":
                self.gathered.append((connection, key))
                if len(self.gathered) < message["n"]:
                    continue
                for peer, gathered in reversed(self.gathered):
                    await peer.send(json.dumps({"id": gathered, "result": gathered}))
                self.gathered.clear()
                continue
            await connection.send(json.dumps({"id": key, "result": message.get("params")}))


@pytest.fixture
def rpc() -> Rpc:
    return Rpc()


@pytest.fixture
async def rpc_server(rpc: Rpc) -> AsyncIterator[FlakyServer]:
    async with FlakyServer(handler=rpc.handle) as server:
        yield server


def call(key: Any, op: str = "echo", **fields: Any) -> str:
    return json.dumps({"id": key, "op": op, **fields})


def client_for(server: FlakyServer, **overrides: Any) -> wsclient.Client:
    return wsclient.Client(server.url, reply_key=wsclient.json_field("id"), **fast(**overrides))


# Connected


async def test_connected_a_reply_resolves_its_request_and_skips_the_stream(rpc_server: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        reply = await client.request(call(1, "push", params="x"), key=1)
        assert json.loads(reply) == {"id": 1, "result": "x"}
        # The push before the reply flows to the stream; the reply does not.
        assert json.loads(await client.recv()) == {"push": 1}
        await client.send(json.dumps({"id": "not pending"}))
        assert json.loads(await client.recv()) == {"id": "not pending", "result": None}
    assert client.stats.replies == 1
    assert client.stats.messages_in == 2


async def test_connected_many_concurrent_requests_get_their_own_replies_out_of_order(rpc_server: FlakyServer) -> None:
    count = 100
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        replies = await asyncio.gather(*(client.request(call(n, "gather", n=count), key=n) for n in range(count)))
    assert [json.loads(reply)["result"] for reply in replies] == list(range(count))
    assert client.stats.replies == count
    assert client.stats.messages_in == 0


async def test_a_request_without_reply_key_or_with_bad_arguments_fails_at_once(
    rpc_server: FlakyServer, rpc: Rpc
) -> None:
    with pytest.raises(TypeError, match="reply_key must be callable"):
        wsclient.Client(rpc_server.url, reply_key="id")  # type: ignore[arg-type]
    async with asyncio.timeout(BOUND), wsclient.Client(rpc_server.url, **fast()) as plain:
        with pytest.raises(RuntimeError, match="reply_key"):
            await plain.request(call(1), key=1)
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        with pytest.raises(ValueError, match="timeout must be > 0"):
            await client.request(call(1), key=1, timeout=0)
        with pytest.raises(TypeError, match="timeout must be a number"):
            await client.request(call(1), key=1, timeout="1")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="key must not be None"):
            await client.request(call(1), key=None)
        with pytest.raises(TypeError):
            await client.request(call(1), key=[1])  # type: ignore[arg-type]
        with pytest.raises(UnicodeEncodeError):
            await client.request("\ud800", key=1)
        holding = asyncio.create_task(client.request(call(7, "hold"), key=7))
        await until(lambda: 7 in rpc.ids())
        with pytest.raises(ValueError, match="already pending"):
            await client.request(call(7), key=7)
        holding.cancel()
        await asyncio.wait({holding})
    assert client.stats.messages_out == 1


# Buffered


async def test_buffered_a_request_made_while_down_goes_out_on_the_next_session(
    rpc_server: FlakyServer, rpc: Rpc
) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server)
    async with asyncio.timeout(BOUND):
        await client.start()
        asking = asyncio.create_task(client.request(call("b", params=1), key="b", timeout=BOUND))
        await until(lambda: len(client.unsent()) == 1)
        await rpc_server.start()
        assert json.loads(await asking) == {"id": "b", "result": 1}
        await client.close()
    assert rpc.ids() == ["b"]
    assert client.stats.messages_out == 1


# Dropped mid-flight


async def test_dropped_mid_flight_fails_at_once_not_at_the_timeout(rpc_server: FlakyServer, rpc: Rpc) -> None:
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        started = time.monotonic()
        with pytest.raises(wsclient.RequestInterrupted) as caught:
            await client.request(call("d", "drop"), key="d", timeout=30.0)
        assert time.monotonic() - started < 2.0
        assert caught.value.key == "d"
        assert isinstance(caught.value.end, wsclient.SessionEnd)
        assert caught.value.end.cause is wsclient.Cause.CONNECTION_LOST
        assert "may or may not" in str(caught.value)
        # The client reconnects and the next request is answered.
        assert json.loads(await client.request(call("again"), key="again"))["id"] == "again"
    assert rpc.ids() == ["d", "again"]


async def test_a_request_bound_to_an_old_session_is_not_resolved_by_the_next_one(rpc_server: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        with pytest.raises(wsclient.RequestInterrupted):
            await client.request(call(5, "drop"), key=5)
        await client.wait_open()
        # A message with the same id on the new session is no reply to anything: it flows on.
        await client.send(call(5))
        assert json.loads(await client.recv())["id"] == 5


async def test_a_server_closing_with_a_fatal_code_interrupts_what_it_carried_and_fails_the_buffered(
    rpc_server: FlakyServer,
) -> None:
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        with pytest.raises(wsclient.RequestInterrupted) as caught:
            await client.request(call("c", "close", code=1008), key="c")
        assert caught.value.end.code == 1008
        with pytest.raises((wsclient.FatalCloseError, wsclient.ClientClosed)):
            await client.request(call("after"), key="after")
        assert client.state is wsclient.State.CLOSED


# Timeout


async def test_timeout_while_connected_raises_and_a_late_reply_flows_to_the_stream(rpc_server: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        with pytest.raises(wsclient.RequestTimeout) as caught:
            await client.request(call("t", "late", delay=0.2), key="t", timeout=50 * MS)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.sent is True
        assert json.loads(await client.recv()) == {"id": "t", "result": None}
    assert client.stats.replies == 0
    assert client.stats.expired == 0


async def test_timeout_while_buffered_removes_the_message_and_the_server_never_sees_it(
    rpc_server: FlakyServer, rpc: Rpc
) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server)
    with capture_logs() as events:
        async with asyncio.timeout(BOUND):
            await client.start()
            await client.send(call("before"))
            with pytest.raises(wsclient.RequestTimeout) as caught:
                await client.request(call("gone"), key="gone", timeout=50 * MS)
            await client.send(call("after"))
            assert caught.value.sent is False
            assert [json.loads(m)["id"] for m in client.unsent()] == ["before", "after"]
            assert client.stats.expired == 1
            await rpc_server.start()
            await client.wait_open()
            ids = {json.loads(await client.recv())["id"], json.loads(await client.recv())["id"]}
            assert ids == {"before", "after"}
            await client.close()
    assert rpc.ids() == ["before", "after"]
    assert accounted(client) == 3
    assert any(e["event"] == "expired" and e["reason"] == "request" for e in events)


# Close


async def test_close_fails_a_pending_and_a_buffered_request_with_client_closed(rpc_server: FlakyServer) -> None:
    async with asyncio.timeout(BOUND):
        client = client_for(rpc_server)
        await client.start()
        await client.wait_open()
        pending = asyncio.create_task(client.request(call("held", "hold"), key="held"))
        await until(lambda: client.stats.messages_out == 1)
        await client.close()
        with pytest.raises(wsclient.ClientClosed, match="may or may not"):
            await pending
        with pytest.raises(wsclient.ClientClosed):
            await client.request(call("late"), key="late")
    await rpc_server.stop()
    async with asyncio.timeout(BOUND):
        client = client_for(rpc_server)
        await client.start()
        buffered = asyncio.create_task(client.request(call("buffered"), key="buffered"))
        await until(lambda: len(client.unsent()) == 1)
        await client.close()
        with pytest.raises(wsclient.ClientClosed):
            await buffered
    assert client.unsent() == []
    assert client.stats.expired == 1
    assert accounted(client) == 1


async def test_a_gave_up_client_fails_its_buffered_requests_with_gave_up(rpc_server: FlakyServer) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server, max_attempts=3)
    async with asyncio.timeout(BOUND):
        await client.start()
        with pytest.raises(wsclient.GaveUp):
            await client.request(call(1), key=1)
        with pytest.raises(wsclient.GaveUp):
            await client.wait_closed()
    assert accounted(client) == 1


# Cancellation and accounting


async def test_a_cancelled_buffered_request_is_never_sent(rpc_server: FlakyServer, rpc: Rpc) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server)
    async with asyncio.timeout(BOUND):
        await client.start()
        asking = asyncio.create_task(client.request(call("cancelled"), key="cancelled"))
        await until(lambda: len(client.unsent()) == 1)
        asking.cancel()
        await asyncio.wait({asking})
        assert client.unsent() == []
        await client.send(call("marker"))
        await rpc_server.start()
        assert json.loads(await client.recv())["id"] == "marker"
        await client.close()
    assert rpc.ids() == ["marker"]
    assert accounted(client) == 2


@pytest.mark.parametrize("seed", range(3))
async def test_requests_cut_at_random_points_each_end_in_one_way(rpc_server: FlakyServer, seed: int) -> None:
    rng = random.Random(seed)
    client = client_for(rpc_server)
    outcomes: dict[str, int] = {}
    handed = 0
    async with asyncio.timeout(3 * BOUND), client:
        for n in range(150):
            if rng.random() < 0.05:
                rpc_server.drop()
            op = rng.choice(["echo", "echo", "late", "hold"])
            handed += 1
            try:
                async with asyncio.timeout(rng.uniform(0, 4 * MS)):
                    await client.request(call(n, op, delay=2 * MS), key=n, timeout=rng.uniform(MS, 6 * MS))
                outcome = "reply"
            except wsclient.RequestTimeout:
                outcome = "timeout"
            except wsclient.RequestInterrupted:
                outcome = "interrupted"
            except TimeoutError:
                outcome = "cancelled"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            assert client._requests is not None
            assert not client._requests.pending
    assert sum(outcomes.values()) == handed
    assert accounted(client) == handed
    assert outcomes.get("reply", 0) > 0


# Requests in on_connect


async def test_on_connect_requests_an_ack_and_a_subscription_before_buffered_sends(
    rpc_server: FlakyServer, rpc: Rpc
) -> None:
    subscriptions: list[Any] = []
    early: list[Any] = []

    async def on_connect(session: wsclient.Session) -> None:
        ack, sub = await asyncio.gather(
            session.request(call("auth", "push"), key="auth"),
            session.request(call("sub", params="ticks"), key="sub"),
        )
        assert json.loads(ack)["id"] == "auth"
        subscriptions.append(json.loads(sub)["result"])
        early.append(json.loads(await session.recv()))

    await rpc_server.stop()
    client = wsclient.Client(
        rpc_server.url, reply_key=wsclient.json_field("id"), on_connect=on_connect, **fast(open_timeout=BOUND)
    )
    async with asyncio.timeout(BOUND):
        await client.start()
        await client.send(call("buffered"))
        await rpc_server.start()
        await client.wait_open()
        assert json.loads(await client.recv())["id"] == "buffered"
        await client.close()
    assert subscriptions == ["ticks"]
    assert early == [{"push": "auth"}]
    assert rpc.ids()[-1] == "buffered"
    assert client.stats.replies == 2


async def test_messages_held_while_on_connect_waits_reach_the_stream_first_and_in_order(
    rpc_server: FlakyServer,
) -> None:
    async def on_connect(session: wsclient.Session) -> None:
        for n in range(3):
            await session.request(call(f"r{n}", "push"), key=f"r{n}")

    client = wsclient.Client(rpc_server.url, reply_key=wsclient.json_field("id"), on_connect=on_connect, **fast())
    async with asyncio.timeout(BOUND), client:
        await client.send(call("live"))
        received = [json.loads(await client.recv()) for _ in range(4)]
    assert received == [{"push": "r0"}, {"push": "r1"}, {"push": "r2"}, {"id": "live", "result": None}]


async def test_a_request_in_on_connect_cut_by_a_drop_reconnects(rpc_server: FlakyServer, rpc: Rpc) -> None:
    attempts = 0

    async def on_connect(session: wsclient.Session) -> None:
        nonlocal attempts
        attempts += 1
        await session.request(call(f"auth{attempts}", "drop" if attempts == 1 else "echo"), key=f"auth{attempts}")

    client = wsclient.Client(rpc_server.url, reply_key=wsclient.json_field("id"), on_connect=on_connect, **fast())
    async with asyncio.timeout(BOUND), client:
        assert client.stats.sessions == 1
    assert attempts == 2
    assert rpc.ids() == ["auth1", "auth2"]


async def test_a_request_on_an_ended_session_is_interrupted_at_once(rpc_server: FlakyServer) -> None:
    kept: list[wsclient.Session] = []

    async def on_connect(session: wsclient.Session) -> None:
        kept.append(session)

    client = wsclient.Client(rpc_server.url, reply_key=wsclient.json_field("id"), on_connect=on_connect, **fast())
    async with asyncio.timeout(BOUND), client:
        rpc_server.drop()
        await until(lambda: client.stats.sessions == 2)
        with pytest.raises(wsclient.RequestInterrupted) as caught:
            await kept[0].request(call(1), key=1)
        assert caught.value.session_id == kept[0].id
        assert json.loads(await kept[1].request(call(2), key=2))["id"] == 2


# reply_key


async def test_a_reply_key_that_raises_is_logged_once_and_the_message_flows_on(rpc_server: FlakyServer) -> None:
    def reply_key(message: wsclient.Data) -> Any:
        document = json.loads(message)
        return document["id"] if "result" in document else document["missing"]

    with capture_logs() as events:
        client = wsclient.Client(rpc_server.url, reply_key=reply_key, **fast())
        async with asyncio.timeout(BOUND), client:
            pending = asyncio.create_task(client.request(call("r", "push"), key="r"))
            assert json.loads(await client.recv()) == {"push": "r"}
            await pending
            for n in range(3):
                await client.request(call(n, "push"), key=n)
                assert json.loads(await client.recv()) == {"push": n}
    failures = [e for e in events if e["event"] == "reply_key_failed"]
    assert len(failures) == 1
    assert isinstance(failures[0]["exc_info"], KeyError)


@pytest.mark.parametrize(
    ("message", "key"),
    [
        ('{"id": 7, "result": 1}', 7),
        (b'{"id": "a"}', "a"),
        ('  {"id": null}', None),
        ('{"id": [1]}', None),
        ('{"id": {"x": 1}}', None),
        ('["id", 1]', None),
        ('{"result": {"id": 3}}', None),
        ("id", None),
        ('"id"', None),
        ('{not json, but "id"', None),
        ("", None),
        (b"\xff\xfe", None),
    ],
)
def test_json_field_reads_a_top_level_field_of_a_json_object(message: wsclient.Data, key: Any) -> None:
    assert wsclient.json_field("id")(message) == key


def test_json_field_refuses_a_name_that_is_not_a_string() -> None:
    with pytest.raises(TypeError, match="name must be a non-empty str"):
        wsclient.json_field(1)  # type: ignore[arg-type]


# send(ttl=)


async def test_a_buffered_send_past_its_ttl_is_never_sent_and_is_counted(rpc_server: FlakyServer, rpc: Rpc) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server)
    with capture_logs() as events:
        async with asyncio.timeout(BOUND):
            await client.start()
            await client.send(call("stale"), ttl=20 * MS)
            await client.send(call("fresh"), ttl=BOUND)
            await client.send(call("plain"))
            await until(lambda: client.stats.expired == 1)
            assert [json.loads(m)["id"] for m in client.unsent()] == ["fresh", "plain"]
            await rpc_server.start()
            await client.wait_open()
            assert {json.loads(await client.recv())["id"] for _ in range(2)} == {"fresh", "plain"}
            await client.close()
    assert rpc.ids() == ["fresh", "plain"]
    assert accounted(client) == 3
    assert [e["reason"] for e in events if e["event"] == "expired"] == ["ttl"]


async def test_ttl_is_checked_and_ignored_for_a_message_written_at_once(rpc_server: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        with pytest.raises(ValueError, match="ttl must be > 0"):
            await client.send("x", ttl=-1)
        await client.send(call("now"), ttl=MS)
        assert json.loads(await client.recv())["id"] == "now"
    assert client.stats.expired == 0


async def test_a_send_waiting_for_space_past_its_ttl_expires(rpc_server: FlakyServer) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server, max_buffered=1, overflow="wait")
    async with asyncio.timeout(BOUND):
        await client.start()
        await client.send(call("first"))
        await client.send(call("second"), ttl=20 * MS)
        assert client.stats.expired == 1
        await client.close()
    assert accounted(client) == 2


async def test_many_expired_sends_do_not_grow_the_outbox(rpc_server: FlakyServer) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server, max_buffered=10)
    async with asyncio.timeout(BOUND):
        await client.start()
        for n in range(1000):
            await client.send(call(n), ttl=MS)
            if n % 5 == 4:
                await until(lambda: len(client.unsent()) == 0)
        assert len(client._outbox.queue) <= 2 * 64 + 10
        await client.close()
    assert client.stats.expired == 1000


async def test_drop_oldest_fails_a_dropped_request_with_buffer_full(rpc_server: FlakyServer) -> None:
    await rpc_server.stop()
    client = client_for(rpc_server, max_buffered=1, overflow="drop_oldest")
    async with asyncio.timeout(BOUND):
        await client.start()
        asking = asyncio.create_task(client.request(call("old"), key="old"))
        await until(lambda: len(client.unsent()) == 1)
        await client.send(call("new"))
        with pytest.raises(wsclient.BufferFull):
            await asking
        assert [json.loads(m)["id"] for m in client.unsent()] == ["new"]
        await client.close()
    assert accounted(client) == 2


# on_disconnect


async def test_on_disconnect_hears_how_every_session_ended(rpc_server: FlakyServer) -> None:
    ends: list[wsclient.SessionEnd] = []

    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        ends.append(end)

    async with asyncio.timeout(BOUND), wsclient.Client(rpc_server.url, on_disconnect=on_disconnect, **fast()) as c:
        rpc_server.drop()
        await until(lambda: len(ends) == 1)
        await c.wait_open()
    assert [end.cause for end in ends] == [wsclient.Cause.CONNECTION_LOST, wsclient.Cause.USER_CLOSE]


async def test_on_disconnect_runs_after_the_sessions_requests_failed(rpc_server: FlakyServer) -> None:
    seen: list[bool] = []
    pending: list[asyncio.Task[wsclient.Data]] = []

    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        seen.append(bool(pending) and pending[0].done())

    client = wsclient.Client(rpc_server.url, reply_key=wsclient.json_field("id"), on_disconnect=on_disconnect, **fast())
    async with asyncio.timeout(BOUND), client:
        pending.append(asyncio.create_task(client.request(call("h", "hold"), key="h")))
        await until(lambda: client.stats.messages_out == 1)
        rpc_server.drop()
        with pytest.raises(wsclient.RequestInterrupted):
            await pending[0]
        await until(lambda: len(seen) == 1)
    assert seen[0] is True


def test_a_plain_function_on_disconnect_is_refused_at_construction() -> None:
    with pytest.raises(TypeError, match="on_disconnect must be an async function"):
        wsclient.Client("ws://127.0.0.1:9", on_disconnect=lambda end: None)  # type: ignore[arg-type, return-value]


async def test_a_bug_in_on_disconnect_stops_the_client_with_callback_error(rpc_server: FlakyServer) -> None:
    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        raise KeyError("plan")

    with capture_logs() as events:
        client = wsclient.Client(rpc_server.url, on_disconnect=on_disconnect, **fast())
        async with asyncio.timeout(BOUND), client:
            rpc_server.drop()
            with pytest.raises(wsclient.CallbackError) as caught:
                await client.wait_closed()
    assert caught.value.callback == "on_disconnect"
    assert isinstance(caught.value.__cause__, KeyError)
    assert any(e["event"] == "callback_failed" and e["callback"] == "on_disconnect" for e in events)
    assert rpc_server.accepted == 1


async def test_a_connection_error_in_on_disconnect_is_logged_and_changes_nothing(rpc_server: FlakyServer) -> None:
    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        raise ConnectionResetError("the bookkeeping service is down")

    with capture_logs() as events:
        client = wsclient.Client(rpc_server.url, on_disconnect=on_disconnect, **fast())
        async with asyncio.timeout(BOUND), client:
            rpc_server.drop()
            await rpc_server.wait_for_connections(2)
            await client.wait_open()
    assert sum(e["event"] == "on_disconnect_failed" for e in events) == 2
    assert client.stats.sessions == 2


async def test_a_cancelled_request_leaves_no_task_and_no_pending_entry(rpc_server: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), client_for(rpc_server) as client:
        for step in range(6):
            asking = asyncio.create_task(client.request(call(step, "late", delay=MS), key=step))
            for _ in range(step):
                await asyncio.sleep(0)
            asking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asking
            assert client._requests is not None
            assert not client._requests.pending
