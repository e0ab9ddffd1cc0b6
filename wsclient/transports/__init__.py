"""The transports a session runs on, and the small interface the session talks to.

A transport owns one WebSocket connection of a library (websockets, picows)
and speaks the session's terms: payloads in, messages out, a pong waiter, a
close with code and reason, and an end record. Everything the session, the
heartbeat and the policy need comes through :class:`Transport`, so no other
module touches a library's connection class; failures cross the boundary as
websockets' exceptions (``ConnectionClosed`` once the connection is gone,
``InvalidStatus`` and friends from the handshake), the one vocabulary the
policy table is written in.
"""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import Awaitable, Callable, Mapping, Sized
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidProxyStatus, ProxyError
from websockets.http11 import Response

from ..policy import ProxyStatus
from ..proxies import check_proxy, proxy_for_url, redact_proxy

if TYPE_CHECKING:
    from ..buffers import Inbox
    from ..config import ClientConfig, Data
    from ..stats import Stats

__all__ = [
    "NOT_UTF8",
    "TRANSPORTS",
    "Direct",
    "Sink",
    "Transport",
    "TransportName",
    "open_transport",
    "over_max_size",
    "unread_bytes",
]

TransportName: TypeAlias = Literal["websockets", "picows"]
TRANSPORTS: tuple[TransportName, ...] = ("websockets", "picows")

Sink: TypeAlias = "Callable[[Data], bool]"
"""Takes one received message without waiting, even over its limit; False once full (the transport pauses reading)."""


NOT_UTF8 = ("binary message is not UTF-8 text", "invalid UTF-8 in a text message")
"""The reasons of the 1007 this side sends: with ``text=True`` for a binary message, and for a text message."""


def over_max_size(max_size: int) -> str:
    """The reason of the 1009 this side sends for a message over ``max_size``: it names the setting."""
    return f"message over max_size ({max_size} bytes)"


class Direct:
    """A plain ``on_message`` that a pushing transport calls from its frame callback, with no hop in between.

    ``failed`` takes what the handler raised, ``CancelledError`` included (a
    plain function raising it cancels nothing: it is a bug in the handler); ``returned`` takes what it
    returned when that is not None (an awaitable the session must await in turn).
    """

    __slots__ = ("failed", "handler", "returned")

    def __init__(
        self,
        handler: Callable[[Any], object],
        failed: Callable[[BaseException], None],
        returned: Callable[[object], None],
    ) -> None:
        self.handler = handler
        self.failed = failed
        self.returned = returned


class Transport(Protocol):
    """One open WebSocket connection, as a session uses it.

    ``recv``/``send`` raise ``websockets.exceptions.ConnectionClosed`` once the
    connection is gone; with ``text=True`` a binary message that is not UTF-8
    raises ``UnicodeDecodeError`` from ``recv`` (the session then closes with 1007).
    """

    raw: Any
    """The library's own connection object, for what wsclient does not wrap."""
    loop: asyncio.AbstractEventLoop
    pushes: bool
    """Whether messages are pushed with :meth:`pump` (a frame callback) rather than pulled with ``recv``."""
    checks_message_size: bool
    """Whether the transport enforces ``max_size`` on whole messages itself (else the session does)."""
    recv: Callable[[], Awaitable[Data]]
    """The next message; only for a transport that does not push, or before :meth:`pump` starts."""
    send: Callable[..., Awaitable[None]]
    """``send(payload, text=...)``: write one message; waits while the write buffer is full."""
    write: Callable[[bytes | bytearray | memoryview, bool], bool] | None
    """``write(payload, text)``: write one message of an open connection at once, with no coroutine; True when
    the write buffer is over its high-water mark (or the message could not be written yet), and the caller then
    awaits :meth:`drained` at once. None when the library only writes from a coroutine: then :attr:`send` is the way."""

    @property
    def queued(self) -> Sized:
        """What was received and waits for ``recv``: empty while ``recv`` would have to wait."""

    @property
    def arrival(self) -> Callable[[], Awaitable[None]]:
        """Waits until :attr:`queued` holds something or the connection is closed (at once where it cannot tell).

        It holds less memory than a waiting ``recv``: a reader of an idle
        connection waits here while :attr:`queued` is empty, then calls ``recv``.
        """

    @property
    def last_rx(self) -> float:
        """Loop time at which bytes last arrived."""

    @property
    def last_drain(self) -> float:
        """Loop time at which the write buffer last drained below its low-water mark."""

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""

    @property
    def response_headers(self) -> Headers:
        """The headers of the server's handshake response."""

    @property
    def is_open(self) -> bool:
        """Whether the connection is open: neither closing nor closed."""

    async def pump(self, queue: Inbox[Any], sink: Sink | None, stats: Stats | None) -> None:
        """Deliver every message into ``queue``, or to ``sink`` that fills it; pause reading while it is full.

        Returns once the connection closed and every message was handed over;
        counts each one in ``stats.messages_in`` when ``stats`` is given.
        """

    def call_directly(self, direct: Direct | None) -> None:
        """From now on, while :meth:`pump` runs, give each message to ``direct.handler`` instead of the sink.

        ``None`` goes back to the sink: the session does so while an earlier
        message is still being handled, so that messages keep their order.
        """

    async def drained(self) -> None:
        """Wait until the write buffer is below its low-water mark, or the connection is gone; never raises that.

        A message that :attr:`write` could not write yet is written here, before the wait.
        """

    async def ping(self) -> Awaitable[float]:
        """Send a ping; the result completes with the latency when its pong comes."""

    async def close(self, code: int, reason: str) -> None:
        """Start the closing handshake and wait until the connection is closed (unbounded: callers bound it)."""

    def closing(self) -> bool:
        """Whether the underlying byte stream is closing or closed (an abort would change nothing)."""

    def abort(self) -> None:
        """Drop the connection at once, without a closing handshake."""

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""

    def end_record(self) -> ConnectionClosed:
        """Who closed and with what: the close frames received and sent, in websockets' terms."""

    def reading_paused(self) -> bool:
        """Whether reading is paused because the application is not consuming messages."""

    @property
    def reading_resumed(self) -> float:
        """Loop time at which reading last resumed after a pause (0.0 if it never paused)."""

    def unread(self) -> int | None:
        """Bytes the peer sent that wait unread below the connection (see :func:`unread_bytes`)."""

    def write_backlog(self) -> int:
        """Bytes written by this side that the peer has not taken yet (waiting in the transport)."""

    def write_stalled(self, since: float, backlog: int) -> bool:
        """Whether writing stayed blocked since ``since`` with no byte of ``backlog`` taken by the peer."""


