"""``Client``: the lifecycle, sending, receiving, state and stats of one resilient connection."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from types import TracebackType
from typing import Any, Generic, Literal, TypedDict, Unpack, overload

from typing_extensions import TypeVar
from websockets.exceptions import ConnectionClosed

from .backoff import Backoff
from .buffers import Deliver, Envelope, Inbox, Outbox, SessionStart
from .config import (
    DEFAULT_COMPRESSION,
    ClientConfig,
    CloseActions,
    Data,
    HeadersSource,
    MessageHandler,
    OnConnect,
    OnDisconnect,
    Overflow,
    UrlSource,
    check_timeout,
    is_async_callable,
)
from .errors import BufferFull, ClientClosed, RequestTimeout, WsClientError, fresh_error
from .events import Cause, State, check_transition
from .heartbeat import Heartbeat
from .hooks import Observers, OnStateChange, StateChange, StateListener, snapshot
from .logs import describe_error, get_logger, redact_url
from .policy import ErrorClassifier
from .proxies import ProxySetting
from .replies import ReplyKey, Request, Requests
from .session import Handler, Session, count_write, to_payload
from .stats import Outage, Stats
from .supervisor import Supervisor

HANDLER_ERROR_LOG_INTERVAL = 10.0
"""Seconds between two log events about a failing ``on_message``: the first one carries the traceback."""

__all__ = ["Client"]

_DATA_TYPES = (str, bytes, bytearray, memoryview)

M = TypeVar("M", str, bytes, Data, default=Data)
"""What the client delivers: ``str`` with ``text=True``, ``bytes`` with ``decode=False``, else ``str | bytes``."""


class Options(TypedDict, total=False):
    """The keyword arguments of :class:`Client` besides ``url``, ``text``, ``decode`` and ``on_message``."""

    on_connect: OnConnect | None
    on_disconnect: OnDisconnect | None
    on_state_change: OnStateChange | None
    reply_key: ReplyKey | None
    backoff: Backoff
    max_attempts: int | None
    max_outage: float | None
    heartbeat: Heartbeat | None
    idle_timeout: float | None
    reconnect_on_normal_close: bool
    close_actions: CloseActions | None
    classify_error: ErrorClassifier | None
    max_buffered: int
    overflow: Overflow
    inbox_size: int
    open_timeout: float | None
    close_timeout: float
    headers: HeadersSource | None
    subprotocols: Sequence[str] | None
    ssl: ssl_module.SSLContext | None
    compression: str | None
    max_size: int | None
    max_queue: int
    transport: Literal["websockets", "picows"]
    proxy: ProxySetting


class Client(Generic[M]):
    """A WebSocket connection that stays up: reconnects, re-subscribes, buffers and reports.

    Use it as ``async with Client(url) as client:``; entering returns once the
    first session is open (or raises ``FatalError``/``GaveUp``), leaving closes
    with code 1000. Messages from every session come out of ``recv()`` and
    ``async for`` as one stream; ``send()`` while disconnected buffers up to
    ``max_buffered`` messages, sent in order after the next ``on_connect``.

    With ``text=True`` every message is a ``str`` (binary frames are decoded
    as UTF-8; one that is not ends the session with 1007), and the type
    checker knows it: ``Client(url, text=True)`` is a ``Client[str]`` whose
    ``on_message`` may take a ``str``. With ``decode=False`` every message is
    ``bytes``: text messages arrive as the server sent them, neither decoded
    nor checked as UTF-8 (for a parser that reads bytes, such as ``orjson``).

    ``on_state_change(change)`` (a plain or async function) is told of every
    change of :attr:`state` with a :class:`StateChange`, including when an
    outage starts and ends. It runs in order, from a task of its own: the
    client never waits for it, an exception it raises is logged
    (``on_state_change_failed``), and ``close()`` and ``wait_closed()`` return
    once it saw ``CLOSED`` (waiting at most ``close_timeout``).
    """

    @overload
    def __init__(
        self: Client[str],
        url: UrlSource,
        *,
        text: Literal[True],
        on_message: Callable[[str], Awaitable[None] | None] | None = None,
        **options: Unpack[Options],
    ) -> None: ...

    @overload
    def __init__(
        self: Client[bytes],
        url: UrlSource,
        *,
        text: Literal[False] = False,
        decode: Literal[False],
        on_message: Callable[[bytes], Awaitable[None] | None] | None = None,
        **options: Unpack[Options],
    ) -> None: ...

    @overload
    def __init__(
        self: Client[Data],
        url: UrlSource,
        *,
        text: Literal[False] = False,
        decode: Literal[True] = True,
        on_message: MessageHandler | None = None,
        **options: Unpack[Options],
    ) -> None: ...

    def __init__(
        self,
        url: UrlSource,
        *,
        text: bool = False,
        decode: bool = True,
        on_connect: OnConnect | None = None,
        on_message: Callable[[Any], Awaitable[None] | None] | None = None,
        on_disconnect: OnDisconnect | None = None,
        on_state_change: OnStateChange | None = None,
        reply_key: ReplyKey | None = None,
        backoff: Backoff = Backoff(),
        max_attempts: int | None = None,
        max_outage: float | None = None,
        heartbeat: Heartbeat | None = Heartbeat(),
        idle_timeout: float | None = None,
        reconnect_on_normal_close: bool = False,
        close_actions: CloseActions | None = None,
        classify_error: ErrorClassifier | None = None,
        max_buffered: int = 1024,
        overflow: Overflow = "error",
        inbox_size: int = 1024,
        open_timeout: float | None = 10.0,
        close_timeout: float = 10.0,
        headers: HeadersSource | None = None,
        subprotocols: Sequence[str] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        compression: Any = DEFAULT_COMPRESSION,
        max_size: int | None = 2**20,
        max_queue: int = 16,
        transport: Literal["websockets", "picows"] = "websockets",
        proxy: ProxySetting = True,
    ) -> None:
        """Check every argument and make the client; nothing connects until ``start()`` or ``async with``.

        Args:
            url: A ``ws://`` or ``wss://`` URL, or a callable (plain or async) returning one, called before
                every attempt (signed URLs).
            text: Every message is a ``str``: binary frames are decoded as UTF-8 (one that is not ends the
                session with 1007, fatal). Typed: ``Client(url, text=True)`` is a ``Client[str]``, so
                ``recv()``, ``async for`` and ``on_message(message: str)`` type-check as ``str``; without it
                they are ``str | bytes``.
            decode: ``False``: text messages arrive as the ``bytes`` the server sent, neither decoded nor
                checked as UTF-8 (binary stay ``bytes``), for a parser that reads bytes such as
                ``orjson.loads``; saves making a ``str`` per message. Typed: ``Client(url, decode=False)``
                is a ``Client[bytes]``. Contradicts ``text=True`` (``ValueError``).
            on_connect: ``async def on_connect(session)`` (or a partial of one, or an object with an async
                ``__call__``; a plain function is a ``TypeError``): authenticate and subscribe on every
                fresh session, before buffered sends go out; ``session.send()``/``session.recv()``/
                ``session.request()`` talk to that connection directly.
            on_message: A handler (plain or async) called with each message instead of ``recv()``/iteration;
                what it raises is logged and counted in ``stats.handler_errors``, not fatal.
            on_disconnect: ``async def on_disconnect(end)`` called with the ``SessionEnd`` of every session
                that opened, after its pending requests failed and before the policy decides; bounded by
                ``close_timeout``; a connection error it raises is logged, anything else is a
                ``CallbackError``.
            on_state_change: ``on_state_change(change)``, a plain or async function told of every
                :class:`StateChange` (state, and an outage starting or ending), in order, from a task of
                its own: it never holds up the client; one that raises is logged, not fatal.
            reply_key: ``callable(message) -> key or None`` that matches replies to ``request()``, e.g.
                ``wsclient.json_field("id")``; called only while a request is pending; one that raises is
                logged once and means "not a reply".
            backoff: Delays between attempts, a :class:`Backoff`: ``initial=0.5``, ``maximum=30``,
                ``multiplier=2``, ``jitter=True`` (full jitter), ``stable_after=10`` (seconds a session must
                last before the delays start again from ``initial``), ``overload_delay=5``,
                ``max_retry_after=300``.
            max_attempts: Give up (``GaveUp``) after this many failed attempts in a row: a connection that
                failed, or a session that dropped before ``Backoff.stable_after``; ``None``: never.
            max_outage: Give up after the client has been without an open session for this many seconds
                (short sessions in between restart the count; the first connect counts); ``None``: never.
            heartbeat: A :class:`Heartbeat`: ``interval=20``, ``timeout=10``, ``message=None`` (a protocol
                ping; a str/bytes/callable sends an application ping such as ``'{"op":"ping"}'``),
                ``missed_pongs=3`` (a late pong is forgiven while data keeps arriving, this many times in a
                row). Writes that stay blocked for a whole ``timeout`` with nothing taken by the server end
                the session as ``write_stalled``. ``None`` turns it off (and with it that detection). Reading
                paused because the application is not consuming never counts against the server;
                websockets' own keepalive is always off.
            idle_timeout: End the session when no data arrived for this many seconds (a feed that went
                quiet is dead); ``None``: never.
            reconnect_on_normal_close: Reconnect after the server closes with 1000 (or 1005, no code)
                instead of stopping.
            close_actions: ``{code: action}`` overrides of the close policy (an :class:`Action` or
                ``"reconnect"``, ``"stop"``, ``"fatal"``), or a callable over the whole ``SessionEnd``
                returning an action or ``None`` for the default.
            classify_error: ``callable(exc) -> Action | None`` override of the connect-error policy;
                ``None`` keeps the default.
            max_buffered: Messages ``send()`` may buffer while disconnected.
            overflow: When the outbox is full while disconnected: ``"error"`` (raise ``BufferFull``),
                ``"drop_oldest"`` (counted in ``stats.dropped``), or ``"wait"``.
            inbox_size: Received messages waiting for ``recv()``; when full the session stops reading (TCP
                backpressure), which is not mistaken for a dead peer. On picows the messages of one read
                from the socket are taken whole, and reading resumes once the reader took the inbox down to
                half; the same bound applies to what arrives while ``on_connect`` runs.
            open_timeout: Seconds for TCP, TLS and the handshake; ``on_connect`` gets as long again (a hook
                that hangs fails the attempt). ``None``: no limit.
            close_timeout: Bound of ``close()`` as a whole (flush and close handshake together) and of a
                server-initiated close; after it the transport is aborted.
            headers: Extra handshake headers, or a callable (plain or async) returning them before every
                attempt (fresh tokens). ``Authorization`` and ``Cookie`` never reach a log.
            subprotocols: Subprotocols to offer.
            ssl: An ``ssl.SSLContext`` for ``wss://``; by default one default context per client, reused on
                every reconnect.
            compression: ``"deflate"`` (permessage-deflate) or ``None`` (less memory per connection). The
                default is ``"deflate"`` on websockets and ``None`` on picows, which has no
                permessage-deflate: ``"deflate"`` with ``transport="picows"`` is a ``ValueError``.
            max_size: Largest message accepted, in bytes after decompression (1 MiB by default), exactly on
                both transports whether or not deflate was negotiated; a bigger one fails the connection with
                1009 (fatal, a ``FatalCloseError`` naming ``max_size``). With permessage-deflate a compressed
                frame may be a little larger than the message (incompressible data grows): that never makes a
                message under ``max_size`` fatal. ``None``: no limit.
            max_queue: Frames websockets buffers before it stops reading (the websockets transport; picows
                hands each message to the inbox as it is parsed).
            transport: The library under every session: ``"websockets"``, or ``"picows"`` (the ``fast``
                extra) for several times the receive throughput.
            proxy: ``True`` (the default): the proxy the environment names (``wss_proxy``, ``socks_proxy``,
                ``https_proxy``, ``http_proxy`` for ``ws://``, ``all_proxy``, ``no_proxy``), read the same way
                on both transports; a proxy URL (``http://``, ``https://``, ``socks5h://``, ``socks5://``,
                ``socks4://``, with ``user:password@``) forces one; ``None`` connects directly. A proxy's 407
                stops the client with ``ProxyRejected``; its credentials never reach a log or an error.

        Raises:
            TypeError: An argument of the wrong type, named in the message (a plain function as
                ``on_connect``, say).
            ValueError: An argument out of range or contradicting another, named in the message (a URL
                that is not ``ws://``/``wss://``, ``text=True`` with ``decode=False``, ``transport="picows"``
                without picows installed).
        """
        if compression is DEFAULT_COMPRESSION:
            # picows has no permessage-deflate: its default is no compression, and asking for it is an error.
            compression = None if transport == "picows" else "deflate"
        self.config = ClientConfig(
            url=url,
            on_connect=on_connect,
            on_message=on_message,
            on_disconnect=on_disconnect,
            on_state_change=on_state_change,
            reply_key=reply_key,
            backoff=backoff,
            max_attempts=max_attempts,
            max_outage=max_outage,
            heartbeat=heartbeat,
            idle_timeout=idle_timeout,
            reconnect_on_normal_close=reconnect_on_normal_close,
            close_actions=close_actions,  # type: ignore[arg-type]  # normalised by ClientConfig
            classify_error=classify_error,
            max_buffered=max_buffered,
            overflow=overflow,
            inbox_size=inbox_size,
            open_timeout=open_timeout,
            close_timeout=close_timeout,
            headers=headers,
            subprotocols=subprotocols,
            ssl=ssl,
            compression=compression,
            max_size=max_size,
            max_queue=max_queue,
            text=text,
            decode=decode,
            transport=transport,
            proxy=proxy,
        )
        self.stats = Stats()
        self._state = State.IDLE
        self._log = get_logger().bind(url=redact_url(url) if isinstance(url, str) else "<callable>")
        self._observers = Observers(self._log)
        self._state_listener: StateListener | None = None
        self._outage: Outage | None = None
        """The outage the observers were told started and not yet that it ended."""
        if on_state_change is not None:
            self._state_listener = StateListener(on_state_change, self._log)
            self._observers.add(self._state_listener)
        self._inbox: Inbox[M | SessionStart] = Inbox(inbox_size)
        self._reading: str | None = None
        """The session whose messages are at the head of the inbox (up to the next ``SessionStart``)."""
        self._received_from: str | None = None
        self._outbox: Outbox[Data] = Outbox(max_buffered, self.stats)
        self._requests = None if reply_key is None else Requests(reply_key, self.stats, self._log, self._is_stopping)
        self._supervisor = Supervisor(
            self.config,
            self.stats,
            self._outbox,
            self._make_deliver(),
            self._set_state,
            self._log,
            self._is_stopping,
            requests=self._requests,
            observers=self._observers,
        )
        self._task: asyncio.Task[None] | None = None
        self._end: BaseException | None = None
        self._closing = False
        self._finished = False

    def __repr__(self) -> str:
        return f"<wsclient.Client {self._state.value}>"

    # Lifecycle

    @property
    def state(self) -> State:
        """Where the client is: idle, connecting, open, reconnecting, closing or closed."""
        return self._state

    @property
    def session(self) -> Session | None:
        """The live session, or ``None`` between sessions."""
        return self._supervisor.session

    @property
    def received_from(self) -> str | None:
        """The id (:attr:`wsclient.Session.id`) of the session that received the message ``recv()`` returned last.

        A message read late may come from a session before the live one: it
        waited in the inbox while the application was busy. Ids that belong to
        one connection (subscriptions) must be looked up in that session's
        terms. ``None`` before the first message. In ``on_message``, the
        session delivering the message is :attr:`session`.
        """
        return self._received_from

    async def start(self) -> None:
        """Start the supervisor without waiting for the first session (``async with`` does both)."""
        if self._state is not State.IDLE:
            raise RuntimeError(f"client cannot start: it is {self._state.value}")
        self._set_state(State.CONNECTING)
        self._task = asyncio.create_task(self._run(), name="wsclient-supervisor")
        # A task cancelled before its first step never runs _run's cleanup: this callback always runs.
        self._task.add_done_callback(self._finish_closed)

    async def __aenter__(self) -> Client[M]:
        await self.start()
        try:
            await self.wait_open()
        except asyncio.CancelledError:
            await self._abort()
            raise
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def wait_open(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the public contract
        """Wait until a session is open; raise why the client stopped if it stops first.

        A session that opened and ended, after which the client stopped (a
        server that accepts, then closes with 1000), counts as open: its end
        is what ``recv()`` and ``wait_closed()`` report. Raises ``TimeoutError``
        after ``timeout`` seconds.

        Args:
            timeout: Seconds to wait at most; ``None``: no limit.

        Raises:
            TimeoutError: No session opened within ``timeout``.
            FatalError: The client stopped because retrying cannot help.
            GaveUp: The client stopped after ``max_attempts`` or ``max_outage``.
            ClientClosed: The client was closed first.
            RuntimeError: The client was not started.
        """
        check_timeout("timeout", timeout)
        if self._state is State.OPEN:
            return
        task = self._task
        if task is None:
            raise RuntimeError("client is not started: use 'async with client' or 'await client.start()'")
        sessions = self.stats.sessions
        async with asyncio.timeout(timeout):
            # A session may open and end before this task looks: keep waiting until one is open now.
            while not self._is_open():
                if self._closing or (task.done() and self.stats.sessions == sessions):
                    raise self._stopped_error()
                if task.done():
                    return
                opened = asyncio.create_task(self._supervisor.wait_opened())
                try:
                    await asyncio.wait({opened, task}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    opened.cancel()
                    await asyncio.wait({opened})

    async def wait_closed(self) -> None:
        """Wait until the client stopped for good (what ``on_message`` users wait on).

        Returns when it stopped cleanly (the server closed with 1000, or
        ``close()`` was called); raises the ``FatalError``/``GaveUp`` that stopped it otherwise.

        Raises:
            FatalError: What stopped the client, when retrying could not help.
            GaveUp: The client gave up after ``max_attempts`` or ``max_outage``.
            RuntimeError: The client was not started.
        """
        task = self._task
        if task is None:
            raise RuntimeError("client is not started: use 'async with client' or 'await client.start()'")
        await asyncio.wait({task})
        end = self._end
        if end is not None and not isinstance(end, ClientClosed):
            raise fresh_error(end)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Flush the outbox, close the session with ``code`` and stop reconnecting. Idempotent.

        No new session opens once ``close()`` was called. ``close_timeout``
        bounds the whole call, whatever the server does: past it, or if the
        call is cancelled, the connection is dropped without a handshake.
        Messages that could not be sent stay available from :meth:`unsent`.

        Args:
            code: The close code: 1000 (normal), 1001 (going away) or an application code 3000-4999.
            reason: The close reason, at most 123 bytes in UTF-8.

        Raises:
            ValueError: ``code`` or ``reason`` is not one a client may send.
        """
        if isinstance(code, bool) or not isinstance(code, int) or not (code in (1000, 1001) or 3000 <= code <= 4999):
            raise ValueError(f"code must be 1000, 1001 or an application code 3000-4999, got {code!r}")
        if not isinstance(reason, str) or len(reason.encode()) > 123:
            raise ValueError("reason must be a str of at most 123 bytes in UTF-8")
        task = self._task
        if task is None:
            if self._state is State.IDLE:
                self._set_state(State.CLOSED)
                self._finish(ClientClosed())
                if (listener := self._state_listener) is not None:
                    await listener.drain(self.config.close_timeout)
            return
        first = not self._closing
        self._closing = True
        if self._state not in (State.CLOSING, State.CLOSED):
            self._set_state(State.CLOSING)
        if asyncio.current_task() is task:
            # Called from on_connect or on_message: the supervisor ends once the callback returns.
            if first:
                await self._close_session(code, reason)
            return
        try:
            async with asyncio.timeout(self.config.close_timeout):
                if first:
                    await self._close_session(code, reason)
                await asyncio.wait({task})
        except TimeoutError:
            self._log.warning("close_timeout", unsent=len(self._outbox))
            await self._abort()
        except asyncio.CancelledError:
            await self._abort()
            raise

    async def _close_session(self, code: int, reason: str) -> None:
        session = self._supervisor.session
        task = self._task
        if session is None or not session.is_open:
            if task is not None and task is not asyncio.current_task():
                task.cancel()
            return
        if len(self._outbox) and session.flushing:
            await self._outbox.wait_until_empty()
        await session.close(code, reason)
        if not session.flushing and task is not None and task is not asyncio.current_task():
            # on_connect is still running and may not notice the close: stop it.
            task.cancel()

    async def _abort(self) -> None:
        """Drop the live connection and stop the supervisor now (``close()`` timed out or was cancelled).

        The supervisor ends within a few loop steps once cancelled; the wait is
        bounded all the same, in case an application callback holds on.
        """
        self._closing = True
        if (session := self._supervisor.session) is not None:
            session.abort(Cause.USER_CLOSE)
        if (task := self._task) is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task}, timeout=self.config.close_timeout)

    async def _run(self) -> None:
        """The supervisor task: keep the stream alive, then record why it stopped."""
        end: BaseException | None = None  # made when needed: this frame lives as long as the client
        try:
            last = await self._supervisor.run()
            end = ClientClosed(
                f"connection closed by the {last.closed_by.value} with code {last.code}", last.code, last.reason
            )
        except WsClientError as exc:
            end = exc
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._log.exception("supervisor_failed")
            end = exc
        finally:
            self._finish(ClientClosed() if end is None else end)
            if (listener := self._state_listener) is not None:
                # The listener hears of CLOSED before close() and wait_closed() return (bounded by close_timeout).
                await listener.drain(self.config.close_timeout)

    def _finish_closed(self, _: object) -> None:
        self._finish(ClientClosed())

    def _finish(self, end: BaseException) -> None:
        if self._finished:
            return
        self._finished = True
        self._end = end
        if (outage := self.stats.current_outage) is not None:
            outage.end = time.time()
        if self._state is not State.CLOSED:
            self._set_state(State.CLOSED)
        self._inbox.close(end)
        if (requests := self._requests) is not None and requests.pending:
            requests.fail_all(lambda request: self._request_error(request, end), self._outbox)
        self._outbox.close()
        if len(self._outbox):
            self._log.warning("unsent", messages=len(self._outbox))

    @staticmethod
    def _request_error(request: Request, end: BaseException) -> BaseException:
        if isinstance(end, ClientClosed):
            return ClientClosed(f"client closed before the reply to request {request.key!r}", end.code, end.reason)
        return fresh_error(end)

    def _set_state(self, new: State) -> None:
        if new is State.OPEN and self.config.on_message is None and (session := self._supervisor.session) is not None:
            self._started_reading(session.id)
        if self._closing and new in (State.OPEN, State.RECONNECTING):
            return
        old = self._state
        self._state = check_transition(old, new)
        self._log.debug("state", old=old.value, new=new.value)
        if old is State.OPEN:
            self._outbox.wake()
        if self._observers.all:
            self._observers.state_changed(self._change(old, new))

    def _change(self, old: State, new: State) -> StateChange:
        """The record of a change for the observers, with the outage it starts or ends."""
        outage = None
        if new is State.RECONNECTING:
            outage = self._outage = self.stats.current_outage
        elif (started := self._outage) is not None and started.end is not None:
            outage, self._outage = started, None
        return StateChange(old, new, time.time(), snapshot(outage))

    def _started_reading(self, session_id: str) -> None:
        """A session opened: the messages it delivers come after those still in the inbox, which came before it."""
        inbox = self._inbox
        if len(inbox):
            inbox.push(SessionStart(session_id))  # recv() takes it out of the stream
        else:
            self._reading = session_id  # an idle inbox stays without a queue

    def _is_open(self) -> bool:
        return self._state is State.OPEN

    def _is_stopping(self) -> bool:
        return self._closing or self._state is State.CLOSED

    def _stopped_error(self) -> BaseException:
        return fresh_error(self._end) if self._end is not None else ClientClosed()

    # Receiving

    def _make_deliver(self) -> Deliver:
        handler = self.config.on_message
        if handler is None:
            return self._inbox
        log, stats = self._log, self.stats
        quiet_until = 0.0
        reported = 0

        def failed(exc: BaseException) -> None:
            # A handler failing on every message must not log a traceback per message.
            nonlocal quiet_until, reported
            stats.handler_errors += 1
            now = time.monotonic()
            if now >= quiet_until:
                first = reported == 0
                log.error(
                    "on_message_failed",
                    errors=stats.handler_errors - reported,
                    error=describe_error(exc),
                    exc_info=exc if first else None,
                )
                reported = stats.handler_errors
                quiet_until = now + HANDLER_ERROR_LOG_INTERVAL

        return Handler(handler, failed, direct=not is_async_callable(handler))

    async def recv(self) -> M:
        """The next message, across reconnects.

        Raises ``ClientClosed`` once the client stopped cleanly and every
        received message was read, or the ``FatalError``/``GaveUp`` that stopped it.
        """
        if self.config.on_message is not None:
            raise RuntimeError("recv() is not available when on_message is set: messages go to the handler")
        if self._state is State.IDLE:
            raise RuntimeError("client is not started: use 'async with client' or 'await client.start()'")
        inbox = self._inbox
        while True:
            message = await inbox.get()
            if type(message) is not SessionStart:
                self._received_from = self._reading
                return message  # type: ignore[return-value]
            self._reading = message.session_id

    def __aiter__(self) -> Client[M]:
        return self

    async def __anext__(self) -> M:
        message = self._inbox.poll()
        if message is not None:  # only ever filled without on_message, once started: nothing for recv() to check
            if type(message) is not SessionStart:
                self._received_from = self._reading
                return message  # type: ignore[return-value]
            self._reading = message.session_id
        try:
            return await self.recv()
        except ClientClosed:
            raise StopAsyncIteration from None

    # Sending

    async def send(self, message: Data, *, ttl: float | None = None) -> None:
        """Send ``message`` now if a session is open, else buffer it for the next session.

        While a session is open, a full outbox makes ``send()`` wait. While
        disconnected, a full outbox raises ``BufferFull`` (``overflow="error"``),
        drops the oldest buffered message (``"drop_oldest"``) or waits (``"wait"``).
        With ``ttl``, a message not written within ``ttl`` seconds is dropped,
        never sent later, counted in ``stats.expired`` and logged (``expired``).
        A ``str`` that is not valid Unicode raises ``UnicodeEncodeError`` and
        changes nothing.

        Args:
            message: A ``str`` (sent as a text frame) or ``bytes``-like object (a binary frame).
            ttl: Seconds a buffered message may wait for a session; ``None``: no deadline.

        Raises:
            TypeError: ``message`` is neither ``str`` nor bytes-like.
            UnicodeEncodeError: ``message`` is a ``str`` that is not valid Unicode.
            ValueError: ``ttl`` is not a number of seconds > 0.
            ClientClosed: The client is closed or closing.
            BufferFull: The outbox is full while disconnected, with ``overflow="error"``.
        """
        payload, text = (message.encode(), True) if type(message) is str else to_payload(message)
        if ttl is not None:
            check_timeout("ttl", ttl)
        if self._closing or self._finished:
            raise ClientClosed("cannot send: client is closed")
        session = self._supervisor.session
        # The hot path: what _write() does, inline, with one read of is_open before the transport's own send().
        if session is not None and session.ready and not self._outbox.queue:
            transport = session.transport
            if transport.is_open:
                written = False
                try:
                    # A plain call while the write buffer is below its limit: no coroutine, nothing to cancel.
                    if (write := transport.write) is None:
                        await transport.send(payload, text=text)
                        # websockets returns normally when the connection is aborted while a send waits to drain.
                        written = transport.is_open
                    elif write(payload, text):
                        await transport.drained()
                        written = transport.is_open
                    else:
                        written = True
                except ConnectionClosed:
                    pass
                finally:
                    if written:
                        self.stats.messages_out += 1
                    else:
                        count_write(self.stats, written)
                        self._log.warning("send_interrupted", session_id=session.id)
                return
        await self._buffer(message, payload, text, ttl, None)

    async def _buffer(
        self,
        message: Data,
        payload: bytes | bytearray | memoryview,
        text: bool,
        ttl: float | None,
        request: Request | None,
    ) -> None:
        """Buffer ``message`` (in an envelope with a deadline or a request), or write it once a session takes it."""
        outbox = self._outbox
        deadline = None if ttl is None else asyncio.get_running_loop().time() + ttl
        while True:
            if not outbox.full():
                self._add(message, deadline, request)
                return
            if self._state is State.OPEN or self.config.overflow == "wait":
                # Woken by a flush, a ready session, close, or leaving OPEN (which applies the overflow policy).
                try:
                    async with asyncio.timeout_at(deadline):
                        await outbox.wait_for_space()
                except TimeoutError:
                    if deadline is None or asyncio.get_running_loop().time() < deadline:
                        raise
                    # Handed over, never buffered: it is accounted for all the same.
                    self.stats.expired += 1
                    self._log.warning("expired", reason="ttl", unsent=len(outbox))
                    return
                if self._is_stopping():
                    raise ClientClosed("cannot send: client closed while waiting for outbox space")
                session = self._supervisor.session
                if (
                    session is not None
                    and session.ready
                    and not outbox.queue
                    and session.transport.is_open
                    and (request is None or session.bind(request))
                ):
                    await self._write(session, payload, text)
                    return
            elif self.config.overflow == "drop_oldest":
                self._add(message, deadline, request, drop_oldest=True)
                self._log.warning("buffer_dropped_oldest", limit=outbox.limit)
                return
            else:
                raise BufferFull(outbox.limit)

    def _add(self, message: Data, deadline: float | None, request: Request | None, drop_oldest: bool = False) -> None:
        if deadline is None and request is None:
            self._outbox.add(message, drop_oldest=drop_oldest)
            return
        envelope = Envelope(message, request)
        self._outbox.add(envelope, drop_oldest=drop_oldest)
        if envelope.state is not Envelope.BUFFERED:
            return  # dropped at once by a zero-size outbox
        if request is not None:
            request.envelope = envelope
        if deadline is not None:
            envelope.timer = asyncio.get_running_loop().call_at(deadline, self._expire, envelope)

    def _expire(self, envelope: Envelope) -> None:
        if self._outbox.expire(envelope):
            self._log.warning("expired", reason="ttl", unsent=len(self._outbox))

    async def request(self, message: Data, *, key: Hashable, timeout: float | None = 10.0) -> M:  # noqa: ASYNC109 - the public contract
        """Send ``message`` and return its reply: the message for which ``reply_key`` returns ``key``.

        The message is sent like ``send()`` (buffered while disconnected). The
        reply resolves this call and is not delivered to ``recv()``,
        iteration or ``on_message``. Raises ``RequestTimeout`` after ``timeout``
        seconds (``None``: no limit), and if the message was still buffered
        then it is removed and never sent; ``RequestInterrupted`` at once when
        the session that carried it ends before the reply; ``ClientClosed``
        when the client is closed or closes first; ``ValueError`` if a request
        with ``key`` is already pending; ``RuntimeError`` at once on a client
        never started, and in ``on_connect`` or ``on_disconnect``, where the
        reply could only come after the callback returned (in ``on_connect``,
        :meth:`wsclient.Session.request` is the way). In ``on_message`` it
        works on both transports: replies are read while the handler waits.

        Args:
            message: The request, as for :meth:`send`.
            key: The key ``reply_key`` finds in the reply to this request.
            timeout: Seconds to wait for the reply; ``None``: no limit.

        Returns:
            The reply, typed as the client's messages are.

        Raises:
            RequestTimeout: No reply within ``timeout``.
            RequestInterrupted: The session that carried the request ended before the reply.
            ClientClosed: The client is closed, or closes before the reply.
            ValueError: A request with ``key`` is already pending.
            RuntimeError: The client has no ``reply_key``, was never started, or the call is made in
                ``on_connect`` or ``on_disconnect``.
        """
        if not self._observers.all:
            return await self._request(message, key, timeout)
        done = self._observers.request_started(key)
        try:
            reply = await self._request(message, key, timeout)
        except BaseException as exc:
            done(exc)
            raise
        done(None)
        return reply

    async def _request(self, message: Data, key: Hashable, timeout: float | None) -> M:  # noqa: ASYNC109
        requests = self._requests
        if requests is None:
            raise RuntimeError("request() needs a reply_key: Client(..., reply_key=wsclient.json_field('id'))")
        check_timeout("timeout", timeout)
        payload, text = to_payload(message)
        if self._state is State.IDLE:
            raise RuntimeError("client is not started: use 'async with client' or 'await client.start()'")
        if self._closing or self._finished:
            raise ClientClosed("cannot send a request: client is closed")
        if asyncio.current_task() is self._task and not ((session := self._supervisor.session) and session.flushing):
            # The supervisor runs on_connect and on_disconnect, and reads no reply until they return.
            raise RuntimeError(
                "client.request() in on_connect or on_disconnect would wait for a reply that is read only after"
                " the callback returns: use session.request() in on_connect"
            )
        request = requests.add(key)
        try:
            async with asyncio.timeout(timeout) as deadline:
                session = self._supervisor.session
                if (
                    session is not None
                    and session.ready
                    and not self._outbox.queue
                    and session.transport.is_open
                    and session.bind(request)
                ):
                    await self._write(session, payload, text)
                else:
                    await self._buffer(message, payload, text, None, request)
                reply: M = await request.future
                return reply
        except TimeoutError:
            if deadline.expired():
                raise RequestTimeout(key, timeout or 0.0, request.sent) from None
            raise
        finally:
            if requests.forget(request, self._outbox):
                # Timed out or cancelled while buffered: it will never be sent.
                self._log.warning("expired", reason="request", unsent=len(self._outbox))

    async def _write(self, session: Session, payload: bytes | bytearray | memoryview, text: bool) -> None:
        """Write into the open session; the message counts as written or interrupted on every way out."""
        written = False
        transport = session.transport
        try:
            if (write := transport.write) is None:
                await transport.send(payload, text=text)
                # websockets returns normally when the connection is aborted while a send waits to drain.
                written = transport.is_open
            elif write(payload, text):
                await transport.drained()
                written = transport.is_open
            else:
                written = True
        except ConnectionClosed:
            pass
        finally:
            count_write(self.stats, written)
            if not written:
                self._log.warning("send_interrupted", session_id=session.id)

    def unsent(self) -> list[Data]:
        """Messages handed to ``send()`` that no session has written yet (all of them, once closed)."""
        return self._outbox.items()
