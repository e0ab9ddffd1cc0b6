"""Test your own bot against real faults with wsclient's pytest plugin.

Copy this file into your project and run ``pytest test_my_bot.py`` (with
pytest-asyncio installed). The ``flaky_server``, ``fault_proxy`` and
``flaky_server_factory`` fixtures come from wsclient itself; the marks make
it work in pytest-asyncio's strict mode as well as in auto mode. Every client
here has a short ``close_timeout``: a test that ends while the network is
broken then waits half a second for the close handshake, not the default 10 s.
"""

from __future__ import annotations

import json

import pytest
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.testing import FaultProxy, FlakyServer, FlakyServerFactory

FAST = wsclient.Backoff(initial=0.01, maximum=0.1)


async def subscribe(session: wsclient.Session) -> None:
    """The bot's on_connect: subscribe on every fresh connection."""
    await session.send(json.dumps({"op": "subscribe", "channel": "trades"}))


@pytest.mark.asyncio
async def test_bot_resubscribes_after_a_drop(flaky_server: FlakyServer) -> None:
    async with wsclient.Client(
        flaky_server.url, on_connect=subscribe, backoff=FAST, open_timeout=1.0, close_timeout=0.5
    ):
        await flaky_server.wait_for_received(1)
        flaky_server.drop()  # abort the connection: the client sees 1006
        await flaky_server.wait_for_received(2)
    assert [json.loads(m)["op"] for m in flaky_server.received] == ["subscribe", "subscribe"]


@pytest.mark.asyncio
async def test_orders_sent_during_an_outage_arrive_in_order(flaky_server: FlakyServer) -> None:
    async with wsclient.Client(flaky_server.url, backoff=FAST, open_timeout=1.0, close_timeout=0.5) as client:
        await flaky_server.stop()  # the server goes down
        for n in range(3):
            await client.send(f"order-{n}")  # buffered while disconnected
        await flaky_server.start()  # back on the same port
        await flaky_server.wait_for_received(3)
    assert flaky_server.received == ["order-0", "order-1", "order-2"]


@pytest.mark.asyncio
async def test_bot_notices_a_dead_network(fault_proxy: FaultProxy, flaky_server: FlakyServer) -> None:
    heartbeat = wsclient.Heartbeat(interval=0.02, timeout=0.05)
    async with wsclient.Client(
        fault_proxy.url, heartbeat=heartbeat, backoff=FAST, open_timeout=1.0, close_timeout=0.5
    ) as client:
        fault_proxy.blackhole()  # sockets stay open, nothing gets through
        await fault_proxy.wait_for_connections(2)  # the heartbeat noticed and the bot reconnects
        fault_proxy.restore()
        await flaky_server.wait_for_connections(2)
        await client.send("back")
        assert await client.recv() == "back"
    assert client.stats.outages[0].cause == "heartbeat_timeout"


@pytest.mark.asyncio
async def test_orders_are_filled_across_a_restart(flaky_server_factory: FlakyServerFactory) -> None:
    # A server that is no echo: it fills each order, answering with the order's id.
    async def exchange(connection: ServerConnection) -> None:
        async for message in connection:
            server.record(message)
            order = json.loads(message)
            await connection.send(json.dumps({"id": order["id"], "status": "filled"}))

    server = await flaky_server_factory(handler=exchange)
    reply_key = wsclient.json_field("id")
    async with wsclient.Client(server.url, reply_key=reply_key, backoff=FAST, close_timeout=0.5) as client:
        first = await client.request(json.dumps({"id": "o1", "op": "buy"}), key="o1", timeout=2)
        await server.close_all(1012, "restart")  # the client reconnects
        second = await client.request(json.dumps({"id": "o2", "op": "sell"}), key="o2", timeout=2)
    assert [json.loads(reply)["status"] for reply in (first, second)] == ["filled", "filled"]
    assert [json.loads(m)["id"] for m in server.received] == ["o1", "o2"]
