"""Application callbacks on both transports: what they raise, cancellations, and requests made from inside them.

A ``CancelledError`` that application code raises (it awaited a future that
someone else cancelled) is a bug in that code, like any other exception of
the same callback; a cancellation of the client's own task (``close()``) must
still cancel, whatever callback it lands in.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Hashable
from typing import Any

import pytest
from helpers import MS, fast, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.testing import FlakyServer

pytestmark = pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)

BOUND = 5.0


def cancelled_future() -> asyncio.Future[None]:
    """A future someone else cancelled: awaiting it raises ``CancelledError`` in the awaiting code only."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.cancel()
    return future


async def replies(connection: ServerConnection) -> None:
    """Answer ``{"id": k}`` with ``{"id": k, "ok": true}``; ``{"push": n}`` sends ``n`` notifications first.

    ``{"id": "drop"}`` aborts the connection instead of answering.
    """
    async for raw in connection:
        message = json.loads(raw)
        if message.get("id") == "drop":
            connection.transport.abort()
            return
        for n in range(message.get("push", 0)):
            await connection.send(json.dumps({"note": n}))
        if "id" in message:
            await connection.send(json.dumps({"id": message["id"], "ok": True}))


# A CancelledError raised by on_message or reply_key: counted and logged, the stream goes on.


@pytest.mark.parametrize("kind", ["async", "plain"])
async def test_on_message_raising_cancelled_error_is_a_handler_error(server: FlakyServer, kind: str) -> None:
    seen: list[str] = []

    async def on_async(message: str) -> None:
        seen.append(message)
        if message == "bad":
            await cancelled_future()

    def on_plain(message: str) -> None:
        seen.append(message)
        if message == "bad":
            raise asyncio.CancelledError

    handler: Any = on_async if kind == "async" else on_plain
    with capture_logs() as logs:
        async with wsclient.Client(server.url, text=True, on_message=handler, **fast()) as client:
            for message in ("one", "bad", "two"):
                await client.send(message)
            await until(lambda: len(seen) == 3, BOUND)
            assert client.state is wsclient.State.OPEN
            assert client.stats.handler_errors == 1
            assert client.stats.sessions == 1
    assert seen == ["one", "bad", "two"]
    failures = [entry for entry in logs if entry["event"] == "on_message_failed"]
    assert len(failures) == 1
    assert failures[0]["error"] == "CancelledError"
    assert not [entry for entry in logs if entry["event"] == "disconnected" and entry["code"] != 1000]


async def test_reply_key_raising_cancelled_error_is_not_a_reply(server: FlakyServer) -> None:
    def reply_key(message: str) -> Hashable | None:
        if message == "bad":
            raise asyncio.CancelledError
        return None

    with capture_logs() as logs:
        async with wsclient.Client(server.url, text=True, reply_key=reply_key, **fast()) as client:
            request = asyncio.create_task(client.request("never answered", key="k", timeout=BOUND))
            await until(lambda: client.stats.messages_in == 1, BOUND)  # its echo, which answers nothing
            await client.send("bad")
            assert await client.recv() == "never answered"
            assert await client.recv() == "bad"
            assert client.state is wsclient.State.OPEN
            assert client.stats.sessions == 1
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
    failures = [entry for entry in logs if entry["event"] == "reply_key_failed"]
    assert len(failures) == 1
    assert failures[0]["error"] == "CancelledError"


# A CancelledError raised by on_connect or on_disconnect: a CallbackError that stops the client.


async def test_on_connect_raising_cancelled_error_is_a_callback_error(server: FlakyServer) -> None:
    async def on_connect(session: wsclient.Session) -> None:
        await cancelled_future()

    client = wsclient.Client(server.url, on_connect=on_connect, **fast())
    with pytest.raises(wsclient.CallbackError, match="on_connect raised CancelledError") as caught:
        async with asyncio.timeout(BOUND):
            await client.__aenter__()
    assert caught.value.callback == "on_connect"
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert client.state is wsclient.State.CLOSED
    assert client.stats.connect_attempts == 1


async def test_on_disconnect_raising_cancelled_error_is_a_callback_error(server: FlakyServer) -> None:
    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        await cancelled_future()

    client = wsclient.Client(server.url, on_disconnect=on_disconnect, **fast())
    async with asyncio.timeout(BOUND):
        await client.start()
        await client.wait_open()
        server.drop()
        with pytest.raises(wsclient.CallbackError, match="on_disconnect raised CancelledError") as caught:
            await client.wait_closed()
    assert caught.value.callback == "on_disconnect"
    assert isinstance(caught.value.__cause__, asyncio.CancelledError)
    assert client.stats.connect_attempts == 1


# A real cancellation of the client while a callback runs: it cancels, and nothing counts as an error.


async def test_close_while_on_message_waits_still_cancels_it(server: FlakyServer) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def on_message(message: str) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = wsclient.Client(server.url, text=True, on_message=on_message, **fast(close_timeout=0.2))
    await client.start()
    await client.wait_open()
    await client.send("hello")
    async with asyncio.timeout(BOUND):
        await entered.wait()
        await client.close()
    assert cancelled.is_set()
    assert client.state is wsclient.State.CLOSED
    assert client.stats.handler_errors == 0
    await client.wait_closed()


