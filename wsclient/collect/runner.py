"""``Collector``: one replica of a highly available collector: takes its fair share of feeds, writes them fenced.

Every ``tick`` the replica refreshes its registration (which expires after
half a lease TTL), learns the live replicas and the feeds' owners, and moves
towards its fair share ``ceil(feeds / replicas)``: it takes free feeds (the
ones it ranks first by rendezvous hashing, so replicas rarely race for the
same one) and gives one back per tick while it holds more. Each held feed
runs in its own task: a ``wsclient.Client`` whose ``on_message`` appends to a
buffer, a writer that drains it into Redis in batches, and a renewal every
``lease_ttl / 3``. The task ends, closing the connection, when the lease is
lost (renewal refused, a write fenced) or may have expired by this replica's
clock; whatever it still held is dropped and counted, never written late.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import RedisError

import wsclient

from ._log import Log
from .config import CollectConfig, Feed
from .lease import Keys, Lease, Membership, acquire
from .stream import StreamWriter

__all__ = ["Collector", "CollectorStats", "default_replica_id"]

FATAL_QUARANTINE = 60.0
"""Seconds a replica leaves alone a feed that stopped with a fatal error (401, a fatal close code)."""

_RECONNECT = object()
"""A marker in a feed's buffer: a new upstream session starts here."""

_UNAVAILABLE = (RedisError, OSError, TimeoutError)

_LOST = frozenset({"lease_lost", "lease_expired", "fenced"})
"""Why a run ends without giving its lease back: it is no longer this replica's to give."""


def _raise_if_cancelled(baseline: int = 0) -> None:
    """Raise the ``CancelledError`` that an await returned through instead of raising.

    On Python 3.11, ``asyncio.wait_for`` (which redis-py uses to send every
    command when ``socket_timeout`` is set) returns the result when the command
    completes in the same loop step as a cancellation: the task is still marked
    as cancelling, but nothing raises. A loop that awaits Redis would then go
    on for ever (a feed run renewing a lease it was told to give back, a
    replica that never stops); each such loop checks here after its Redis calls.

    Args:
        baseline: The task's ``cancelling()`` count when the loop began.

    Raises:
        asyncio.CancelledError: The current task was cancelled since the loop began.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() > baseline:
        raise asyncio.CancelledError


def default_replica_id() -> str:
    """``HOST:PID:RANDOM``: unique per process, readable in the streams."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"


@dataclass
class CollectorStats:
    """Counters of one replica since it started.

    Attributes:
        received: Messages received from the feeds.
        written: Messages appended to the streams.
        duplicates: Messages Redis dropped as already written (sequence number not above the last).
        holes: Gap records for jumps in sequence numbers.
        gaps: Gap records for a start, a failover or a reconnect.
        fenced: Messages Redis refused because the lease had passed to a newer token.
        dropped: Messages never sent to Redis: held when the lease ended, or over ``max_pending``.
        acquired: Leases taken.
        released: Leases given back (rebalancing, shutdown).
        lost: Leases lost (renewal refused, a write fenced, expired by this replica's clock).
        feeds: The feeds held now.
    """

    received: int = 0
    written: int = 0
    duplicates: int = 0
    holes: int = 0
    gaps: int = 0
    fenced: int = 0
    dropped: int = 0
    acquired: int = 0
    released: int = 0
    lost: int = 0
    feeds: list[str] = field(default_factory=list)


