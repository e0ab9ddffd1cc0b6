"""A server that wants an application ping: ``{"op": "ping"}`` every few seconds, or it hangs up.

Many exchanges ignore protocol pings and close a connection that did not send
``{"op": "ping"}`` lately. ``Heartbeat(message=...)`` sends that instead of a
protocol ping, and any inbound data within ``timeout`` counts as the answer;
``idle_timeout`` ends a session whose feed went quiet. The embedded server
closes a connection without a ping for ``2 * interval`` seconds (4000) and,
once, goes silent without closing: the client notices and reconnects.

    python examples/app_heartbeat.py                   # embedded server
    python examples/app_heartbeat.py --url wss://exchange.example/ws --interval 15
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

import wsclient
from wsclient.testing import FlakyServer


class PickyServer:
    """Answers ``{"op": "ping"}`` with a pong, streams a quote now and then, closes idle clients with 4000."""

    def __init__(self, ping_deadline: float, quote_every: float) -> None:
        self.ping_deadline = ping_deadline
        self.quote_every = quote_every
        self.pings = 0
        self.go_silent_once = False

    async def handle(self, connection: ServerConnection) -> None:
        silent = self.go_silent_once
        self.go_silent_once = False
        quotes = asyncio.create_task(self._quotes(connection, silent))
        try:
            while True:
                async with asyncio.timeout(self.ping_deadline):
                    message = json.loads(await connection.recv())
                if message.get("op") == "ping":
                    self.pings += 1
                    if not silent:
                        await connection.send(json.dumps({"op": "pong"}))
        except TimeoutError:
            await connection.close(4000, "no ping")
        except ConnectionClosed:
            pass
        finally:
            quotes.cancel()
            await asyncio.wait({quotes})

    async def _quotes(self, connection: ServerConnection, silent: bool) -> None:
        price = 100
        with contextlib.suppress(ConnectionClosed):
            while not silent:
                await asyncio.sleep(self.quote_every)
                price += 1
                await connection.send(json.dumps({"op": "quote", "price": price}))


async def watch(url: str, interval: float, duration: float, on_session: asyncio.Event | None = None) -> wsclient.Client:
    """Receive for ``duration`` seconds with an application heartbeat; return the client for its stats."""
    client = wsclient.Client(
        url,
        heartbeat=wsclient.Heartbeat(interval=interval, timeout=interval, message=json.dumps({"op": "ping"})),
        idle_timeout=3 * interval,
        backoff=wsclient.Backoff(initial=0.05, maximum=1.0),
    )
    async with client:
        try:
            async with asyncio.timeout(duration):
                async for message in client:
                    event = json.loads(message)
                    if event.get("op") != "pong":
                        print(f"{event}  (session {client.session.id if client.session else '-'})", flush=True)
        except TimeoutError:
            pass
    return client


async def main(url: str | None, interval: float, duration: float) -> int:
    if url is not None:
        await watch(url, interval, duration)
        return 0
    server = PickyServer(ping_deadline=2 * interval, quote_every=interval / 2)
    async with FlakyServer(handler=server.handle) as flaky:

        async def go_silent_later() -> None:
            await asyncio.sleep(duration / 2)
            server.go_silent_once = True
            flaky.drop()  # the next connection is the silent one

        silencer = asyncio.create_task(go_silent_later())
        client = await watch(flaky.url, interval, duration)
        await asyncio.wait({silencer})
    causes = [outage.cause for outage in client.stats.outages]
    print(f"sessions {client.stats.sessions}, pings received by the server {server.pings}, outages {causes}")
    ok = server.pings > 0 and "heartbeat_timeout" in causes and client.stats.last_close_code != 4000
    print("OK: pings kept the sessions alive, the silent one was noticed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a server that wants application pings (default: an embedded one)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between pings (default 1)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds to run (default 8)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.url, args.interval, args.duration)))
