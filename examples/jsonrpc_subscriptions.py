"""Follow JSON-RPC 2.0 subscriptions through drops: subscribe again on every session and map the new ids.

A subscription id belongs to one connection (``eth_subscribe`` gives a new
one each time), so ``on_connect`` subscribes and makes the map from id to
channel of the new session. A notification is looked up in the map of the
session that received it, which ``client.received_from`` names: one read
late may come from a session before the live one (it waited in the inbox
while the application was busy), and a server may give the same id to
another channel on the next connection. A session's map is dropped once
messages of a later session are read. Calls made with ``JsonRpc(client).call``
return their result or raise ``JsonRpcError``.

    python examples/jsonrpc_subscriptions.py                      # embedded server that drops now and then
    python examples/jsonrpc_subscriptions.py --url ws://127.0.0.1:8545 --count 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.jsonrpc import REPLY_KEY, JsonRpc, JsonRpcError
from wsclient.testing import FlakyServer

CHANNELS = ("newHeads", "ticks")


@dataclass
class Progress:
    """What the follower saw: notifications per channel, the ids of every session, the calls answered."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHANNELS, 0))
    subscriptions: list[dict[str, str]] = field(default_factory=list)
    """One map of subscription id to channel per session, in order."""
    unknown: int = 0
    """Notifications for an id no subscription of their session has (never expected)."""
    calls: int = 0
    interrupted: int = 0


async def follow(
    url: str,
    count: int,
    reply_within: float = 5.0,
    *,
    work: Callable[[str, Any], Awaitable[None]] | None = None,
    **options: Any,
) -> Progress:
    """Receive ``count`` notifications of each channel, across reconnects, calling ``add`` every ten of them.

    ``work(channel, result)`` is what the application does with each
    notification (it may be slower than the feed); ``options`` go to ``wsclient.Client``.
    """
    progress = Progress()
    sessions: dict[str, dict[str, str]] = {}
    """Session id -> that session's map of subscription id to channel, oldest first."""

    async def on_connect(session: wsclient.Session) -> None:
        rpc = JsonRpc(session, timeout=reply_within)
        ids = await asyncio.gather(*(rpc.call("subscribe", [channel]) for channel in CHANNELS))
        sessions[session.id] = dict(zip(ids, CHANNELS, strict=True))
        progress.subscriptions.append(sessions[session.id])

    client = wsclient.Client(
        url, reply_key=REPLY_KEY, on_connect=on_connect, backoff=wsclient.Backoff(initial=0.05), **options
    )

    async def add(rpc: JsonRpc, n: int) -> None:
        try:
            assert await rpc.call("add", [n, 1]) == n + 1
            progress.calls += 1
        except wsclient.RequestInterrupted:
            progress.interrupted += 1  # the server may or may not have added: it does no harm here

    # The calls run beside the loop that reads: a reader that waited for a reply while its inbox was full
    # would wait for itself (with a full inbox the client reads nothing more, replies included, until the
    # application reads; and a session whose messages wait there ends only once they are delivered).
    async with client, asyncio.TaskGroup() as calls:
        rpc = JsonRpc(client, timeout=reply_within)
        async for raw in client:
            message = json.loads(raw)
            if message.get("method") != "subscription":
                continue
            source = client.received_from
            # Messages come in session order: once one of a session is read, the maps of the sessions before go.
            while sessions and (oldest := next(iter(sessions))) != source and source in sessions:
                del sessions[oldest]
            channel = sessions.get(source or "", {}).get(message["params"]["subscription"])
            if channel is None:
                progress.unknown += 1
                continue
            if work is not None:
                await work(channel, message["params"]["result"])
            progress.counts[channel] += 1
            if (seen := sum(progress.counts.values())) % 10 == 0:
                calls.create_task(add(rpc, seen))
            if min(progress.counts.values()) >= count:
                break
    return progress


class Node:
    """The embedded server: ``subscribe``, ``unsubscribe``, ``add``; drops a connection after ``drop_every`` pushes."""

    def __init__(self, interval: float = 0.01, drop_every: int = 0) -> None:
        self.interval = interval
        self.drop_every = drop_every
        self._ids = itertools.count(0x1000)

    async def serve(self, websocket: ServerConnection) -> None:
        subscriptions: dict[str, str] = {}
        pusher = asyncio.create_task(self._push(websocket, subscriptions))
        try:
            async for raw in websocket:
                await websocket.send(json.dumps(self._answer(json.loads(raw), subscriptions)))
        finally:
            pusher.cancel()
            await asyncio.wait({pusher})

    def _answer(self, call: dict[str, Any], subscriptions: dict[str, str]) -> dict[str, Any]:
        method, params = call.get("method"), call.get("params", [])
        response: dict[str, Any] = {"jsonrpc": "2.0", "id": call.get("id")}
        if method == "subscribe" and params and params[0] in CHANNELS:
            sub = hex(next(self._ids))
            subscriptions[sub] = params[0]
            response["result"] = sub
        elif method == "unsubscribe":
            response["result"] = subscriptions.pop(params[0], None) is not None
        elif method == "add":
            response["result"] = sum(params)
        else:
            response["error"] = {"code": -32601, "message": "Method not found", "data": method}
        return response

    async def _push(self, websocket: ServerConnection, subscriptions: dict[str, str]) -> None:
        for pushed in itertools.count(1):
            await asyncio.sleep(self.interval)
            for sub, channel in list(subscriptions.items()):
                params = {"subscription": sub, "result": {"channel": channel, "n": pushed}}
                await websocket.send(json.dumps({"jsonrpc": "2.0", "method": "subscription", "params": params}))
            if self.drop_every and pushed % self.drop_every == 0:
                websocket.transport.abort()
                return


async def main(url: str | None, count: int) -> int:
    try:
        if url is not None:
            progress = await follow(url, count)
        else:
            async with FlakyServer(handler=Node(drop_every=max(count // 2, 2)).serve) as server:
                progress = await follow(server.url, count)
    except (wsclient.FatalError, wsclient.GaveUp, JsonRpcError) as exc:
        print(f"could not follow: {exc}")
        return 1
    for number, subscriptions in enumerate(progress.subscriptions, 1):
        print(f"session {number}: " + ", ".join(f"{channel}={sub}" for sub, channel in subscriptions.items()))
    counts = ", ".join(f"{channel}={n}" for channel, n in progress.counts.items())
    print(f"received {counts} over {len(progress.subscriptions)} session(s); {progress.calls} call(s) answered")
    return 0 if progress.unknown == 0 else 1


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a JSON-RPC server with subscribe/add (default: an embedded one)")
    parser.add_argument("--count", type=int, default=20, help="notifications to receive from each channel")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.url, args.count)))
