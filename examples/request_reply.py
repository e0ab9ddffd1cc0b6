"""The hello exchange from websockets' documentation: send a name, await the greeting, with a timeout.

The server answers a name with ``Hello <name>!``. ``client.recv()`` waits
across reconnects, so the wait is bounded with ``asyncio.timeout``; a send
while disconnected is buffered and goes out on the next session.

    python examples/request_reply.py --name Ada               # embedded server
    python examples/request_reply.py --url ws://127.0.0.1:8765 --name Ada
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import structlog
from websockets.asyncio.server import ServerConnection

import wsclient
from wsclient.testing import FlakyServer


async def hello(websocket: ServerConnection) -> None:
    """The server side: one greeting per name."""
    async for name in websocket:
        text = name if isinstance(name, str) else name.decode()
        await websocket.send(f"Hello {text}!")


async def ask(url: str, name: str, reply_within: float) -> str:
    """Send ``name`` and return the greeting; ``TimeoutError`` if none came within ``reply_within`` seconds."""
    async with wsclient.Client(url, max_attempts=3, backoff=wsclient.Backoff(initial=0.1)) as client:
        await client.send(name)
        async with asyncio.timeout(reply_within):
            greeting = await client.recv()
    assert isinstance(greeting, str)
    return greeting


async def main(url: str | None, name: str, reply_within: float) -> int:
    try:
        if url is not None:
            greeting = await ask(url, name, reply_within)
        else:
            async with FlakyServer(handler=hello) as server:
                greeting = await ask(server.url, name, reply_within)
    except TimeoutError:
        print(f"no greeting within {reply_within} s")
        return 1
    except (wsclient.FatalError, wsclient.GaveUp) as exc:
        print(f"could not ask: {exc}")
        return 1
    print(greeting)
    return 0


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a hello server (default: an embedded one)")
    parser.add_argument("--name", default="world")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the greeting")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.url, args.name, args.timeout)))