if sys.platform != "win32":
    import fcntl
    import termios

    def _kernel_unread(fd: int) -> int | None:
        try:
            count: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            return None
        return count

else:  # pragma: no cover - Windows has no FIONREAD for Python's sockets

    def _kernel_unread(fd: int) -> int | None:
        return None


def unread_bytes(transport: asyncio.BaseTransport) -> int | None:
    """Bytes received on ``transport``'s socket that nobody has read yet, or None where that cannot be told.

    The kernel's receive queue (``FIONREAD``), plus, over TLS, what asyncio's
    TLS layer holds undecrypted or unread. While reading is paused, a pong
    can only be waiting there: with nothing there, everything the peer sent
    has been read, and its silence is its own.
    """
    sock = transport.get_extra_info("socket")
    if sock is None:
        return None
    try:
        fd = sock.fileno()
    except (OSError, ValueError):
        return None
    if fd < 0 or (count := _kernel_unread(fd)) is None:
        return None
    if transport.get_extra_info("ssl_object") is not None:
        # asyncio's TLS layer reads ahead into its own buffers: counted when they can be seen, else unknown.
        tls = getattr(transport, "_ssl_protocol", None)
        incoming = getattr(tls, "_incoming", None)
        sslobj = getattr(tls, "_sslobj", None)
        if incoming is None or sslobj is None:
            return None
        count += int(incoming.pending) + int(sslobj.pending())
    return count


async def open_transport(
    config: ClientConfig, url: str, headers: Mapping[str, str] | None, ssl: Any, open_timeout: float | None = None
) -> Transport:
    """Open a connection on ``config.transport`` and run its handshake within ``open_timeout``.

    ``url`` and ``headers`` are what :func:`wsclient.wire.handshake_target` made
    of the checked ones: no userinfo in the URL. ``open_timeout`` is what is left
    of the attempt's ``config.open_timeout``; ``None`` means all of it.

    The proxy is resolved here, once for both transports (see :mod:`wsclient.proxies`); a proxy that
    answers the tunnel request with an HTTP error comes out as :class:`~wsclient.policy.ProxyStatus`,
    with the proxy named without its credentials.
    """
    if open_timeout is None:
        open_timeout = config.open_timeout
    proxy = proxy_for_url(config.proxy, url)
    if proxy is not None and config.proxy is True:
        # The environment is read at each attempt: a bad value there is named as such.
        check_proxy(proxy, config.transport, name="the proxy from the environment (https_proxy, all_proxy, ...)")
    try:
        if config.transport == "picows":
            from .picows import connect_picows

            return await connect_picows(config, url, headers, ssl, open_timeout, proxy)
        from .websockets import connect_websockets

        return await connect_websockets(config, url, headers, ssl, open_timeout, proxy)
    except InvalidProxyStatus as exc:
        assert proxy is not None
        raise ProxyStatus(exc.response, redact_proxy(proxy)) from None
    except ProxyError as exc:
        assert proxy is not None
        if not _credentials_refused(exc):
            raise
        # A SOCKS proxy's "authentication failed" means what an HTTP proxy's 407 does.
        raise ProxyStatus(Response(407, "SOCKS authentication failed", Headers()), redact_proxy(proxy)) from None


_CREDENTIALS_REFUSED = ("authentication failure", "no acceptable authentication methods")
"""What python-socks says when a SOCKS5 proxy refuses the credentials, or wants some and got none."""


def _credentials_refused(exc: BaseException | None) -> bool:
    while exc is not None:
        text = str(exc).lower()
        if any(words in text for words in _CREDENTIALS_REFUSED):
            return True
        exc = exc.__cause__
    return False
