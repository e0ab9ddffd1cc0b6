"""The default transport: websockets' asyncio client, with its own keepalive off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sized
from functools import partial
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State as ProtocolState
from websockets.typing import Subprotocol

from ..redact import RedactingLogger
from . import unread_bytes

if TYPE_CHECKING:
    from ..buffers import Inbox
    from ..config import ClientConfig, Data
    from ..stats import Stats
    from . import Direct, Sink

__all__ = ["TrackedConnection", "WebsocketsTransport", "connect_websockets", "wire_max_size"]

_OPEN = ProtocolState.OPEN


class TrackedConnection(ClientConnection):
    """A websockets connection that also notes when bytes arrive and when writes drain.

    It also enforces ``close_timeout`` after the server's close frame: websockets
    sets that deadline but only a later ``send()`` or ``close()`` acts on it, so a
    server that closes with 1000 and keeps TCP open would leave ``recv()`` waiting forever.
    And after the peer's EOF: websockets then closes the transport, which waits
    until the write buffer is flushed, so a peer that half-closed while it no
    longer reads would hold a waiting ``send()`` (and the session, no longer
    open, ignores the heartbeat's verdicts) until it reads again.

    And it lets a reader wait for the next message with one future
    (:meth:`arrival`) instead of a suspended ``recv()``, which holds three
    coroutines and a future (0.7 KB) for as long as the connection is idle.
    """

    last_rx: float = 0.0
    last_drain: float = 0.0
    paused_at: float = 0.0
    reading_resumed: float = 0.0
    _close_timer: asyncio.TimerHandle | None = None
    _arrival: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # websockets pauses reading while its queue of frames is full: note when it reads again.
        self.recv_messages.resume = self._resume_reading

    @property
    def queued(self) -> Sized:
        """The data frames received and not yet taken by ``recv()``: the first of them starts the next message."""
        return self.recv_messages.frames.queue

    def arrival(self) -> asyncio.Future[None]:
        """A future done once a data frame waits for ``recv()``, or the connection is closed.

        Then ``recv()`` returns a message, or raises ``ConnectionClosed``, at
        once (unless the message has more frames to come). Control frames
        (a pong) do not complete it. One reader at a time, as for ``recv()``.
        """
        arrival = self.loop.create_future()
        if self.recv_messages.frames.queue or self.recv_messages.closed:
            arrival.set_result(None)
        else:
            self._arrival = arrival
        return arrival

    def _arrived(self) -> None:
        arrival, self._arrival = self._arrival, None
        if arrival is not None and not arrival.done():
            arrival.set_result(None)

    def _resume_reading(self) -> None:
        self.reading_resumed = self.loop.time()
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_rx = self.loop.time()
        super().data_received(data)
        if self._arrival is not None and self.recv_messages.frames.queue:
            self._arrived()
        if self.close_deadline is not None and self._close_timer is None:
            self._close_timer = self.loop.call_at(self.close_deadline, self.transport.abort)

    def eof_received(self) -> None:
        super().eof_received()
        if self._close_timer is None and self.close_timeout is not None:
            self._close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()
        super().connection_lost(exc)
        self._arrived()

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


class WebsocketsTransport:
    """A :class:`wsclient.transports.Transport` over a websockets connection.

    ``recv`` and ``send`` are websockets' own bound methods: the hot paths
    pay for no wrapper call. :meth:`write` writes a message without a
    coroutine, the way websockets' own ``broadcast()`` does: the frame goes
    through the connection's sans-I/O protocol (``send_text``/``send_binary``)
    and its ``send_data()`` into the transport. Unlike ``broadcast()`` it
    reports backpressure (the connection's write flow control, set from
    ``write_limit``), so the caller waits in :meth:`drained` as websockets'
    ``send()`` would. ``tests/test_transports.py`` pins the behaviour of the
    websockets version this relies on.
    """

    pushes = False
    __slots__ = ("_aborted", "_deferred", "checks_message_size", "loop", "protocol", "raw", "recv", "send", "write")

    def __init__(self, connection: TrackedConnection, text: bool, decode: bool = True, *, exact: bool = True) -> None:
        self.raw = connection
        self.loop = connection.loop
        self.protocol = connection.protocol
        # With text=True, binary frames are decoded as UTF-8 too: the application gets str only.
        # With decode=False, text frames stay bytes: neither decoded nor checked.
        self.recv: Callable[[], Awaitable[Data]] = (
            partial(connection.recv, True) if text else connection.recv if decode else partial(connection.recv, False)
        )
        self.send: Callable[..., Awaitable[None]] = connection.send
        # With deflate offered, websockets was given a limit with some slack for compressed frames (which may
        # be read before the handshake's answer tells whether deflate was taken): the session checks the message.
        self.checks_message_size = exact
        # A message write() left to drained(), while a fragmented message is being written.
        self._deferred: tuple[bytes | bytearray | memoryview, bool] | None = None
        self.write: Callable[[bytes | bytearray | memoryview, bool], bool] | None = self._write
        # Dropped by this side, or its write failed: websockets' state says OPEN until the loss reaches it.
        self._aborted = False

    @property
    def queued(self) -> Sized:
        return self.raw.queued

    @property
    def arrival(self) -> Callable[[], Awaitable[None]]:
        return self.raw.arrival

    @property
    def last_rx(self) -> float:
        return self.raw.last_rx

    @property
    def last_drain(self) -> float:
        return self.raw.last_drain

    @property
    def reading_resumed(self) -> float:
        return self.raw.reading_resumed

    @property
    def subprotocol(self) -> str | None:
        return self.raw.subprotocol

    @property
    def response_headers(self) -> Headers:
        response = self.raw.response
        return Headers() if response is None else response.headers

    @property
    def is_open(self) -> bool:
        return self.protocol.state is _OPEN and not self._aborted

    async def pump(self, queue: Inbox[Any], sink: Sink | None, stats: Stats | None) -> None:
        """Pull every message into ``queue`` (through ``sink`` if given), waiting while it is full, until closed."""
        recv = self.recv
        try:
            while True:
                message = await recv()
                if stats is not None:
                    stats.messages_in += 1
                if not (queue.push(message) if sink is None else sink(message)):
                    made: asyncio.Future[None] = self.loop.create_future()
                    queue.when_room(partial(_settle, made))
                    await made
        except ConnectionClosed:
            return

    def _write(self, payload: bytes | bytearray | memoryview, text: bool) -> bool:
        """Write one message of an open connection now; True when the caller must await :meth:`drained`.

        What websockets' ``send()`` does between its checks and its wait for
        the buffer to drain, without its coroutine and context manager. A
        fragmented message sent through :attr:`raw` may be in progress (the
        protocol then refuses another frame): the message is left to
        :meth:`drained`, which sends it with ``send()`` once that one is done.
        """
        protocol = self.protocol
        if protocol.expect_continuation_frame:
            self._deferred = (payload, text)
            return True
        if text:
            protocol.send_text(payload)
        else:
            protocol.send_binary(payload)
        connection = self.raw
        try:
            connection.send_data()
        except Exception:
            # What websockets' send() does when writing fails: the connection is over (drained() lets it end).
            self.abort()
            return True
        if connection.transport.is_closing():
            # The write failed, or the connection was lost in this loop step: websockets says so only at the next.
            # This message is interrupted; what follows is not written into the dead socket.
            self._aborted = True
            return True
        return connection.paused

    async def drained(self) -> None:
        """Wait until the write buffer is below its low-water mark; return without raising once the connection broke.

        After :meth:`write` returned True, the caller awaits this at once: a
        message it left for later is sent here.
        """
        deferred, self._deferred = self._deferred, None
        # The connection broke while the write drained: is_open says so now.
        with contextlib.suppress(Exception):
            if deferred is not None:
                await self.raw.send(deferred[0], text=deferred[1])
            else:
                await self.raw.drain()

    def call_directly(self, direct: Direct | None) -> None:
        """Nothing to do: this transport pulls, and the session calls the handler from its own loop."""

    async def ping(self) -> Awaitable[float]:
        return await self.raw.ping()

    async def close(self, code: int, reason: str) -> None:
        await self.raw.close(code, reason)

    def closing(self) -> bool:
        return bool(self.raw.transport.is_closing())

    def abort(self) -> None:
        self._aborted = True
        self.raw.transport.abort()

    async def wait_closed(self) -> None:
        await self.raw.wait_closed()

    def end_record(self) -> ConnectionClosed:
        protocol = self.protocol
        return ConnectionClosed(protocol.close_rcvd, protocol.close_sent, protocol.close_rcvd_then_sent)

    def reading_paused(self) -> bool:
        transport = self.raw.transport
        return not transport.is_closing() and not transport.is_reading()

    def unread(self) -> int | None:
        return unread_bytes(self.raw.transport)

    def write_backlog(self) -> int:
        return self.raw.transport.get_write_buffer_size()

    def write_stalled(self, since: float, backlog: int) -> bool:
        connection = self.raw
        return (
            connection.paused
            and connection.paused_at <= since
            and connection.last_drain < since
            and 0 < backlog <= connection.transport.get_write_buffer_size()
        )


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_LOGGER = RedactingLogger(logging.getLogger("websockets.client"))
"""websockets' own logger, with credentials redacted from its records (it logs the handshake at DEBUG)."""


async def connect_websockets(
    config: ClientConfig,
    url: str,
    headers: Mapping[str, str] | None,
    ssl: Any,
    open_timeout: float | None = None,
    proxy: str | None = None,
) -> WebsocketsTransport:
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
        open_timeout=open_timeout,
        ping_interval=None,
        ping_timeout=None,
        close_timeout=config.close_timeout,
        max_size=wire_max_size(config.max_size, config.compression),
        max_queue=config.max_queue,
        create_connection=TrackedConnection,
        logger=_LOGGER,
        proxy=proxy,
        **kwargs,
    )
    assert isinstance(connection, TrackedConnection)
    connection.last_rx = connection.last_drain = connection.loop.time()
    exact = wire_max_size(config.max_size, config.compression) == config.max_size
    return WebsocketsTransport(connection, config.text, config.decode, exact=exact)
