"""A client that keeps receiving while its server is dropped and restarted under it.

Runs against an embedded local server by default (no network needed):

    python examples/quickstart.py

The server streams ``{"seq": n}``; the script drops every connection a few
times, takes the server down and brings it back, and shows that the client
resubscribes each time, keeps one stream of messages and loses none of the
messages it sent while disconnected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

import structlog

import wsclient
from wsclient.testing import FlakyServer


async def main(drops: int, restarts: int) -> int:
    async with FlakyServer("stream", stream_interval=0.005) as server:

        async def subscribe(session: wsclient.Session) -> None:
            await session.send(json.dumps({"op": "subscribe", "session": session.id}))

        client = wsclient.Client(
            server.url,
            on_connect=subscribe,
            backoff=wsclient.Backoff(initial=0.05, maximum=0.5),
            heartbeat=wsclient.Heartbeat(interval=1.0, timeout=1.0),
        )
        received = 0
        async with client:
            for fault in range(drops + restarts):
                async for _message in client:
                    received += 1
                    if received % 50 == 0:
                        break
                if fault < drops:
                    server.drop()
                else:
                    await server.stop()
                    # Sent while the server is down: buffered and flushed on the next session.
                    await client.send(json.dumps({"op": "note", "fault": fault}))
                    await server.start()
                print(f"fault {fault + 1} injected after {received} messages")
            last = json.loads(await client.recv())
        notes = [m for m in server.received if isinstance(m, str) and '"note"' in m]
        subscribes = [m for m in server.received if isinstance(m, str) and '"subscribe"' in m]
        stats = client.stats
        print(
            f"received {received + 1} messages up to seq {last['seq']}; sessions {stats.sessions}, "
            f"reconnects {stats.reconnects}, subscribes {len(subscribes)}, buffered notes delivered "
            f"{len(notes)}/{restarts}, outages {stats.outages_total}"
        )
        ok = len(notes) == restarts and len(subscribes) == stats.sessions == drops + restarts + 1
        print("OK" if ok else "FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drops", type=int, default=3, help="abrupt connection drops (default 3)")
    parser.add_argument("--restarts", type=int, default=2, help="server restarts (default 2)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.drops, args.restarts)))
