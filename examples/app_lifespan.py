"""A web app whose WebSocket upstream may be down: it starts, and serves /health, anyway.

The lifespan calls ``client.start()``, which returns at once, rather than
``async with client``, which would wait for the first session and keep the
app from serving anything while the upstream is down. ``/health`` reports the
upstream's state and since when it has been down; shutdown calls
``client.close()``. Starlette and uvicorn are in wsclient's ``test`` extra.

    python examples/app_lifespan.py                  # embedded upstream, up 3 s after the app
    python examples/app_lifespan.py --url ws://127.0.0.1:8765 --port 8000
    curl http://127.0.0.1:8000/health
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import wsclient
from wsclient.testing import FlakyServer


class Feed:
    """The upstream connection and what the app made of it, from startup to shutdown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: wsclient.Client | None = None
        self.messages = 0
        self.last: str | None = None

    def on_message(self, message: wsclient.Data) -> None:
        self.messages += 1
        self.last = message if isinstance(message, str) else message.hex()

    async def start(self) -> None:
        """Start connecting and return at once: the app serves while the client connects."""
        self.client = wsclient.Client(
            self.url, on_message=self.on_message, backoff=wsclient.Backoff(initial=0.1, maximum=5.0)
        )
        await self.client.start()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def health(self) -> dict[str, object]:
        """The upstream's state, since when it has been down (``None`` while open), and what came in."""
        client = self.client
        if client is None:
            return {"upstream": "not started"}
        down_since = client.stats.down_since  # the first connect counts as down too
        return {
            "upstream": client.state.value,
            "down_since": down_since,
            "down_for": None if down_since is None else round(time.time() - down_since, 3),
            "reconnects": client.stats.reconnects,
            "messages": self.messages,
            "last": self.last,
        }


def create_app(url: str) -> Starlette:
    """The Starlette app: ``/health`` answers whatever the upstream does."""
    feed = Feed(url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await feed.start()
        try:
            yield
        finally:
            await feed.close()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse(feed.health())

    return Starlette(routes=[Route("/health", health)], lifespan=lifespan)


async def upstream_later(server: FlakyServer, delay: float) -> None:
    """The embedded upstream: down at first, then up after ``delay`` seconds."""
    await asyncio.sleep(delay)
    await server.start()


async def main(url: str | None, host: str, port: int) -> None:
    upstream: FlakyServer | None = None
    if url is None:
        upstream = FlakyServer("stream", stream_interval=0.5)
        await upstream.start()
        url = upstream.url
        await upstream.stop()  # keep its port, come up later
    server = uvicorn.Server(uvicorn.Config(create_app(url), host=host, port=port, log_level="info"))
    async with asyncio.TaskGroup() as tasks:
        later = tasks.create_task(upstream_later(upstream, 3.0)) if upstream is not None else None
        await server.serve()  # until Ctrl-C or SIGTERM
        if later is not None:
            later.cancel()
    if upstream is not None:
        await upstream.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)  # wsclient's events on stderr, beside uvicorn's
    logging.getLogger("websockets").setLevel(logging.WARNING)  # the embedded upstream's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the upstream WebSocket (default: an embedded one, up after 3 s)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: 8000)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.host, args.port))