class _Stop(Exception):
    """Ends a feed's run; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _FeedRun:
    """One held feed: its connection, its buffer, its writer and its lease, owned by one task."""

    def __init__(self, collector: Collector, feed: Feed, lease: Lease) -> None:
        self.collector = collector
        self.feed = feed
        self.lease = lease
        self.log = collector.log.bind(feed=feed.name, token=lease.token)
        self.writer = StreamWriter(collector.redis, lease, feed.sequence_key, collector.config.maxlen)
        self.pending: collections.deque[tuple[bytes, float] | object] = collections.deque()
        self.ready = asyncio.Event()
        self.sessions = 0
        self.releasing = False
        self.task: asyncio.Task[None] | None = None

    def stop(self) -> None:
        """Give the feed back (rebalancing): the run releases its lease on the way out."""
        self.releasing = True
        if self.task is not None:
            self.task.cancel()

    async def abandon(self) -> None:
        """Give the lease back for a run whose task was cancelled before it started (so ``run`` never ran)."""
        await self._release()
        self.collector.stats.released += 1
        if self.collector._runs.get(self.feed.name) is self:
            del self.collector._runs[self.feed.name]
        self.collector.stats.feeds = sorted(self.collector._runs)
        self.log.info("feed_stopped", reason="cancelled", dropped=0, lease_given_back=True)

    def _on_message(self, message: bytes) -> None:
        pending = self.pending
        pending.append((message, time.time()))
        self.collector.stats.received += 1
        if len(pending) > self.collector.config.max_pending:
            pending.popleft()
            self.collector.stats.dropped += 1
        self.ready.set()

    async def _on_connect(self, session: wsclient.Session) -> None:
        self.sessions += 1
        if self.sessions > 1:
            self.pending.append(_RECONNECT)
            self.ready.set()
        last: int | None = None
        task = asyncio.current_task()  # the client's: it may carry cancellations of its own
        baseline = 0 if task is None else task.cancelling()
        try:
            async with asyncio.timeout(self.collector.config.renew_interval):
                value = await self.collector.redis.hget(self.lease.keys.state, "seq")  # type: ignore[misc]
            last = int(value) if value is not None else None
        except _UNAVAILABLE as exc:
            # The upstream resumes from where it is: duplicates are dropped by Redis, a hole is recorded.
            self.log.warning("last_seq_unavailable", error=type(exc).__name__)
        _raise_if_cancelled(baseline)
        text = "null" if last is None else str(last)
        for message in self.feed.subscribe:
            await session.send(message.replace("${last_seq}", text))
        if self.feed.on_connect is not None:
            await self.feed.on_connect(session, last)

    async def run(self) -> None:
        """Hold the feed until the lease ends or the run is cancelled; never raises but ``CancelledError``."""
        stats = self.collector.stats
        reason = "cancelled"
        try:
            try:
                async with asyncio.timeout_at(self.lease.valid_until) as deadline:
                    try:
                        async with asyncio.TaskGroup() as group:
                            group.create_task(self._renew(deadline))
                            group.create_task(self._write())
                            group.create_task(self._connect())
                    except* _Stop as stopped:
                        reason = next(exc.reason for exc in stopped.exceptions if isinstance(exc, _Stop))
            except TimeoutError:
                reason = "lease_expired"
            except Exception as exc:  # a bug of ours: end this feed, not the replica
                reason = "error"
                self.log.error("feed_failed", exc_info=exc)
        finally:
            dropped = sum(1 for item in self.pending if item is not _RECONNECT)
            stats.dropped += dropped
            self.pending.clear()
            if reason in _LOST:
                stats.lost += 1
            else:
                await self._release()
                stats.released += 1
            self.log.info("feed_stopped", reason=reason, dropped=dropped, lease_given_back=reason not in _LOST)
        if reason == "fatal":
            self.collector.quarantine(self.feed.name)

    async def _release(self) -> None:
        valid = self.lease.valid()
        with contextlib.suppress(*_UNAVAILABLE):
            async with asyncio.timeout(self.collector.config.renew_interval):
                if valid:
                    await self.lease.release(self.collector.redis)

    async def _renew(self, deadline: asyncio.Timeout) -> None:
        config = self.collector.config
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(config.renew_interval)
            try:
                # A renewal that takes longer than the lease has left is no use.
                async with asyncio.timeout_at(self.lease.valid_until):
                    kept = await self.lease.renew(self.collector.redis, config.lease_ttl, config.valid_for)
            except _UNAVAILABLE as exc:
                self.log.warning("renew_failed", error=type(exc).__name__, left=self.lease.valid_until - loop.time())
                _raise_if_cancelled()
                continue
            _raise_if_cancelled()
            if not kept:
                raise _Stop("lease_lost")
            deadline.reschedule(self.lease.valid_until)

    async def _connect(self) -> None:
        client = wsclient.Client(
            self.feed.url, on_message=self._on_message, **self.feed.client_options(self._on_connect)
        )
        await client.start()
        try:
            await client.wait_closed()
        except wsclient.FatalError as exc:
            self.log.error("feed_fatal", error=str(exc))
            raise _Stop("fatal") from None
        finally:
            # Bounded: a lease that ends must drop the connection now, whatever the peer does.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await client.close()
        raise _Stop("closed")

    def _take(self) -> list[tuple[bytes, float]]:
        batch: list[tuple[bytes, float]] = []
        pending = self.pending
        limit = self.collector.config.max_batch
        while pending and len(batch) < limit:
            item = pending[0]
            if item is _RECONNECT:
                if batch:
                    break
                pending.popleft()
                self.writer.mark_gap("reconnect")
                continue
            batch.append(pending.popleft())  # type: ignore[arg-type]
        return batch

    async def _write(self) -> None:
        stats = self.collector.stats
        while True:
            _raise_if_cancelled()
            await self.ready.wait()
            self.ready.clear()
            while batch := self._take():
                await self._write_batch(batch)
                _raise_if_cancelled()
                # Let the connection deliver more before the next call: batches grow under load.
                await asyncio.sleep(0)
            stats.feeds = sorted(self.collector.feeds)

    async def _write_batch(self, batch: list[tuple[bytes, float]]) -> None:
        stats = self.collector.stats
        delay = 0.01
        while True:
            if not self.lease.valid():
                stats.dropped += len(batch)
                raise _Stop("lease_expired")
            try:
                async with asyncio.timeout_at(self.lease.valid_until):
                    result = await self.writer.write(batch)
            except _UNAVAILABLE as exc:
                self.log.warning("write_failed", error=type(exc).__name__, messages=len(batch))
                _raise_if_cancelled()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.collector.config.renew_interval / 2)
                continue
            if result.fenced:
                stats.fenced += len(batch)
                self.log.warning("write_fenced", messages=len(batch))
                raise _Stop("fenced")
            stats.written += result.written
            stats.duplicates += result.duplicates
            stats.holes += result.holes
            stats.gaps += result.gap_written
            return


class Collector:
    """One replica: holds its fair share of the config's feeds and writes them into Redis Streams.

    Every replica of a collector runs with the same config and Redis; each
    needs a unique ``replica`` id. ``run()`` works until cancelled, then gives
    its leases back (so others take over at once) and deregisters.

    Args:
        config: The feeds and settings.
        redis: A ``redis.asyncio.Redis`` client (``decode_responses=False``).
        replica: This replica's id (default: ``HOST:PID:RANDOM``).

    Raises:
        ValueError: ``replica`` is empty or contains ``|``.
    """

    def __init__(self, config: CollectConfig, redis: aioredis.Redis, *, replica: str | None = None) -> None:
        replica = default_replica_id() if replica is None else replica
        if not isinstance(replica, str) or not replica or "|" in replica or len(replica) > 200:
            raise ValueError(f"replica must be a non-empty string without '|', got {replica!r}")
        self.config = config
        self.redis = redis
        self.replica = replica
        self.stats = CollectorStats()
        self.log = Log(replica=replica)
        self._runs: dict[str, _FeedRun] = {}
        self._quarantine: dict[str, float] = {}
        self._membership = Membership(redis, config.prefix, replica, config.lease_ttl / 2)
        self._keys = {feed.name: Keys.of(config.prefix, feed.name) for feed in config.feeds}
        self._rank = {feed.name: _rank(feed.name, replica) for feed in config.feeds}

    @property
    def feeds(self) -> list[str]:
        """The feeds this replica holds now."""
        return list(self._runs)

    def quarantine(self, feed: str) -> None:
        """Leave ``feed`` alone for :data:`FATAL_QUARANTINE` seconds."""
        self._quarantine[feed] = time.monotonic() + FATAL_QUARANTINE

    async def run(self) -> None:
        """Collect until cancelled; then release every lease and leave.

        Raises:
            asyncio.CancelledError: When cancelled, after cleaning up.
        """
        self.log.info("collector_started", feeds=len(self.config.feeds), lease_ttl=self.config.lease_ttl)
        task = asyncio.current_task()
        baseline = 0 if task is None else task.cancelling()
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    try:
                        await self._tick(group)
                    except Exception as exc:  # a bug of ours must not end the replica's other feeds
                        self.log.error("tick_error", exc_info=exc)
                    _raise_if_cancelled(baseline)
                    await asyncio.sleep(self.config.tick_interval)
        finally:
            # The task group has cancelled and awaited every feed's run (each released its lease), but a run
            # cancelled before its first step never ran: it is still listed and its lease is still held.
            for run in list(self._runs.values()):
                await run.abandon()
            with contextlib.suppress(*_UNAVAILABLE):
                async with asyncio.timeout(self.config.renew_interval):
                    await self._membership.leave()
            self.log.info("collector_stopped", **{k: v for k, v in vars(self.stats).items() if k != "feeds"})

    async def _tick(self, group: asyncio.TaskGroup) -> None:
        config = self.config
        names = [feed.name for feed in config.feeds]
        try:
            async with asyncio.timeout(config.renew_interval):
                replicas = await self._membership.beat()
                async with self.redis.pipeline(transaction=False) as pipe:
                    for name in names:
                        pipe.get(self._keys[name].lease)
                    owners = await pipe.execute()
        except _UNAVAILABLE as exc:
            self.log.debug("tick_failed", error=type(exc).__name__)
            return
        share = config.fair_share(len(set(replicas) | {self.replica}))
        active = [name for name, run in self._runs.items() if not run.releasing]
        held = len(active)
        if held > share:
            # Give back the feed this replica ranks last: the one another replica most likely ranks first.
            name = min(active, key=self._rank.__getitem__)
            self.log.info("feed_released", feed=name, share=share, held=held)
            self._runs[name].stop()
            return
        now = time.monotonic()
        free = [
            name
            for name, owner in zip(names, owners, strict=True)
            if owner is None and name not in self._runs and self._quarantine.get(name, 0.0) <= now
        ]
        free.sort(key=self._rank.__getitem__, reverse=True)
        for name in free[: share - held]:
            await self._acquire(group, name)

    async def _acquire(self, group: asyncio.TaskGroup, name: str) -> None:
        config = self.config
        try:
            async with asyncio.timeout(config.renew_interval):
                lease = await acquire(
                    self.redis, self._keys[name], name, self.replica, config.lease_ttl, config.valid_for
                )
        except _UNAVAILABLE as exc:
            self.log.debug("acquire_failed", feed=name, error=type(exc).__name__)
            return
        if lease is None:
            return
        feed = next(feed for feed in config.feeds if feed.name == name)
        run = _FeedRun(self, feed, lease)
        self._runs[name] = run
        self.stats.acquired += 1
        self.stats.feeds = sorted(self._runs)
        self.log.info("feed_acquired", feed=name, token=lease.token, before=lease.before_writer)
        run.task = group.create_task(self._hold(run))

    async def _hold(self, run: _FeedRun) -> None:
        try:
            await run.run()
        finally:
            if self._runs.get(run.feed.name) is run:
                del self._runs[run.feed.name]
            self.stats.feeds = sorted(self._runs)


def _rank(feed: str, replica: str) -> int:
    """Rendezvous hashing: each replica ranks the feeds differently, so they seldom race for the same one."""
    return int.from_bytes(hashlib.blake2b(f"{feed}\0{replica}".encode(), digest_size=8).digest(), "big")


def feed_names(feeds: Iterable[Feed]) -> list[str]:
    """The names of ``feeds``."""
    return [feed.name for feed in feeds]
