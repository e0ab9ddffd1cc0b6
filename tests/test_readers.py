"""Several tasks reading one client share the work: each message goes to exactly one of them."""

from __future__ import annotations

import asyncio

from helpers import fast, until

import wsclient
from wsclient.testing import FlakyServer


async def test_each_message_goes_to_exactly_one_of_two_iterating_tasks(server: FlakyServer) -> None:
    count = 300
    shares: dict[str, list[int]] = {"a": [], "b": []}
    all_in = asyncio.Event()

    async def read(client: wsclient.Client, name: str) -> None:
        async for message in client:
            assert isinstance(message, str)
            shares[name].append(int(message))
            if sum(map(len, shares.values())) == count:
                all_in.set()
            await asyncio.sleep(0)  # the application's own work between messages

    async with wsclient.Client(server.url, **fast()) as client, asyncio.TaskGroup() as tasks:
        for name in shares:
            tasks.create_task(read(client, name))
        for n in range(count):
            await client.send(str(n))
        async with asyncio.timeout(10):
            await all_in.wait()
        await client.close()  # ends both iterations
    assert sorted(shares["a"] + shares["b"]) == list(range(count))  # every message once, none twice
    for share in shares.values():
        assert share == sorted(share)  # each task sees its share in the order it arrived
    assert shares["a"]
    assert shares["b"]


async def test_waiting_readers_are_served_in_the_order_they_started_waiting() -> None:
    async with FlakyServer("silent") as server, wsclient.Client(server.url, **fast()) as client:
        waiting: list[asyncio.Task[wsclient.Data]] = []
        for _ in range(3):
            waiting.append(asyncio.create_task(client.recv()))
            await until(lambda: len(client._inbox._getters.futures or ()) == len(waiting))
        await server.send_all("first")
        await server.send_all("second")
        await server.send_all("third")
        async with asyncio.timeout(5):
            results = await asyncio.gather(*waiting)
    assert results == ["first", "second", "third"]
