"""One live connection: opening it, its tasks, and the record of why it ended.

A session owns one ``asyncio.TaskGroup``: the heartbeat, the idle watchdog,
the sender and the consumer live and die with it, so no task of a previous
connection survives a reconnect. This is also where errors of websockets are
translated into a :class:`SessionEnd`, once.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Awaitable, Callable, Hashable, Mapping
from functools import partial
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State as ProtocolState
from websockets.typing import Subprotocol

from .buffers import Deliver, Envelope, Inbox, Outbox
from .config import ClientConfig, Data, check_timeout
from .errors import RequestInterrupted, RequestTimeout
from .events import Cause, ClosedBy, SessionEnd
from .heartbeat import HeartbeatTimer, IdleTimer, Watch
from .replies import Request, Requests
from .stats import Stats

__all__ = ["Session", "count_write", "end_from_close", "open_connection", "to_payload", "wire_max_size"]

ABNORMAL_CLOSURE = 1006
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
_session_numbers = itertools.count(1)


class TrackedConnection(ClientConnection):
    """A websockets connection that also notes when bytes arrive and when writes drain.

    It also enforces ``close_timeout`` after the server's close frame: websockets
    sets that deadline but only a later ``send()`` or ``close()`` acts on it, so a
    server that closes with 1000 and keeps TCP open would leave ``recv()`` waiting forever.
    """

    last_rx: float = 0.0
    last_drain: float = 0.0
    paused_at: float = 0.0
    _close_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        super().data_received(data)
        if self.close_deadline is not None and self._close_timer is None:
            self._close_timer = self.loop.call_at(self.close_deadline, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        self.paused_at = self.loop.time()
        super().pause_writing()

    def resume_writing(self) -> None:
        self.last_drain = self.loop.time()
        super().resume_writing()


def wire_max_size(max_size: int | None, compression: str | None) -> int | None:
    """The frame size limit given to websockets, which checks it on compressed frames too.

    Deflate makes incompressible data a little larger (5 bytes per stored
    block, at worst 4% with the smallest memory level), so a message under
    ``max_size`` could fail as 1009 on the wire; the session checks the
    decompressed message against ``max_size`` itself.
    """
    if max_size is None or compression is None:
        return max_size
    return max_size + max_size // 16 + 1024


async def open_connection(
    config: ClientConfig, url: str, headers: Mapping[str, str] | None, ssl: Any
) -> TrackedConnection:
    """Open the TCP connection and run the opening handshake within ``open_timeout``.

    websockets' own keepalive is off: the session's heartbeat is the one
    source of truth about liveness.
    """
    kwargs: dict[str, Any] = {}
    if ssl is not None:
        kwargs["ssl"] = ssl
    connection = await connect(
        url,
        additional_headers=dict(headers) if headers else None,
        subprotocols=[Subprotocol(p) for p in config.subprotocols] if config.subprotocols is not None else None,
        compression=config.compression,
        open_timeout=config.open_timeout,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=config.close_timeout,
        max_size=wire_max_size(config.max_size, config.compression),
        max_queue=config.max_queue,
        create_connection=TrackedConnection,
        **kwargs,
    )
    assert isinstance(connection, TrackedConnection)
    connection.last_rx = connection.last_drain = connection.loop.time()
    return connection


def to_payload(message: object) -> tuple[bytes | bytearray | memoryview, bool]:
    """The bytes websockets writes for ``message`` and whether they form a text frame.

    A ``str`` is encoded here, once: one that is not valid Unicode (a lone
    surrogate) raises ``UnicodeEncodeError`` before anything is written or buffered.
    """
    if isinstance(message, str):
        return message.encode(), True
    if isinstance(message, bytes | bytearray | memoryview):
        return message, False
    raise TypeError(f"message must be str or bytes, got {type(message).__name__}")


def too_big(message: Data, limit: int) -> bool:
    """Whether ``message`` is over ``limit`` bytes (a ``str`` is encoded only when its length cannot tell)."""
    if isinstance(message, str):
        return len(message) > limit or (4 * len(message) > limit and len(message.encode()) > limit)
    return len(message) > limit


def count_write(stats: Stats, written: bool) -> None:
    """Account for one message handed to a connection: written, or interrupted on the way."""
    if written:
        stats.messages_out += 1
    else:
        stats.sends_interrupted += 1


def end_from_close(exc: ConnectionClosed, cause: Cause | None, duration: float) -> SessionEnd:
    """Turn websockets' account of a closed connection into a :class:`SessionEnd`.

    When this side failed the connection (a message over ``max_size`` gives
    1009), websockets reports 1006 as ``code`` but keeps the real code in
    ``exc.sent``: the code that matters is the first close frame, either way.
    """
    rcvd, sent = exc.rcvd, exc.sent
    if rcvd is not None and (sent is None or exc.rcvd_then_sent):
        code, reason, closed_by = rcvd.code, rcvd.reason, ClosedBy.SERVER
    elif sent is not None:
        code, reason, closed_by = sent.code, sent.reason, ClosedBy.CLIENT
    else:
        code, reason, closed_by = ABNORMAL_CLOSURE, "", ClosedBy.NOBODY
    if cause is None:
        cause = Cause.CONNECTION_LOST if closed_by is ClosedBy.NOBODY else Cause.CLOSED
    return SessionEnd(code, reason, closed_by, cause, duration)


class Session:
    """One live connection, as ``on_connect`` sees it.

    ``send()`` and ``recv()`` talk to this connection directly: use them in
    ``on_connect`` to authenticate and subscribe before the application sees
    the session's messages and before buffered sends go out.
    """

    def __init__(
        self,
        connection: TrackedConnection,
        config: ClientConfig,
        stats: Stats,
        log: Any,
        requests: Requests | None = None,
    ) -> None:
        self.number = next(_session_numbers)
        self.id = f"s{self.number}"
        self._connection = connection
        self.connection: ClientConnection = connection
        """websockets' connection, for what wsclient does not wrap (``latency``, ``local_address``)."""
        self.protocol = connection.protocol
        """websockets' sans-I/O protocol: its ``state`` is the cheapest test of an open connection."""
        # With text=True, binary frames are decoded as UTF-8 too: the application gets str only.
        self._recv: Callable[[], Awaitable[Data]] = partial(connection.recv, True) if config.text else connection.recv
        self._config = config
        self._stats = stats
        self._log = log
        self._cause: Cause | None = None
        self.started = connection.loop.time()
        """Loop time at which the connection opened."""
        self.ready = False
        """True once ``on_connect`` ran and the outbox was flushed: sends may go straight out."""
        self.flushing = False
        """True once ``on_connect`` ran and the sender started writing the outbox."""
        self.hook_error: Exception | None = None
        """What ``on_connect`` raised, if it failed; the supervisor decides what follows."""
        self._requests = requests
        self.bound: set[Request] = set()
        """Requests this session wrote whose reply has not come: its end fails them."""
        self._over = False
        self._tg: asyncio.TaskGroup | None = None
        self._hook_reader: asyncio.Task[None] | None = None
        self._held: Inbox[Data] | None = None
        self._timers: list[HeartbeatTimer | IdleTimer] = []

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.connection.state.name}>"

    # What the application may use (in on_connect, or through client.session).

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""
        return self.connection.subprotocol

    @property
    def response_headers(self) -> Headers:
        """The headers of the server's handshake response, looked up case-insensitively."""
        response = self.connection.response
        return Headers() if response is None else response.headers

    @property
    def is_open(self) -> bool:
        """Whether the connection is open: neither closing nor closed."""
        return self.connection.state is ProtocolState.OPEN

    async def send(self, message: Data) -> None:
        """Send on this connection now (no buffering); raises ``ConnectionClosed`` if it is gone.

        A message is written at once when the session :attr:`is_open`; if the
        connection then breaks, or the call is cancelled while the write
        drains, it counts in ``stats.sends_interrupted``. A ``str`` that is not
        valid Unicode raises ``UnicodeEncodeError`` before anything is written.
        """
        payload, text = to_payload(message)
        if not self.is_open:
            await self.connection.send(payload, text=text)  # raises ConnectionClosed: nothing is written
            return
        written = False
        try:
            await self.connection.send(payload, text=text)
            # Aborted while the send waited to drain: websockets returns without raising.
            written = self.is_open
        finally:
            count_write(self._stats, written)

    async def recv(self) -> Data:
        """Receive the next message of this connection (only before the consumer starts)."""
        if self._held is not None:
            # A request in on_connect started a reader: messages that are no reply wait for us there.
            return await self._held.get()
        return await self._recv()

    async def request(self, message: Data, *, key: Hashable, timeout: float | None = 10.0) -> Data:  # noqa: ASYNC109 - the public contract
        """Send ``message`` on this connection now and return the reply that ``reply_key`` matches to ``key``.

        The contract of :meth:`wsclient.Client.request` on one session, made for
        ``on_connect`` (authenticate and wait for the ack, subscribe and learn
        the new subscription id) before buffered sends go out: messages that
        are no reply stay for ``recv()`` in ``on_connect``, then for the stream.
        Raises ``RequestTimeout`` after ``timeout`` seconds and ``RequestInterrupted``
        at once if this session ends (also when it had already ended).
        """
        requests = self._requests
        if requests is None:
            raise RuntimeError("request() needs a reply_key: Client(..., reply_key=wsclient.json_field('id'))")
        check_timeout("timeout", timeout)
        payload, text = to_payload(message)
        request = requests.add(key)
        try:
            async with asyncio.timeout(timeout) as deadline:
                if not self.bind(request):
                    raise RequestInterrupted(key, self.id, self.end_now())
                self._read_during_hook()
                written = False
                try:
                    await self.connection.send(payload, text=text)
                    written = self.is_open
                except ConnectionClosed:
                    pass
                finally:
                    count_write(self._stats, written)
                result: Data = await request.future
                return result
        except TimeoutError:
            if deadline.expired():
                raise RequestTimeout(key, timeout or 0.0, request.sent) from None
            raise
        finally:
            requests.forget(request, None)

    def bind(self, request: Request) -> bool:
        """Make this session the one whose reply resolves ``request``, just before writing it; False once it ended."""
        if self._over or self._requests is None:
            return False
        request.sent = True
        request.session = self
        self.bound.add(request)
        return True

    def _interrupt_requests(self) -> None:
        """This session ended: fail every request it carried whose reply has not come."""
        self._over = True
        if self.bound and self._requests is not None:
            bound, self.bound = self.bound, set()
            self._requests.interrupt(bound, self.id, self.end_now())

    def _read_during_hook(self) -> None:
        """While ``on_connect`` runs the consumer does not: read replies for its requests, hold the rest in order."""
        if self.flushing or self._hook_reader is not None or self._tg is None:
            return
        self._held = Inbox(sys.maxsize)  # bounded by what arrives within open_timeout
        self._hook_reader = self._tg.create_task(self._read_held(self._held), name=f"wsclient-hook-reader-{self.id}")

    async def _read_held(self, held: Inbox[Data]) -> None:
        recv, requests = self._recv, self._requests
        assert requests is not None
        limit = self._config.max_size
        compressed = limit is not None and bool(self.connection.protocol.extensions)
        try:
            while True:
                message = await recv()
                if compressed and too_big(message, limit):  # type: ignore[arg-type]
                    await self.connection.close(MESSAGE_TOO_BIG, f"message over max_size ({limit} bytes)")
                    continue
                if requests.pending and requests.resolve(message, self):
                    continue
                held.offer(message)
        except UnicodeDecodeError:
            await self.connection.close(INVALID_DATA, "binary message is not UTF-8 text")
            held.close(self.connection.protocol.close_exc)
        except ConnectionClosed as exc:
            self._interrupt_requests()
            held.close(exc)

    # What the heartbeat needs (the Link protocol).

    @property
    def last_rx(self) -> float:
        return self._connection.last_rx

    @property
    def last_drain(self) -> float:
        return self._connection.last_drain

    def reading_paused(self) -> bool:
        transport = self.connection.transport
        return not transport.is_closing() and not transport.is_reading()

    def write_backlog(self) -> int:
        return self.connection.transport.get_write_buffer_size()

    def write_stalled(self, since: float, backlog: int) -> bool:
        connection = self._connection
        return (
            connection.paused
            and connection.paused_at <= since
            and connection.last_drain < since
            and 0 < backlog <= connection.transport.get_write_buffer_size()
        )

    async def send_heartbeat(self, message: str | bytes | None) -> Awaitable[float] | None:
        if message is None:
            return await self.connection.ping()
        await self.connection.send(message)
        return None

    # Lifecycle, driven by the supervisor.

    def abort(self, cause: Cause) -> None:
        """Drop the transport at once, without a close handshake (the peer may be dead)."""
        if self._cause is None:
            self._cause = cause
        self.connection.transport.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with a handshake, bounded by ``close_timeout`` whatever the peer does."""
        if self._cause is None:
            self._cause = Cause.USER_CLOSE
        try:
            async with asyncio.timeout(self._config.close_timeout):
                await self.connection.close(code, reason)
        except TimeoutError:
            self.connection.transport.abort()
        await self.connection.wait_closed()

    async def run(
        self,
        on_connect: Callable[[Session], Awaitable[None]] | None,
        on_ready: Callable[[Session], None],
        deliver: Deliver,
        outbox: Outbox[Data],
    ) -> SessionEnd:
        """Run the session to its end and say why it ended.

        ``on_connect`` runs with the heartbeat already watching; if it raises,
        the connection is dropped and the error is kept in ``hook_error``.
        Whatever ends the run (an end, an error of a task, a cancellation),
        the transport is aborted on the way out if it is still open.
        """
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                watchers: list[asyncio.Task[None]] = []
                # Timers, not sleeping tasks: an idle session holds a timer handle for each.
                timers: list[HeartbeatTimer | IdleTimer] = []
                self._timers = timers
                if (heartbeat := self._config.heartbeat) is not None:
                    timers.append(HeartbeatTimer(heartbeat, self, self._spawn_watch, self._log))
                if (idle_timeout := self._config.idle_timeout) is not None:
                    timers.append(IdleTimer(idle_timeout, self, self._verdict))
                for timer in timers:
                    timer.start()
                try:
                    end = await self._main(tg, on_connect, on_ready, deliver, outbox, watchers)
                finally:
                    for timer in timers:
                        timer.stop()
                for task in watchers:
                    task.cancel()
        finally:
            self.ready = False
            self._tg = None
            if not self.connection.transport.is_closing():
                self.connection.transport.abort()
            self._interrupt_requests()
        return end

    async def _main(
        self,
        tg: asyncio.TaskGroup,
        on_connect: Callable[[Session], Awaitable[None]] | None,
        on_ready: Callable[[Session], None],
        deliver: Deliver,
        outbox: Outbox[Data],
        watchers: list[asyncio.Task[None]],
    ) -> SessionEnd:
        if on_connect is not None:
            try:
                await self._run_on_connect(on_connect)
            except Exception as exc:
                self.hook_error = exc
                await self.close(1000, "on_connect failed")
                return await self._ended()
            finally:
                if (reader := self._hook_reader) is not None:
                    # Cancelling websockets' recv() loses no message: the consumer reads on from here.
                    reader.cancel()
                    await asyncio.wait({reader})
        on_ready(self)
        self.flushing = True
        sender = tg.create_task(self._flush(outbox), name=f"wsclient-sender-{self.id}")
        watchers.append(sender)
        return await self._consume(deliver)

    async def _run_on_connect(self, on_connect: Callable[[Session], Awaitable[None]]) -> None:
        """Run the hook, bounded by ``open_timeout`` so a server that never answers cannot stall the client."""
        timeout = self._config.open_timeout
        bound = asyncio.timeout(timeout)
        try:
            async with bound:
                await on_connect(self)
        except TimeoutError as exc:
            if bound.expired() and self.connection.state is ProtocolState.OPEN:
                raise TimeoutError(f"on_connect did not finish within open_timeout ({timeout}s)") from exc
            raise  # the hook's own timeout, as it raised it

    def _spawn_watch(self, watch: Watch) -> asyncio.Task[None] | None:
        """Run one heartbeat in the session's task group, which owns it and fails with it."""
        if (tg := self._tg) is None:  # pragma: no cover - the timers stop before the group is left
            return None
        coro = self._watch(watch)
        try:
            return tg.create_task(coro, name=f"wsclient-heartbeat-{self.id}")
        except RuntimeError:
            # The group is shutting down (a task failed): the session is ending, no beat is due.
            coro.close()
            return None

    async def _watch(self, watch: Watch) -> None:
        # The watcher's coroutine is made here, not by the caller: a task cancelled
        # before its first step would otherwise leave it never awaited.
        try:
            cause = await watch()
        except ConnectionClosed:
            return
        if cause is not None:
            self._verdict(cause)

    def _verdict(self, cause: Cause) -> None:
        """A watcher found the peer dead or stalled: drop the connection, unless the session is ending anyway."""
        if self._cause is not None or self.connection.state is not ProtocolState.OPEN:
            # Already closing (our close, the server's, or another watcher's verdict), and bounded by
            # close_timeout: a verdict now would be a false alarm and would misname why the session ended.
            return
        self._log.warning(
            cause.value, session_id=self.id, silent_for=round(self.connection.loop.time() - self.last_rx, 3)
        )
        self.abort(cause)

    async def _flush(self, outbox: Outbox[Data]) -> None:
        """Write the outbox in order, then keep writing whatever is buffered behind live sends.

        A popped message is this task's to account for: written, or
        interrupted when the connection breaks or the task is cancelled
        while the write drains (the frame is already in the transport then).
        """
        connection, stats = self.connection, self._stats
        while True:
            while len(outbox):
                if connection.state is not ProtocolState.OPEN:
                    return
                item = outbox.pop()
                if item is None:
                    break
                if type(item) is Envelope:
                    envelope, item = item, item.take()
                    if (request := envelope.request) is not None:
                        request.envelope = None
                        self.bind(request)  # always succeeds: the connection is open and this session has not ended
                payload, text = to_payload(item)
                written = False
                try:
                    await connection.send(payload, text=text)
                    # Aborted while the send waited to drain: websockets returns without raising.
                    written = connection.state is ProtocolState.OPEN
                except ConnectionClosed:
                    return
                finally:
                    count_write(stats, written)
                if not written:
                    return
            if not self.ready:
                self.ready = True
                outbox.wake()
            await outbox.wait_for_items()

    async def _consume(self, deliver: Deliver) -> SessionEnd:
        recv, stats = self._recv, self._stats
        limit = self._config.max_size
        put = deliver.put if isinstance(deliver, Inbox) else deliver
        requests = self._requests
        try:
            if (held := self._held) is not None:
                # What arrived while on_connect waited for its replies comes first, in order.
                self._held = None
                while (message := held.poll()) is not None:
                    stats.messages_in += 1
                    await put(message)
            if requests is not None:
                # Only a client with reply_key pays for the lookup, and only while a request waits.
                pending, resolve = requests.pending, requests.resolve
                compressed = limit is not None and bool(self.connection.protocol.extensions)
                while True:
                    message = await recv()
                    if compressed and too_big(message, limit):  # type: ignore[arg-type]
                        await self.connection.close(MESSAGE_TOO_BIG, f"message over max_size ({limit} bytes)")
                        continue
                    if pending and resolve(message, self):
                        continue
                    stats.messages_in += 1
                    await put(message)
            if limit is not None and self.connection.protocol.extensions:
                # Compressed frames were let through with some slack: check the message itself.
                while True:
                    message = await recv()
                    if too_big(message, limit):
                        await self.connection.close(MESSAGE_TOO_BIG, f"message over max_size ({limit} bytes)")
                        continue
                    stats.messages_in += 1
                    await put(message)
            if isinstance(deliver, Inbox):
                offer = deliver.offer
                while True:
                    message = await recv()
                    stats.messages_in += 1
                    if not offer(message):
                        await put(message)
            else:
                while True:
                    message = await recv()
                    stats.messages_in += 1
                    await deliver(message)
        except UnicodeDecodeError:
            # text=True and a binary message that is not UTF-8: the feed broke its contract.
            await self.connection.close(INVALID_DATA, "binary message is not UTF-8 text")
        except ConnectionClosed:
            pass
        self._interrupt_requests()
        return await self._ended()

    def end_now(self) -> SessionEnd:
        """How the session ended, from what is known at once (it is being cancelled; nothing is awaited)."""
        protocol = self.protocol
        known = ConnectionClosed(protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent)
        return end_from_close(known, self._cause, self.connection.loop.time() - self.started)

    async def _ended(self) -> SessionEnd:
        await self.connection.wait_closed()
        self.ready = False
        duration = self.connection.loop.time() - self.started
        try:
            # Raises nothing here: the connection is closed, so this returns its close exception.
            exc = self.connection.close_exc
        except Exception:  # pragma: no cover - websockets always has one once closed
            return SessionEnd(ABNORMAL_CLOSURE, "", ClosedBy.NOBODY, self._cause or Cause.CONNECTION_LOST, duration)
        return end_from_close(exc, self._cause, duration)