async def test_close_while_on_connect_waits_still_cancels_it(server: FlakyServer) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def on_connect(session: wsclient.Session) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = wsclient.Client(server.url, on_connect=on_connect, **fast(open_timeout=BOUND))
    await client.start()
    async with asyncio.timeout(BOUND):
        await entered.wait()
        await client.close()
    assert cancelled.is_set()
    assert client.state is wsclient.State.CLOSED
    await client.wait_closed()  # closed by the application: no CallbackError


async def test_close_while_on_disconnect_waits_still_cancels_it(server: FlakyServer) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    client = wsclient.Client(server.url, on_disconnect=on_disconnect, **fast(close_timeout=BOUND))
    await client.start()
    await client.wait_open()
    server.drop()
    async with asyncio.timeout(BOUND):
        await entered.wait()
        await client.close()
    assert cancelled.is_set()
    assert client.state is wsclient.State.CLOSED
    await client.wait_closed()


# Requests made from inside callbacks.


async def test_request_awaited_in_async_on_message_gets_its_reply() -> None:
    results: list[Any] = []
    box: dict[str, wsclient.Client[str]] = {}

    async def on_message(message: str) -> None:
        if json.loads(message).get("note") == 0:
            results.append(await box["client"].request(json.dumps({"id": "inner"}), key="inner", timeout=BOUND))

    async with FlakyServer(handler=replies) as server:
        client = box["client"] = wsclient.Client(
            server.url, text=True, on_message=on_message, reply_key=wsclient.json_field("id"), **fast()
        )
        async with client:
            await client.send(json.dumps({"push": 3}))
            await until(lambda: len(results) == 1, BOUND)
            assert json.loads(results[0]) == {"id": "inner", "ok": True}
            assert client.stats.replies == 1
            assert client.stats.messages_in == 3  # the three notes; the reply went to its request


async def test_request_in_on_message_is_interrupted_at_once_when_the_session_ends() -> None:
    results: list[Any] = []
    box: dict[str, wsclient.Client[str]] = {}

    async def on_message(message: str) -> None:
        if json.loads(message).get("note") == 0:
            try:
                await box["client"].request(json.dumps({"id": "drop"}), key="drop", timeout=60.0)
            except wsclient.RequestInterrupted as exc:
                results.append(exc)

    async with FlakyServer(handler=replies) as server:
        client = box["client"] = wsclient.Client(
            server.url, text=True, on_message=on_message, reply_key=wsclient.json_field("id"), **fast()
        )
        async with client:
            await client.send(json.dumps({"push": 1}))
            await until(lambda: len(results) == 1, BOUND)
            await until(lambda: client.stats.sessions == 2, BOUND)


async def test_client_request_in_on_connect_fails_naming_the_cause() -> None:
    box: dict[str, wsclient.Client[str]] = {}

    async def on_connect(session: wsclient.Session) -> None:
        await box["client"].request(json.dumps({"id": 1}), key=1, timeout=BOUND)

    async with FlakyServer(handler=replies) as server:
        client = box["client"] = wsclient.Client(
            server.url, text=True, on_connect=on_connect, reply_key=wsclient.json_field("id"), **fast()
        )
        with pytest.raises(wsclient.CallbackError, match=r"session\.request") as caught:
            async with asyncio.timeout(BOUND):
                await client.__aenter__()
        assert caught.value.callback == "on_connect"
        assert isinstance(caught.value.__cause__, RuntimeError)
        assert client.stats.connect_attempts == 1


async def test_request_on_a_client_never_started_raises_at_once(server: FlakyServer) -> None:
    client = wsclient.Client(server.url, reply_key=wsclient.json_field("id"))
    async with asyncio.timeout(10 * MS * 100):
        with pytest.raises(RuntimeError, match="not started"):
            await client.request("{}", key=1, timeout=BOUND)
    assert client.stats.messages_out == 0
    assert client.unsent() == []


# Which session a message read from recv() came from.


async def test_received_from_names_the_session_of_each_message_read_late() -> None:
    connections = itertools.count()

    async def batches(connection: ServerConnection) -> None:
        number = next(connections)
        for i in range(50):
            await connection.send(json.dumps({"connection": number, "i": i}))
        if number < 3:
            connection.transport.abort()
        await connection.wait_closed()

    sessions: list[str] = []

    async def on_connect(session: wsclient.Session) -> None:
        sessions.append(session.id)

    async with FlakyServer(handler=batches) as server:
        client = wsclient.Client(server.url, text=True, on_connect=on_connect, **fast())
        async with client:
            assert client.received_from is None
            # The application reads only once four sessions delivered: the inbox holds messages of each.
            await until(lambda: client.stats.messages_in == 200, BOUND)
            assert len(sessions) == 4
            read = 0
            async for raw in client:
                message = json.loads(raw)
                assert client.received_from == sessions[message["connection"]], message
                read += 1
                if read == 200:
                    break
            assert client.state is wsclient.State.OPEN
