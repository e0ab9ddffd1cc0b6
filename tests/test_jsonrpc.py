"""JSON-RPC 2.0 on top of the client, and the subscriptions example, against a JSON-RPC server written here."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import MS, fast
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.jsonrpc import REPLY_KEY, JsonRpc, JsonRpcError, _result
from wsclient.testing import FlakyServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from jsonrpc_subscriptions import CHANNELS, Node, follow

BOUND = 10.0


class Server:
    """A JSON-RPC 2.0 server: ``subscribe``/``unsubscribe`` (a new id per call), ``add``, ``echo``, ``slow``, ``bad``.

    Every connection pushes ``subscription`` notifications for its own
    subscriptions; with ``drop_after`` it aborts each connection after that
    many pushes. It records every call and notification it received.
    """

    def __init__(self, drop_after: int = 0) -> None:
        self.drop_after = drop_after
        self.received: list[dict[str, Any]] = []
        self.issued: list[set[str]] = []
        self._ids = itertools.count(1)

    async def handle(self, connection: ServerConnection) -> None:
        mine: dict[str, str] = {}
        self.issued.append(set())
        issued = self.issued[-1]
        async with asyncio.TaskGroup() as tg:
            pushing = tg.create_task(self._push(connection, mine))
            try:
                async for raw in connection:
                    call = json.loads(raw)
                    self.received.append(call)
                    if "id" not in call:
                        continue
                    await connection.send(json.dumps(self._respond(call, mine, issued)))
            finally:
                pushing.cancel()

    def _respond(self, call: dict[str, Any], mine: dict[str, str], issued: set[str]) -> dict[str, Any]:
        method, params = call["method"], call.get("params")
        if method == "subscribe":
            sub = f"sub-{next(self._ids)}"
            mine[sub] = params[0]
            issued.add(sub)
            return {"jsonrpc": "2.0", "id": call["id"], "result": sub}
        if method == "unsubscribe":
            return {"jsonrpc": "2.0", "id": call["id"], "result": mine.pop(params[0], None) is not None}
        if method == "add":
            return {"jsonrpc": "2.0", "id": call["id"], "result": sum(params)}
        if method == "echo":
            return {"jsonrpc": "2.0", "id": call["id"], "result": params}
        if method == "bad":
            return {"jsonrpc": "2.0", "id": call["id"]}
        return {
            "jsonrpc": "2.0",
            "id": call["id"],
            "error": {"code": -32601, "message": "Method not found", "data": {"method": method}},
        }

    async def _push(self, connection: ServerConnection, mine: dict[str, str]) -> None:
        for pushed in itertools.count(1):
            await asyncio.sleep(5 * MS)
            for sub, channel in list(mine.items()):
                notification = {"subscription": sub, "result": {"channel": channel}}
                await connection.send(json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": notification}))
            if self.drop_after and pushed >= self.drop_after and mine:
                connection.transport.abort()
                return


@pytest.fixture
def rpc_server_state() -> Server:
    return Server()


@pytest.fixture
async def node(rpc_server_state: Server) -> AsyncIterator[FlakyServer]:
    async with FlakyServer(handler=rpc_server_state.handle) as server:
        yield server


async def test_call_returns_the_result_and_notify_gets_no_answer(node: FlakyServer, rpc_server_state: Server) -> None:
    async with asyncio.timeout(BOUND), wsclient.Client(node.url, reply_key=REPLY_KEY, **fast()) as client:
        rpc = JsonRpc(client)
        assert await rpc.call("add", [2, 3]) == 5
        assert await rpc.call("echo", {"a": [1]}) == {"a": [1]}
        await rpc.notify("log", ["hello"])
        assert await rpc.call("echo") is None
    assert rpc_server_state.received[2] == {"jsonrpc": "2.0", "method": "log", "params": ["hello"]}
    assert "params" not in rpc_server_state.received[3]
    assert client.stats.replies == 3


async def test_an_error_response_raises_with_the_error_object(node: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), wsclient.Client(node.url, reply_key=REPLY_KEY, **fast()) as client:
        rpc = JsonRpc(client)
        with pytest.raises(JsonRpcError) as caught:
            await rpc.call("nope", [1])
        assert (caught.value.code, caught.value.message) == (-32601, "Method not found")
        assert caught.value.data == {"method": "nope"}
        assert caught.value.error["code"] == -32601
        assert isinstance(caught.value, wsclient.WsClientError)
        with pytest.raises(JsonRpcError, match="neither result nor error") as malformed:
            await rpc.call("bad")
        assert malformed.value.code == -32603
        # The client goes on after errors.
        assert await rpc.call("add", [1, 1]) == 2


async def test_a_call_times_out_with_request_timeout(node: FlakyServer) -> None:
    await node.stop()
    client = wsclient.Client(node.url, reply_key=REPLY_KEY, **fast())
    async with asyncio.timeout(BOUND):
        await client.start()
        with pytest.raises(wsclient.RequestTimeout) as caught:
            await JsonRpc(client, timeout=20 * MS).call("add", [1, 2])
        assert caught.value.sent is False
        with pytest.raises(wsclient.RequestTimeout):
            await JsonRpc(client).call("add", [1, 2], timeout=20 * MS)
        await client.close()
    assert client.stats.expired == 2


def test_bad_arguments_fail_before_anything_is_sent() -> None:
    with pytest.raises(TypeError, match="target must be"):
        JsonRpc("ws://127.0.0.1:9")  # type: ignore[arg-type]
    client = wsclient.Client("ws://127.0.0.1:9", reply_key=REPLY_KEY)
    with pytest.raises(TypeError, match="params must be"):
        asyncio.run(JsonRpc(client).call("m", "not a list"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="method must be"):
        asyncio.run(JsonRpc(client).notify(1))  # type: ignore[arg-type]


async def test_the_example_resubscribes_on_every_session_and_maps_the_new_ids() -> None:
    server_state = Server(drop_after=6)
    async with FlakyServer(handler=server_state.handle) as server, asyncio.timeout(BOUND):
        progress = await follow(server.url, count=20)
    assert all(progress.counts[channel] >= 20 for channel in CHANNELS)
    assert progress.unknown == 0
    assert len(progress.subscriptions) >= 3
    # Each session's map holds exactly the ids that connection issued, and no id is ever reused.
    for subscriptions, issued in zip(progress.subscriptions, server_state.issued, strict=False):
        assert set(subscriptions) == issued
        assert sorted(subscriptions.values()) == sorted(CHANNELS)
    all_ids = [sub for subscriptions in progress.subscriptions for sub in subscriptions]
    assert len(all_ids) == len(set(all_ids))
    assert progress.calls + progress.interrupted >= 1


async def impostors(connection: ServerConnection) -> None:
    """Answer each call first with ids equal to its own in Python but of another JSON type, then with its own."""
    async for raw in connection:
        key = json.loads(raw)["id"]
        for impostor in (True, float(key), str(key)):
            await connection.send(json.dumps({"jsonrpc": "2.0", "id": impostor, "result": "impostor"}))
        await connection.send(json.dumps({"jsonrpc": "2.0", "id": key, "result": "genuine"}))


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
async def test_ids_match_by_type_as_well_as_value(transport: str) -> None:
    async with FlakyServer(handler=impostors) as server, asyncio.timeout(BOUND):
        client = wsclient.Client(server.url, text=True, reply_key=REPLY_KEY, **fast())
        async with client:
            reply = await client.request(json.dumps({"jsonrpc": "2.0", "method": "m", "id": 1}), key=1)
            assert json.loads(reply)["result"] == "genuine"
            assert [json.loads(await client.recv())["id"] for _ in range(3)] == [True, 1.0, "1"]
            # Through the helper too, whatever id it picks.
            assert await JsonRpc(client).call("m") == "genuine"


async def test_keys_equal_in_python_but_of_other_types_may_be_pending_together(node: FlakyServer) -> None:
    async with asyncio.timeout(BOUND), wsclient.Client(node.url, reply_key=REPLY_KEY, **fast()) as client:
        calls = [json.dumps({"jsonrpc": "2.0", "method": "echo", "params": [key], "id": key}) for key in (1, True, 1.0)]
        replies = await asyncio.gather(*(client.request(call, key=json.loads(call)["id"]) for call in calls))
        assert [json.loads(reply)["result"] for reply in replies] == [[1], [True], [1.0]]
        with pytest.raises(ValueError, match="already pending"):
            await asyncio.gather(client.request(calls[0], key=1), client.request(calls[0], key=1))


@pytest.mark.parametrize("code", [True, False, 1.0, -32600.0, "-32600", None])
def test_an_error_object_whose_code_is_no_integer_is_malformed(code: object) -> None:
    response = json.dumps({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": "m"}})
    with pytest.raises(JsonRpcError, match="malformed error object") as caught:
        _result(response)
    assert caught.value.code == -32603


def test_json_field_takes_a_message_nested_too_deeply_for_no_reply() -> None:
    deep = '{"id": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert REPLY_KEY(deep) is None
    assert REPLY_KEY(deep.encode()) is None


async def test_a_deeply_nested_message_is_no_reply_and_blames_no_callback() -> None:
    deep = '{"jsonrpc": "2.0", "method": "note", "id": 7, "params": ' + "[" * 100_000 + "]" * 100_000 + "}"

    async def deep_first(connection: ServerConnection) -> None:
        async for raw in connection:
            call = json.loads(raw)
            await connection.send(deep)
            await connection.send(json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "after"}))

    with capture_logs() as logs:
        async with FlakyServer(handler=deep_first) as server, asyncio.timeout(BOUND):
            client = wsclient.Client(server.url, text=True, reply_key=REPLY_KEY, **fast())
            async with client:
                assert await JsonRpc(client).call("m") == "after"
                assert await client.recv() == deep
    assert not [entry for entry in logs if entry["event"] == "reply_key_failed"]


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
async def test_the_example_maps_every_notification_when_the_application_is_slower_than_the_feed(
    transport: str,
) -> None:
    # A notification read late may come from a session before the current one: it must map to its own session's id.
    worked: list[str] = []

    async def slow(channel: str, result: Any) -> None:
        assert result["channel"] == channel
        worked.append(channel)
        await asyncio.sleep(3 * MS)

    async with FlakyServer(handler=Node(interval=2 * MS, drop_every=40).serve) as server, asyncio.timeout(60):
        progress = await follow(server.url, count=150, work=slow, transport=transport)
    assert progress.unknown == 0
    assert len(progress.subscriptions) >= 3
    assert all(progress.counts[channel] >= 150 for channel in CHANNELS)
    assert len(worked) == sum(progress.counts.values())
