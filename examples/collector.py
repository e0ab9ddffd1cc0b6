"""A long-running data collector: resubscribes, resumes, records gaps, stops cleanly on SIGTERM.

The feed sends ``{"seq": n, ...}``; the collector subscribes with
``{"op": "subscribe", "resume": last_seq}`` in ``on_connect`` on every fresh
session, so a feed that keeps a history replays what was missed. Each tick
goes to a JSON-lines file; each outage adds a gap record (start, end, cause,
attempts) and any sequence number that never came adds a ``missing`` record,
so the file says exactly where data is missing. A restart of the collector
resumes from the last sequence number in the file.

    python examples/collector.py --out ticks.jsonl               # embedded feed, dropped every second
    python examples/collector.py --url wss://feed.example/ticks --out ticks.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import structlog
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

import wsclient
from wsclient.testing import FlakyServer


class Collector:
    """Writes ticks, gaps and missing ranges to a JSON-lines file, in the order they happened."""

    def __init__(self, out: TextIO, last_seq: int) -> None:
        self.out = out
        self.stats: wsclient.Stats | None = None
        """The client's stats, for its outage history; set once the client exists."""
        self.last_seq = last_seq
        self.received = 0
        self._gaps_written = 0

    async def on_connect(self, session: wsclient.Session) -> None:
        await session.send(json.dumps({"op": "subscribe", "resume": self.last_seq}))

    def on_message(self, message: wsclient.Data) -> None:
        self.write_gaps()
        tick = json.loads(message)
        seq = int(tick["seq"])
        if seq <= self.last_seq:
            return  # a duplicate from the replay
        if seq > self.last_seq + 1:
            self._write({"type": "missing", "first": self.last_seq + 1, "last": seq - 1})
        self._write({"type": "tick", "time": time.time(), "seq": seq, "data": tick})
        self.last_seq = seq
        self.received += 1

    def write_gaps(self) -> None:
        """Record every outage that ended since the last call (``stats.outages``)."""
        if self.stats is None or self.stats.outages_total == self._gaps_written:
            return
        pending = self.stats.outages_total - self._gaps_written
        for outage in list(self.stats.outages)[-pending:]:
            if outage.end is None:
                return
            self._write(
                {
                    "type": "gap",
                    "start": outage.start,
                    "end": outage.end,
                    "cause": outage.cause,
                    "attempts": outage.attempts,
                }
            )
            self._gaps_written += 1

    def _write(self, record: dict[str, Any]) -> None:
        self.out.write(json.dumps(record) + "\n")


def last_seq_in(path: Path) -> int:
    """The last sequence number already collected in ``path`` (0 if none), to resume after a restart."""
    if not path.exists():
        return 0
    last = 0
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            if record.get("type") == "tick":
                last = record["seq"]
    return last


async def collect(url: str, out_path: Path, stop: asyncio.Event) -> Collector:
    """Collect from ``url`` into ``out_path`` until ``stop`` is set or the feed closes with 1000."""
    with out_path.open("a", encoding="utf-8", buffering=1) as out:
        collector = Collector(out, last_seq_in(out_path))
        client = wsclient.Client(
            url,
            on_connect=collector.on_connect,
            on_message=collector.on_message,
            backoff=wsclient.Backoff(initial=0.1, maximum=10),
            heartbeat=wsclient.Heartbeat(interval=5, timeout=5),
        )
        collector.stats = client.stats
        await client.start()
        ended = asyncio.create_task(client.wait_closed())
        stopped = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            await client.close()  # 1000, bounded by close_timeout
            await asyncio.wait({ended, stopped})
            collector.write_gaps()
        ended.result()
    return collector


class ResumableFeed:
    """The embedded feed: ticks every ``interval`` seconds, the last 10,000 kept for resume."""

    def __init__(self, interval: float, first_seq: int = 1) -> None:
        self.interval = interval
        self.history: deque[int] = deque(maxlen=10_000)
        self.next_seq = first_seq
        self._tick = asyncio.Event()

    async def produce(self) -> None:
        while True:
            self.history.append(self.next_seq)
            self.next_seq += 1
            tick, self._tick = self._tick, asyncio.Event()
            tick.set()
            await asyncio.sleep(self.interval)

    async def handle(self, connection: ServerConnection) -> None:
        """Replay the ticks after the subscription's ``resume``, then stream, until the connection closes."""
        resume = json.loads(await connection.recv()).get("resume", 0)
        sender = asyncio.create_task(self._send_from(connection, resume + 1))
        try:
            await connection.wait_closed()
        finally:
            sender.cancel()
            await asyncio.wait({sender})

    async def _send_from(self, connection: ServerConnection, seq: int) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                seq = max(seq, self.next_seq - len(self.history))
                if seq < self.next_seq:
                    await connection.send(json.dumps({"seq": seq, "price": 100 + seq % 7}))
                    seq += 1
                else:
                    await self._tick.wait()


async def embedded(out_path: Path, stop: asyncio.Event, drop_every: float) -> Collector:
    """Collect from an embedded feed that drops every connection every ``drop_every`` seconds."""
    # Like a feed that kept running while this collector was stopped: it goes on from the file's last tick.
    feed = ResumableFeed(interval=0.01, first_seq=last_seq_in(out_path) + 1)
    async with FlakyServer(handler=feed.handle) as server:
        producer = asyncio.create_task(feed.produce())

        async def drop_now_and_then() -> None:
            while True:
                await asyncio.sleep(drop_every)
                server.drop()

        dropper = asyncio.create_task(drop_now_and_then())
        try:
            return await collect(server.url, out_path, stop)
        finally:
            for task in (producer, dropper):
                task.cancel()
            await asyncio.wait({producer, dropper})


async def main(url: str | None, out_path: Path, duration: float | None, drop_every: float) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    try:
        collector = await (collect(url, out_path, stop) if url else embedded(out_path, stop, drop_every))
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
    raise SystemExit(asyncio.run(main(args.url, args.out, args.duration, args.drop_every)))
