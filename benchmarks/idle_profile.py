"""What one idle connection holds, by the line that allocated it (tracemalloc, per connection).

Opens ``N`` idle connections of one contender to an echo server in another
process, waits until every connection went through a heartbeat or two, and
prints the memory allocated since, grouped by the allocating line (or by
traceback with ``--traceback``), divided by ``N``. tracemalloc counts Python's
allocations, not RSS: the figures explain the ``idle`` scenario's RSS rows,
they do not replace them.

Run from the project root::

    python -m benchmarks.idle_profile wsclient --clients 200
    python -m benchmarks.idle_profile websockets picows "wsclient on picows"

Contenders: ``websockets``, ``picows``, ``wsclient``, ``wsclient on picows``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import linecache
import logging
import sys
import tracemalloc
from typing import Any, Literal

import structlog

from benchmarks.run import server_process

CONTENDERS = ("websockets", "picows", "wsclient", "wsclient on picows")
INTERVAL = 5.0
"""The heartbeat of the idle scenario: a ping every 5 s, 5 s for its pong."""


async def open_connections(kind: str, url: str, n: int) -> tuple[list[Any], Any]:
    """Open ``n`` connections of ``kind``; return them and a coroutine function closing them."""
    if kind == "websockets":
        from websockets.asyncio.client import connect

        websockets = [await connect(url, ping_interval=INTERVAL, ping_timeout=INTERVAL) for _ in range(n)]

        async def close_websockets() -> None:
            for connection in websockets:
                await connection.close()

        return websockets, close_websockets
    if kind == "picows":
        from picows import WSListener, ws_connect

        transports = [
            (
                await ws_connect(
                    WSListener,
                    url,
                    enable_auto_ping=True,
                    auto_ping_idle_timeout=INTERVAL,
                    auto_ping_reply_timeout=INTERVAL,
                )
            )[0]
            for _ in range(n)
        ]

        async def close_picows() -> None:
            from picows import WSCloseCode

            for transport in transports:
                transport.send_close(WSCloseCode.OK)
                transport.disconnect()
                await transport.wait_disconnected()

        return transports, close_picows
    import wsclient

    transport: Literal["websockets", "picows"] = "picows" if kind == "wsclient on picows" else "websockets"
    clients = [
        wsclient.Client(url, heartbeat=wsclient.Heartbeat(interval=INTERVAL, timeout=INTERVAL), transport=transport)
        for _ in range(n)
    ]
    for client in clients:
        await client.__aenter__()

    async def close_clients() -> None:
        for client in clients:
            await client.close()

    return clients, close_clients


def show(snapshot: tracemalloc.Snapshot, before: tracemalloc.Snapshot, n: int, key: str, top: int) -> None:
    stats = snapshot.compare_to(before, key)
    total = sum(stat.size_diff for stat in stats)
    print(f"total: {total / n:,.0f} B per connection ({total / 1024 / n:.2f} KiB), {n} connections")
    for stat in stats[:top]:
        if abs(stat.size_diff) / n < 8:
            break
        frames = list(stat.traceback)[::-1]  # tracemalloc lists the oldest frame first
        frame = frames[0]
        line = linecache.getline(frame.filename, frame.lineno).strip()
        where = "/".join(frame.filename.split("/")[-2:])
        print(f"{stat.size_diff / n:8.0f} B {stat.count_diff / n:6.2f} blocks  {where}:{frame.lineno}  {line[:70]}")
        for older in frames[1:6]:
            print(f"{'':26}<- {'/'.join(older.filename.split('/')[-2:])}:{older.lineno}")


async def profile(kind: str, n: int, key: str, top: int, depth: int) -> None:
    async with server_process("echo") as (port, _):
        url = f"ws://127.0.0.1:{port}/"
        if kind == "wsclient on picows":
            importlib.import_module("wsclient.transports.picows")  # the module is not a connection's memory
        # One connection first, closed: what is made once per process (caches, module state) is not counted.
        _, close = await open_connections(kind, url, 1)
        await close()
        gc.collect()
        tracemalloc.start(depth)
        before = tracemalloc.take_snapshot()
        _, close = await open_connections(kind, url, n)
        # Two heartbeats and a half: every connection pinged and answered, as in the idle scenario.
        await asyncio.sleep(INTERVAL * 2.5)
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        filters = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen*>")]
        show(snapshot.filter_traces(filters), before.filter_traces(filters), n, key, top)
        await close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("contenders", nargs="+", choices=CONTENDERS)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--top", type=int, default=40, help="lines shown")
    parser.add_argument("--traceback", action="store_true", help="group by the allocation's traceback")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    key = "traceback" if args.traceback else "lineno"
    for kind in args.contenders:
        print(f"\n## {kind}")
        asyncio.run(profile(kind, args.clients, key, args.top, 8 if args.traceback else 1))
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
