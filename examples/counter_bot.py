"""A bot for the synchronised counter that keeps the counter's value across server restarts.

The counter server keeps its value in memory, so a restart resets it to 0.
The bot remembers the value; in ``on_connect``, which runs on every fresh
session, it reads the server's state and clicks ``plus``/``minus`` until the
counter is back where it was.

    python examples/counter_bot.py                  # embedded server, restarted once
    python examples/counter_bot.py --url ws://127.0.0.1:6789 --clicks 3   # until Ctrl-C
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable

import structlog
from counter_server import CounterServer

import wsclient

log = structlog.get_logger("counter_bot")


class CounterBot:
    """Follows the counter's value and puts it back after the server lost it."""

    def __init__(self) -> None:
        self.value: int | None = None
        """The counter's value as the bot knows it: ``None`` until the first session."""
        self.users = 0
        self.sessions = 0
        self.restoring = False
        self._changed = asyncio.Event()

    async def on_connect(self, session: wsclient.Session) -> None:
        """Read the server's state (users, then value) and restore the value if the server lost it."""
        while True:
            event = json.loads(await session.recv())
            if event["type"] == "value":
                break
            self.users = event["count"]
        server_value = event["value"]
        self.sessions += 1
        if self.value is None or server_value == self.value:
            self.value = server_value
        else:
            log.info("restoring", server_value=server_value, value=self.value, session_id=session.id)
            self.restoring = True
            action = "plus" if self.value > server_value else "minus"
            for _ in range(abs(self.value - server_value)):
                await session.send(json.dumps({"action": action}))
        self._notify()

    def on_event(self, event: dict[str, int | str]) -> None:
        if event["type"] == "users":
            self.users = int(event["count"])
        elif self.restoring:
            # Our own corrective clicks coming back: the value is restored once they all did.
            self.restoring = event["value"] != self.value
        else:
            self.value = int(event["value"])
        self._notify()

    async def follow(self, client: wsclient.Client) -> None:
        async for message in client:
            event = json.loads(message)
            self.on_event(event)
            print(f"{event}  (users {self.users}, value {self.value})", flush=True)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()


async def click(client: wsclient.Client, action: str, times: int) -> None:
    for _ in range(times):
        await client.send(json.dumps({"action": action}))  # buffered if the server is down right now


async def embedded(clicks: int) -> int:
    """Click, restart the server (it forgets the value), check the bot put the value back."""
    async with CounterServer() as server:
        bot = CounterBot()
        backoff = wsclient.Backoff(initial=0.05, maximum=0.5)
        async with wsclient.Client(server.url, on_connect=bot.on_connect, backoff=backoff) as client:
            follower = asyncio.create_task(bot.follow(client))
            await click(client, "plus", clicks)
            async with asyncio.timeout(10):
                await bot.wait_for(lambda: bot.value == clicks)
            print(f"counter at {server.value}; restarting the server, which forgets it", flush=True)
            await server.stop()
            await server.start()
            async with asyncio.timeout(10):
                await bot.wait_for(lambda: bot.sessions == 2 and not bot.restoring)
            restored = server.value
        await follower
    ok = restored == clicks
    print(f"after the restart the server's counter is {restored}: {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


async def remote(url: str, clicks: int) -> int:
    """Click, then follow the counter until Ctrl-C/SIGTERM, restoring it after every restart."""
    bot = CounterBot()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with wsclient.Client(url, on_connect=bot.on_connect) as client:
        follower = asyncio.create_task(bot.follow(client))
        await click(client, "plus", clicks)
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({follower, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
    await follower
    return 0


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running counter server (default: an embedded one)")
    parser.add_argument("--clicks", type=int, default=5, help="plus clicks to make first (default 5)")
    args = parser.parse_args()
    main = remote(args.url, args.clicks) if args.url else embedded(args.clicks)
    raise SystemExit(asyncio.run(main))
