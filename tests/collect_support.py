"""Real parts for the collector's tests: a redis-server process, a sequenced feed server, the streams' invariant."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.asyncio.server import Server, ServerConnection, serve


def free_port() -> int:
    """A TCP port nothing listens on right now, on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_server_path() -> str:
    """The redis-server binary; a failure on CI (which installs it), a skip elsewhere."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: .ci/run installs it (apt-get install redis-server)")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    return path


class RedisServer:
    """A redis-server process on loopback, on a port of its own, without persistence unless asked."""

    def __init__(self, directory: Path, *, persist: bool = False, port: int | None = None) -> None:
        self.directory = directory
        self.persist = persist
        self.port = port or free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, timeout: float = 10.0) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.process = await asyncio.create_subprocess_exec(
            redis_server_path(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            str(self.directory),
            "--logfile",
            str(self.directory / "redis.log"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        await client.ping()  # type: ignore[misc]
                        return
                    except (OSError, aioredis.ConnectionError, aioredis.BusyLoadingError):
                        await asyncio.sleep(0.01)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        """SIGTERM (Redis saves its append-only file on the way out), SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()


@dataclass
class _Feed:
    seq: int = 0
    history: list[str] = field(default_factory=list)
    first: int = 1


class SequencedFeeds:
    """A WebSocket server of numbered feeds: ``/NAME`` streams ``{"seq": N, ...}`` and resumes on request.

    A client subscribes with ``{"op": "subscribe", "from": LAST}`` (``LAST`` may
    be ``null``); the server replays from ``LAST + 1`` out of its bounded
    history, then follows the live feed. Without a ``from`` it starts live.
    """

    def __init__(self, names: Sequence[str], *, interval: float = 0.02, history: int = 5000) -> None:
        self.feeds = {name: _Feed() for name in names}
        self.interval = interval
        self.history = history
        self.connections: set[ServerConnection] = set()
        self.accepted = 0
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        self._tick = asyncio.Condition()
        self._handlers: set[asyncio.Task[Any]] = set()
        self.paused = False

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{name}"

    async def __aenter__(self) -> SequencedFeeds:
        self._server = await serve(self._handle, "127.0.0.1", 0, compression=None)
        self._producer = asyncio.create_task(self._produce())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._producer is not None
        assert self._server is not None
        self._producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._producer
        # The handlers wait for the next tick, which will not come: end them.
        for task in self._handlers:
            task.cancel()
        self._server.close()
        await self._server.wait_closed()

    def produce(self, count: int = 1) -> None:
        """Add ``count`` messages to every feed now."""
        for name, feed in self.feeds.items():
            for _ in range(count):
                feed.seq += 1
                feed.history.append(json.dumps({"seq": feed.seq, "feed": name, "pad": "x" * 16}))
            excess = len(feed.history) - self.history
            if excess > 0:
                del feed.history[:excess]
                feed.first += excess

    def skip(self, name: str, count: int) -> None:
        """Lose ``count`` numbers of ``name`` (a hole upstream)."""
        feed = self.feeds[name]
        feed.seq += count
        feed.history.clear()
        feed.first = feed.seq + 1

    async def _produce(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.paused:
                continue
            self.produce()
            async with self._tick:
                self._tick.notify_all()

    def drop(self) -> int:
        """Abort every connection (no close frame): an upstream drop."""
        dropped = 0
        for connection in list(self.connections):
            connection.transport.abort()
            dropped += 1
        return dropped

    async def close_all(self, code: int | None) -> None:
        """Close every connection with ``code``; ``None`` sends a close frame without a code (1005)."""
        for connection in list(self.connections):
            # Bounded: the closing handshake with a peer that already left must not hold the test.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    if code is None:
                        async with connection.send_context():
                            connection.protocol.send_close()
                    else:
                        await connection.close(code)

    async def _handle(self, connection: ServerConnection) -> None:
        name = connection.request.path.strip("/") if connection.request else ""
        feed = self.feeds.get(name)
        if feed is None:
            await connection.close(4404, "no such feed")
            return
        self.accepted += 1
        self.connections.add(connection)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request = json.loads(await connection.recv())
            last = request.get("from")
            position = (last + 1) if isinstance(last, int) else feed.seq + 1
            while True:
                position = max(position, feed.first)
                if position <= feed.seq:
                    start = position - feed.first
                    for message in feed.history[start : start + 500]:
                        await connection.send(message)
                        position += 1
                    continue
                async with self._tick:
                    await self._tick.wait()
        except Exception:
            pass
        finally:
            self.connections.discard(connection)
            self._handlers.discard(task)


SUBSCRIBE = '{"op": "subscribe", "from": ${last_seq}}'


def config_text(feeds: SequencedFeeds, *, lease_ttl: float, prefix: str = "t", extra: str = "") -> str:
    """A collector's TOML config for every feed of ``feeds``, with a sequence key."""
    lines = [f'prefix = "{prefix}"', f"lease_ttl = {lease_ttl}", extra]
    for name in feeds.feeds:
        lines += [
            "[[feed]]",
            f'name = "{name}"',
            f'url = "{feeds.url(name)}"',
            f"subscribe = ['{SUBSCRIBE}']",
            'sequence_key = "seq"',
            "[feed.client]",
            "open_timeout = 2.0",
            "close_timeout = 0.5",
        ]
    return "\n".join(lines) + "\n"


def decode(fields: dict[bytes, bytes]) -> dict[str, str]:
    """A stream entry's fields as text (the payload too: the tests' payloads are JSON)."""
    return {key.decode(): value.decode() for key, value in fields.items()}


async def read_stream(client: aioredis.Redis, key: str) -> list[tuple[str, dict[str, str]]]:
    """Every entry of a stream, in order."""
    entries = await client.xrange(key)
    return [(entry_id.decode(), decode(fields)) for entry_id, fields in entries]


@dataclass
class Verdict:
    """What the invariant check found in one feed's stream."""

    messages: int = 0
    gaps: int = 0
    holes: int = 0
    last_seq: int | None = None
    errors: list[str] = field(default_factory=list)
    writers: set[tuple[str, int]] = field(default_factory=set)


def check_stream(entries: Iterable[tuple[str, dict[str, str]]]) -> Verdict:
    """The exactly-once invariant, from the stream alone.

    Sequence numbers strictly increase (so none appears twice); every jump
    has a gap record right before the message after it, whose ``before_seq`` and
    ``after_seq`` are the numbers on each side; fencing tokens never go back.
    """
    verdict = Verdict()
    last: int | None = None
    token = 0
    previous: dict[str, str] | None = None
    for entry_id, fields in entries:
        if fields["type"] == "gap":
            verdict.gaps += 1
        elif fields["type"] == "msg":
            verdict.messages += 1
            seq = int(fields["seq"])
            entry_token = int(fields["token"])
            verdict.writers.add((fields["replica"], entry_token))
            if entry_token < token:
                verdict.errors.append(f"{entry_id}: token {entry_token} after {token}")
            token = max(token, entry_token)
            if last is not None and seq <= last:
                verdict.errors.append(f"{entry_id}: seq {seq} after {last}")
            if last is not None and seq > last + 1:
                verdict.holes += 1
                covered = (
                    previous is not None
                    and previous["type"] == "gap"
                    and previous["before_seq"] == str(last)
                    and previous["after_seq"] == str(seq)
                )
                if not covered:
                    verdict.errors.append(f"{entry_id}: hole {last} -> {seq} without a gap record")
            last = seq
        else:
            verdict.errors.append(f"{entry_id}: unknown type {fields['type']!r}")
        previous = fields
    verdict.last_seq = last
    return verdict


async def wait_until(check: Callable[[], Any], timeout: float, what: str) -> None:
    """Wait until the coroutine function ``check`` returns true; fail naming ``what`` after ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():  # noqa: ASYNC110 - Redis state has no event; the poll is bounded
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout} s waiting for {what}")
