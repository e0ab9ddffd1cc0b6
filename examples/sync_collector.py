"""The collector of ``collector.py`` without asyncio: ``wsclient.sync.Client`` with plain callbacks.

``on_connect`` resubscribes from the last sequence number on every fresh
session; ``on_message`` writes each tick, and the gap records from
``client.stats.outages``, to a JSON-lines file. Both run in the client's
callback thread, one at a time; the main thread only waits, until SIGTERM or
Ctrl-C, which close with 1000.

    python examples/sync_collector.py --out ticks.jsonl               # embedded feed, dropped every second
    python examples/sync_collector.py --url wss://feed.example/ticks --out ticks.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import structlog
from collector import Collector, ResumableFeed, last_seq_in
from server_thread import ServerThread

import wsclient
import wsclient.sync
from wsclient.testing import FlakyServer


class SyncCollector(Collector):
    """The same records as ``collector.Collector``; only the hook is a plain function."""

    def on_connect(self, session: wsclient.sync.Session) -> None:  # type: ignore[override]
        session.send(json.dumps({"op": "subscribe", "resume": self.last_seq}))


def collect(url: str, out_path: Path, duration: float | None) -> SyncCollector:
    """Collect from ``url`` into ``out_path`` until ``duration``, SIGTERM/Ctrl-C, or the feed closes with 1000."""
    with out_path.open("a", encoding="utf-8", buffering=1) as out:
        collector = SyncCollector(out, last_seq_in(out_path))
        client = wsclient.sync.Client(
            url,
            on_connect=collector.on_connect,
            on_message=collector.on_message,
            backoff=wsclient.Backoff(initial=0.1, maximum=10),
            heartbeat=wsclient.Heartbeat(interval=5, timeout=5),
        )
        collector.stats = client.stats
        client.start()
        try:
            client.wait_closed(timeout=duration)
        except (KeyboardInterrupt, TimeoutError):
            pass  # asked to stop
        finally:
            client.close()  # 1000, bounded by close_timeout; waits for on_message to write what was queued
            collector.write_gaps()
        client.wait_closed()  # raises the FatalError or GaveUp that stopped it, if any
    return collector


def embedded(out_path: Path, duration: float | None, drop_every: float) -> SyncCollector:
    """Collect from an embedded feed that drops every connection every ``drop_every`` seconds."""
    # Like a feed that kept running while this collector was stopped: it goes on from the file's last tick.
    feed = ResumableFeed(interval=0.01, first_seq=last_seq_in(out_path) + 1)
    server = FlakyServer(handler=feed.handle)
    loop = ServerThread()
    loop.run(server.start())

    async def drop_now_and_then() -> None:
        while True:
            await asyncio.sleep(drop_every)
            server.drop()

    loop.spawn(feed.produce())
    loop.spawn(drop_now_and_then())
    try:
        return collect(server.url, out_path, duration)
    finally:
        loop.run(server.stop())
        loop.close()


def main(url: str | None, out_path: Path, duration: float | None, drop_every: float) -> int:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops like Ctrl-C
    try:
        collector = collect(url, out_path, duration) if url else embedded(out_path, duration, drop_every)
    except wsclient.FatalError as exc:
        print(f"collector stopped: {exc}")
        return 3
    except wsclient.GaveUp as exc:
        print(f"collector gave up: {exc}")
        return 1
    print(f"collected {collector.received} ticks up to seq {collector.last_seq} into {out_path}", flush=True)
    return 0


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the feed (default: an embedded one)")
    parser.add_argument("--out", type=Path, default=Path("ticks.jsonl"), help="JSON-lines file (appended)")
    parser.add_argument("--duration", type=float, help="stop after this many seconds (default: until SIGTERM)")
    parser.add_argument("--drop-every", type=float, default=1.0, help="embedded feed: drop connections this often")
    args = parser.parse_args()
    raise SystemExit(main(args.url, args.out, args.duration, args.drop_every))
