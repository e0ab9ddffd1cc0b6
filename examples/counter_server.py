"""The synchronised counter from websockets' documentation, as a server.

Every connected user sees the counter's value and the number of users; a
user sends ``{"action": "plus"}`` or ``{"action": "minus"}``. Events::

    {"type": "users", "count": 2}
    {"type": "value", "value": 7}

The value lives in memory: a restart loses it (``counter_bot.py`` restores it).

    python examples/counter_server.py --port 6789
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
from typing import Self

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve


class CounterServer:
    """The counter: one value, the set of connected users, a broadcast on every change."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.value = 0
        self.users: set[ServerConnection] = set()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start serving with a fresh counter (a restart forgets the value)."""
        self.value = 0
        self._server = await serve(self.handler, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Close every connection (1001, going away) and stop listening."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _users_event(self) -> str:
        return json.dumps({"type": "users", "count": len(self.users)})

    def _value_event(self) -> str:
        return json.dumps({"type": "value", "value": self.value})

    async def handler(self, websocket: ServerConnection) -> None:
        try:
            self.users.add(websocket)
            broadcast(self.users, self._users_event())
            await websocket.send(self._value_event())
            async for message in websocket:
                event = json.loads(message)
                if event.get("action") == "minus":
                    self.value -= 1
                    broadcast(self.users, self._value_event())
                elif event.get("action") == "plus":
                    self.value += 1
                    broadcast(self.users, self._value_event())
                else:
                    logging.error("unsupported event: %s", event)
        finally:
            self.users.discard(websocket)
            broadcast(self.users, self._users_event())


async def main(host: str, port: int) -> None:
    async with CounterServer(host, port) as server:
        print(f"counter server on {server.url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6789, help="0 picks a free port (default 6789)")
    args = parser.parse_args()
    asyncio.run(main(args.host, args.port))
