"""The fast transport: picows, with messages pushed from its frame callback (``pip install 'wsclient[fast]'``).

picows parses frames in C and calls :meth:`PicowsTransport.on_ws_frame` once
per frame, without a coroutine; a complete message goes from there straight
into the session's sink (the inbox). This module adds what picows leaves to
its user: fragmented messages reassembled, ``max_size`` on whole messages,
UTF-8 of text checked, the closing handshake answered, pings with pong
waiters, and picows' handshake errors translated into websockets' (the
policy's vocabulary). picows has no permessage-deflate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sized
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin, urlsplit

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSHandshakeError,
    WSInvalidMessageError,
    WSInvalidURL,
    WSListener,
    WSMsgType,
    WSTransport,
    ws_connect,
)
from python_socks import ProxyConnectionError, ProxyTimeoutError
from python_socks import ProxyError as SocksError
from websockets.asyncio.client import MAX_REDIRECTS
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidProxyStatus,
    InvalidStatus,
    InvalidURI,
    ProtocolError,
    ProxyError,
    SecurityError,
)
from websockets.frames import Close
from websockets.http11 import Response

from ..buffers import Inbox
from ..redact import RedactingLogger
from . import NOT_UTF8, over_max_size, unread_bytes

if TYPE_CHECKING:
    from ..config import ClientConfig, Data
    from ..stats import Stats
    from . import Direct, Sink

__all__ = ["PicowsTransport", "connect_picows"]

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PONG = WSMsgType.PONG
_PING = WSMsgType.PING
_NO_STATUS = 1005
_ABNORMAL = 1006
_NO_LIMIT = 2**62
# Loop time, read without a method call: asyncio's default loop.time() is time.monotonic().
_now = time.monotonic


class _Deferred:
    """What the connection must do once the session reads this far: the session is not running yet.

    Before the session starts, a close frame or a bad message waits in line
    behind the messages that came first, as it would behind a reader of websockets.
    """

    __slots__ = ("action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action


class PicowsTransport(WSListener):
    """A :class:`wsclient.transports.Transport` over picows; it is also picows' listener of the connection."""

    pushes = True
    checks_message_size = True
    # Slots, not a __dict__: the per-frame function and send() read these attributes fastest that way.
    __slots__ = (
        "_append",
        "_call",
        "_close_timeout",
        "_close_timer",
        "_deaf",
        "_decoded",
        "_direct",
        "_disconnected",
        "_drained",
        "_early",
        "_limit",
        "_parts",
        "_parts_size",
        "_parts_type",
        "_paused_at",
        "_plain_limit",
        "_pongs",
        "_pumping",
        "_queue",
        "_reading_paused",
        "_sink",
        "_stats",
        "_wake",
        "_write_paused",
        "is_open",
        "last_drain",
        "last_rx",
        "loop",
        "raw",
        "reading_resumed",
        "recv",
        "send",
        "write",
    )

    def __init__(self, config: ClientConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.raw: WSTransport | None = None
        self._limit = _NO_LIMIT if config.max_size is None else config.max_size
        # The kinds of message delivered as str: text (the default), text and binary (text=True), none (decode=False).
        self._decoded: tuple[WSMsgType, ...] = (_TEXT, _BINARY) if config.text else (_TEXT,) if config.decode else ()
        self._close_timeout = config.close_timeout
        self.last_rx = self.last_drain = loop.time()
        self._paused_at = 0.0
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._reading_paused = False
        self.reading_resumed = 0.0
        """Loop time at which reading last resumed after a pause (0.0 if it never paused)."""
        self.is_open = True
        """Whether the connection is open: neither closing nor closed (an attribute: the send path reads it twice)."""
        # Nothing more is delivered: the peer's close frame came, or this side failed the connection.
        self._deaf = False
        self._close_timer: asyncio.TimerHandle | None = None
        # Fragments of the message being reassembled, and its type (None between messages).
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._parts_type: WSMsgType | None = None
        # The largest single-frame message the per-frame fast path takes: -1 while reassembling or failing.
        self._plain_limit = self._limit
        # A list, not a deque: rarely more than one ping waits, and an empty deque holds a block of 64 slots.
        self._pongs: list[tuple[asyncio.Future[float], float]] = []
        # Until the session starts pumping, messages (and _Deferred actions) wait here for recv() in on_connect.
        self._early: Inbox[Any] | None = Inbox(config.inbox_size)
        # Where messages go: reading pauses while this queue is full. They are appended to it straight from
        # here (``_append``: its reader is woken once per read), or given to a ``_sink`` that fills it.
        self._queue: Inbox[Any] = self._early
        self._append: Callable[[Any], None] | None = self._first_append
        self._sink: Sink | None = None
        self._stats: Stats | None = None
        # The session's plain on_message while it may be called from here, and whether pump() took over from recv().
        self._direct: Direct | None = None
        self._call: Callable[[Data], object] | None = None
        self._pumping = False
        self._wake: asyncio.Future[None] | None = None
        self._disconnected = False
        self.recv: Callable[[], Awaitable[Data]] = self._recv_early
        self.send: Callable[..., Awaitable[None]] = self._send_message
        self.write: Callable[[bytes | bytearray | memoryview, bool], bool] | None = self._write

    # The Transport interface.

    @property
    def subprotocol(self) -> str | None:
        assert self.raw is not None
        value: str | None = self.raw.response.headers.get("Sec-WebSocket-Protocol")
        return value

    @property
    def response_headers(self) -> Headers:
        assert self.raw is not None
        return Headers(list(self.raw.response.headers.items()))

    @property
    def queued(self) -> Sized:
        """Nothing waits for ``recv`` here: messages are pushed (see :meth:`pump`)."""
        return ()

    @property
    def arrival(self) -> Callable[[], Awaitable[None]]:
        return _arrived

    async def _send_message(self, payload: bytes | bytearray | memoryview | str, text: bool = False) -> None:
        """Write one message; wait while picows' write buffer is over its high-water mark."""
        if not self.is_open:
            raise self.end_record()
        assert self.raw is not None
        if isinstance(payload, str):
            payload, text = payload.encode(), True
        if self._write(payload, text):
            await self.drained()

    def _write(self, payload: bytes | bytearray | memoryview, text: bool) -> bool:
        raw = self.raw
        assert raw is not None
        raw.send(_TEXT if text else _BINARY, payload)
        if raw.underlying_transport.is_closing():
            # The write failed, or the connection was lost in this loop step: picows says so only at the next.
            # This message is interrupted; what follows is not written into the dead socket.
            self.is_open = False
            return True
        return self._write_paused

    async def drained(self) -> None:
        if not self._write_paused or self._disconnected:
            return
        if self._drained is None:
            self._drained = self.loop.create_future()
        await asyncio.shield(self._drained)

    def call_directly(self, direct: Direct | None) -> None:
        self._direct = direct
        self._call = direct.handler if direct is not None and self._pumping else None

    async def ping(self) -> Awaitable[float]:
        if not self.is_open:
            raise self.end_record()
        assert self.raw is not None
        pong: asyncio.Future[float] = self.loop.create_future()
        self._pongs.append((pong, self.loop.time()))
        self.raw.send_ping()
        return pong

    async def close(self, code: int, reason: str) -> None:
        self._send_close(code, reason)
        await self.wait_closed()

    def abort(self) -> None:
        # Closed from now on: picows reports the loss a loop step later, and a write meanwhile would be lost.
        self.is_open = False
        if self.raw is not None:
            self.raw.disconnect(graceful=False)

    def closing(self) -> bool:
        raw = self.raw
        return raw is None or raw.is_disconnected or bool(raw.underlying_transport.is_closing())

    async def wait_closed(self) -> None:
        assert self.raw is not None
        # picows raises here when it failed the connection itself (a frame over max_size): the end record says how.
        with contextlib.suppress(WSError):
            await self.raw.wait_disconnected()

    def end_record(self) -> ConnectionClosed:
        handshake = None if self.raw is None else self.raw.close_handshake
        if handshake is None:
            return ConnectionClosed(None, None)
        rcvd, sent = handshake.recv, handshake.sent
        return ConnectionClosed(
            # picows gives no reason (None) for a close frame without a code; websockets gives "".
            None if rcvd is None else Close(int(rcvd.code.value) or _NO_STATUS, rcvd.reason or ""),
            None if sent is None else Close(int(sent.code.value) or _NO_STATUS, sent.reason or ""),
            None if rcvd is None or sent is None else bool(handshake.recv_then_sent),
        )

    def reading_paused(self) -> bool:
        return self._reading_paused and not self._disconnected

    def unread(self) -> int | None:
        if self.raw is None:
            return None
        return unread_bytes(self.raw.underlying_transport)

    def write_backlog(self) -> int:
        if self.raw is None:
            return 0
        return int(self.raw.underlying_transport.get_write_buffer_size())

    def write_stalled(self, since: float, backlog: int) -> bool:
        return (
            self._write_paused
            and self._paused_at <= since
            and self.last_drain < since
            and 0 < backlog <= self.write_backlog()
        )

    async def _recv_early(self) -> Data:
        """The next message before the session pumps (``recv()`` in ``on_connect``), acting on what was deferred."""
        early = self._early
        assert early is not None
        while True:
            item = await early.get()
            if type(item) is not _Deferred:
                return item  # type: ignore[no-any-return]
            item.action()

    async def pump(self, queue: Inbox[Any], sink: Sink | None, stats: Stats | None) -> None:
        """Deliver every message from the frame callback, reading paused while ``queue`` is full, until closed."""
        early = self._early
        self._early, self._queue, self._sink, self._stats = None, queue, sink, stats
        self._append = self._first_append if sink is None else None
        self._pumping = True
        if self._direct is not None:
            self._call = self._direct.handler
        if early is not None:
            # What came before, in order, as if it came now (nothing else runs meanwhile).
            while (message := early.poll()) is not None:
                if type(message) is _Deferred:
                    message.action()
                    continue
                if stats is not None:
                    stats.messages_in += 1
                self._deliver(message)
            self._check_full()
        if not self._disconnected:
            self._wake = self.loop.create_future()
            await self._wake

    # picows' listener callbacks.

    def abandon(self) -> None:
        """The handshake's caller gave up on it: close the connection now, or as soon as its handshake ends.

        picows leaves a handshake cancelled mid-way running: it fails on picows' own handshake timer, or
        completes late and calls :meth:`on_ws_connected`, which then closes the connection at once.
        """
        self._disconnected = True
        if self.raw is not None:
            self.raw.disconnect(graceful=False)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.raw = transport
        if self._disconnected:
            transport.disconnect(graceful=False)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        """One Python call per frame: a whole message of one frame goes to the handler or the queue from here."""
        # No extension is negotiated on picows: a reserved bit set fails the connection (in _rare).
        if frame.fin and frame.payload_size <= self._plain_limit and not (frame.rsv1 or frame.rsv2 or frame.rsv3):
            kind = frame.msg_type
            if kind in self._decoded:
                try:
                    message: Data = frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self._rare(frame, 1007)
                    return
            elif kind is _BINARY or kind is _TEXT:
                message = frame.get_payload_as_bytes()
            else:
                self._rare(frame)
                return
            if (stats := self._stats) is not None:
                stats.messages_in += 1
            # What _deliver() does, inline.
            if (call := self._call) is not None:
                try:
                    result = call(message)
                except (Exception, asyncio.CancelledError) as exc:
                    self._call_failed(exc)
                else:
                    if result is not None:
                        self._call_returned(result)
            elif (append := self._append) is not None:
                append(message)
            elif not self._sink(message) and not self._reading_paused:  # type: ignore[misc]
                self._pause_reading()
            if frame.last_in_buffer:
                self._read_done()
            return
        self._rare(frame)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.is_open = False
        self._disconnected = True
        if self._close_timer is not None:
            self._close_timer.cancel()
        while self._pongs:
            self._pongs.pop(0)[0].cancel()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        if self._append is not None:
            # A read cut short (a frame picows could not parse) left messages without waking their reader.
            self._queue.fed()
        if self._early is not None:
            self._early.close(self.end_record())
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._paused_at = self.loop.time()

    def resume_writing(self) -> None:
        self._write_paused = False
        self.last_drain = self.loop.time()
        if self._drained is not None:
            if not self._drained.done():
                self._drained.set_result(None)
            self._drained = None

    # The rarer paths, out of the per-frame function.

    def _rare(self, frame: WSFrame, invalid: int = 0) -> None:
        """A frame off the fast path: a control frame, a fragment, a message over the limit, invalid text."""
        if invalid:
            self._fail(invalid, NOT_UTF8[frame.msg_type is _TEXT])
        elif self._deaf:
            # After a close frame (received, or sent to fail the connection) nothing is read (RFC 6455, 5.5.1).
            pass
        elif frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._fail(1002, "reserved bits set without a negotiated extension")
        elif frame.fin and frame.payload_size <= self._plain_limit:
            self._control(frame)
        else:
            self._fragment(frame)
        if frame.last_in_buffer:
            self._read_done()

    def _read_done(self) -> None:
        """After the last frame of a read from the socket: note the time, wake the reader, pause if full."""
        self.last_rx = _now()
        self._check_full()

    def _check_full(self) -> None:
        if self._append is not None and not self._queue.fed() and not self._reading_paused:
            self._pause_reading()

    def _first_append(self, message: Any) -> None:
        # The queue's deque is made by the first message: an idle connection does not pay for it.
        self._append = self._queue.appender()
        self._append(message)

    def _deliver(self, message: Any) -> None:
        """Hand over one message as the per-frame function does: to the handler, or to the queue."""
        if (call := self._call) is not None:
            try:
                result = call(message)
            except (Exception, asyncio.CancelledError) as exc:
                self._call_failed(exc)
            else:
                if result is not None:
                    self._call_returned(result)
        elif (append := self._append) is not None:
            append(message)
        elif not self._sink(message) and not self._reading_paused:  # type: ignore[misc]
            self._pause_reading()

    def _call_failed(self, exc: BaseException) -> None:
        assert self._direct is not None
        self._direct.failed(exc)

    def _call_returned(self, result: object) -> None:
        assert self._direct is not None
        self._direct.returned(result)

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._disconnected:
            self._reading_paused = False
            self.reading_resumed = self.loop.time()
            assert self.raw is not None
            self.raw.underlying_transport.resume_reading()

    def _pause_reading(self) -> None:
        """The sink is full: stop reading until its reader made room (what this read brought is already in)."""
        if not self._reading_paused and not self._disconnected and self.raw is not None:
            self._reading_paused = True
            self.raw.underlying_transport.pause_reading()
            self._queue.when_room(self._room_made)

    def _room_made(self) -> None:
        # Asked again of the queue messages go to now: the session may have taken over from on_connect's.
        self._queue.when_room(self._resume_reading)

    def _control(self, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is _CLOSE:
            # The close payload as websockets checks it: no code, or a code RFC 6455 (7.4) allows and a UTF-8 reason.
            try:
                Close.parse(frame.get_payload_as_bytes())
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in the close reason")
                return
            except ProtocolError as exc:
                self._fail(1002, str(exc))
                return
            code = frame.get_close_code()
            # What a peer sends after its close frame is not read (RFC 6455, section 5.5.1).
            self._deaf, self._plain_limit = True, -1
            raw = self.raw
            assert raw is not None
            answered = not raw.is_close_frame_sent
            if answered:
                # Answered at once, as websockets does, even while the messages before it wait for the session:
                # picows fails a connection with 1002 when a second close frame comes before the answer.
                raw.send_close(code if code is not WSCloseCode.NO_INFO else WSCloseCode.OK)
                self.is_open = False
            if self._early is not None:
                self._deliver(_Deferred(partial(self._answer_close, answered)))
            else:
                self._answer_close(answered)
        elif kind is _PONG:
            if self._pongs:
                pong, sent_at = self._pongs.pop(0)
                if not pong.done():
                    pong.set_result(self.loop.time() - sent_at)
        elif kind is _PING:
            # Answered here rather than by picows, which would answer a ping with reserved bits set.
            assert self.raw is not None
            self.raw.send_pong(frame.get_payload_as_bytes())
        elif kind is _CONTINUATION:
            self._fragment(frame)

    def _fragment(self, frame: WSFrame) -> None:
        if self._deaf:
            return
        kind = frame.msg_type
        if kind is _CLOSE or kind is _PONG or kind is _PING:
            self._control(frame)
            return
        if kind is _CONTINUATION:
            if self._parts_type is None:
                self._fail(1002, "continuation frame without a message to continue")
                return
        elif self._parts_type is not None:
            self._fail(1002, "new data frame before the fragmented message ended")
            return
        else:
            self._parts_type = kind
            self._plain_limit = -1
        self._parts_size += frame.payload_size
        if self._parts_size > self._limit:
            self._fail(1009, over_max_size(self._limit))
            return
        self._parts.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return
        data = b"".join(self._parts)
        kind, self._parts_type, self._parts, self._parts_size = self._parts_type, None, [], 0
        self._plain_limit = self._limit
        message: Data = data
        if kind in self._decoded:
            try:
                message = data.decode()
            except UnicodeDecodeError:
                self._fail(1007, NOT_UTF8[kind is _TEXT])
                return
        if (stats := self._stats) is not None:
            stats.messages_in += 1
        self._deliver(message)

    def _answer_close(self, answered: bool) -> None:
        """After the peer's close frame: wait for the server to close TCP if this side answered it, else close."""
        self.is_open = False
        assert self.raw is not None
        if answered:
            # Answered with the code received, as RFC 6455 section 5.5.1 asks: the server closes TCP.
            if self._close_timer is None:
                self._close_timer = self.loop.call_later(self._close_timeout, self.raw.disconnect, False)
        else:
            self.raw.disconnect()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection from this side: send the close frame, deliver nothing more, wait for the answer."""
        self._deaf, self._plain_limit = True, -1
        self._parts, self._parts_size, self._parts_type = [], 0, None
        if self._early is not None:
            self._deliver(_Deferred(partial(self._send_close, code, reason)))
        else:
            self._send_close(code, reason)

    def _send_close(self, code: int, reason: str) -> None:
        self.is_open = False
        raw = self.raw
        if raw is None or raw.is_close_frame_sent or raw.is_disconnected:
            return
        raw.send_close(WSCloseCode(code), reason.encode())
        if self._close_timer is None:
            self._close_timer = self.loop.call_later(self._close_timeout, raw.disconnect, False)


async def _arrived() -> None:
    """What :attr:`PicowsTransport.arrival` waits for: nothing (``recv`` waits itself)."""


def _handshake_error(exc: WSHandshakeError) -> Exception:
    """picows' handshake failure in websockets' terms, so one policy table classifies both transports."""
    response = exc.response
    if isinstance(exc, WSInvalidMessageError):
        return InvalidMessage(str(exc))
    if response is not None and int(response.status) != 101:
        status = int(response.status)
        return InvalidStatus(
            Response(status, response.status.phrase, Headers(list(response.headers.items())), response.body or b"")
        )
    return InvalidHandshake(str(exc))


_REDIRECTS = frozenset({300, 301, 302, 303, 307, 308})
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization"})
_LOGGER = RedactingLogger(logging.getLogger("picows.client"))
"""picows' own logger, with credentials redacted from its records (it logs the raw handshake at DEBUG)."""


def _redirect(exc: WSHandshakeError, url: str, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Where a redirect answer sends the handshake, with websockets' rules; raise ``exc`` if it is no redirect.

    A redirect to ``ws://`` from ``wss://`` is refused; a redirect to another
    origin drops ``Authorization``, ``Cookie`` and ``Proxy-Authorization``.
    """
    response = exc.response
    if response is None or int(response.status) not in _REDIRECTS or "Location" not in response.headers:
        raise exc
    new = urljoin(url, response.headers["Location"])
    old_parts, new_parts = urlsplit(url), urlsplit(new)
    if old_parts.scheme == "wss" and new_parts.scheme != "wss":
        raise SecurityError(f"cannot follow redirect to non-secure URI {new}")
    if new_parts.scheme not in ("ws", "wss"):
        raise InvalidURI(new, "scheme isn't ws or wss")
    if (old_parts.scheme, old_parts.hostname, old_parts.port) != (new_parts.scheme, new_parts.hostname, new_parts.port):
        headers = {key: value for key, value in headers.items() if key.lower() not in _CREDENTIALS}
    return new, headers


_PROXY_STATUS = re.compile(r"rejected connection with status (\d{3})")


def _picows_proxy(proxy: str | None) -> str | None:
    """``proxy`` as picows spells it: python-socks resolves names through any SOCKS5 proxy, as ``socks5h`` says."""
    if proxy is not None and proxy.startswith("socks5h://"):
        return "socks5://" + proxy[len("socks5h://") :]
    return proxy


def _proxy_error(exc: Exception) -> Exception:
    """python-socks' proxy failure in websockets' terms: an HTTP proxy's status, a refusal, or a proxy error."""
    if isinstance(exc, OSError | TimeoutError):
        # ProxyConnectionError and ProxyTimeoutError: the proxy could not be reached, retried like a server.
        return exc
    status = _PROXY_STATUS.search(str(exc))
    if status is not None:
        return InvalidProxyStatus(Response(int(status[1]), "", Headers()))
    error = ProxyError("failed to connect to the proxy")
    error.__cause__ = exc
    return error


async def connect_picows(
    config: ClientConfig,
    url: str,
    headers: Mapping[str, str] | None,
    ssl: Any,
    open_timeout: float | None = None,
    proxy: str | None = None,
) -> PicowsTransport:
    """Open the TCP connection and run the opening handshake within ``open_timeout``, picows' keepalive off.

    picows leaves the socket open when ``ws_connect`` is cancelled mid-handshake (by ``open_timeout``
    or by the caller): the listener of that attempt is abandoned, so that a handshake completing late
    closes its connection at once, and one that never completes ends on picows' own handshake timer
    (``open_timeout`` from the moment the connection, or the proxy's tunnel, was made).
    Redirects are followed here as websockets follows them (see :func:`_redirect`), so that both
    transports follow the same ones, drop the same credentials and fail a loop with the same error.
    """
    loop = asyncio.get_running_loop()
    extra: dict[str, str] = dict(headers) if headers else {}
    if config.subprotocols is not None:
        extra["Sec-WebSocket-Protocol"] = ", ".join(config.subprotocols)
    limit = _NO_LIMIT if config.max_size is None else config.max_size

    async def handshake() -> tuple[WSTransport, Any]:
        target, sent = url, extra
        async with asyncio.timeout(open_timeout):
            for _ in range(MAX_REDIRECTS):
                listener = PicowsTransport(config, loop)
                try:
                    result: tuple[WSTransport, Any] = await ws_connect(
                        lambda: listener,  # noqa: B023 - called within this await only
                        target,
                        ssl_context=ssl,
                        websocket_handshake_timeout=open_timeout,
                        enable_auto_ping=False,
                        # Pings are answered by the listener, which checks them first (no reserved bit set).
                        enable_auto_pong=False,
                        # picows sends 1009 for a frame over the limit but may still deliver it: the listener checks.
                        max_frame_size=limit,
                        extra_headers=sent or None,
                        # picows keeps its read buffer for the connection's life and doubles it as messages need:
                        # 2 KiB instead of 16 KiB saves 14 KiB per idle connection, at no measured cost in throughput.
                        read_buffer_init_size=2048,
                        max_redirects=0,
                        logger_name=_LOGGER,
                        proxy=_picows_proxy(proxy),
                    )
                except WSHandshakeError as exc:
                    target, sent = _redirect(exc, target, sent)
                    continue
                except BaseException:
                    listener.abandon()
                    raise
                return result
            raise SecurityError(f"more than {MAX_REDIRECTS} redirects")

    try:
        raw, listener = await handshake()
    except WSInvalidURL as exc:
        raise InvalidURI(url, str(exc)) from exc
    except WSHandshakeError as exc:
        raise _handshake_error(exc) from exc
    except (SocksError, ProxyConnectionError, ProxyTimeoutError) as exc:
        raise _proxy_error(exc) from exc
    if not isinstance(listener, PicowsTransport):
        # The server hung up before its response was complete.
        raw.disconnect(graceful=False)
        raise InvalidMessage("connection closed during the opening handshake")
    chosen = listener.subprotocol
    if chosen is not None and (config.subprotocols is None or chosen not in config.subprotocols):
        raw.disconnect(graceful=False)
        raise InvalidHandshake(f"unsupported subprotocol: {chosen}")
    listener.last_rx = listener.last_drain = loop.time()
    return listener
