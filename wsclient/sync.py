"""The same resilient client for code without asyncio: ``from wsclient.sync import Client``.

A sync ``Client`` drives a :class:`wsclient.Client` on an event loop of its
own, in one background thread, so reconnection, heartbeat, outbox and policy
are the asyncio client's, not a second implementation. Blocking calls hand a
coroutine to that loop and wait for it, with a ``timeout``; a small ``send()``
while a session is open is handed over without waiting for the write (a
bounded number at a time); received messages cross to the reading thread
through a bounded, thread-safe inbox, without a wake-up per message while the
reader keeps up.

Callbacks (``on_connect``, ``on_message``, ``on_disconnect``, ``on_state_change``, and ``url``/``headers`` when given
as callables) are plain functions. They run in a second background thread,
one per client, one at a time and in the order their events happened, so a
slow callback never stalls the connection's heartbeat and an ``on_connect``
may block on ``session.send()``/``session.recv()`` without deadlocking.

Every ``timeout`` is checked as the asyncio client checks it, before
anything is scheduled: a number of seconds > 0 (``nan`` is a ``ValueError``,
``"1"`` a ``TypeError`` naming the argument), or ``None`` for no limit; a
timeout too long for a thread to wait (``inf``) is no limit either.

A client belongs to the process that started it: after ``os.fork()`` the
child has neither its threads nor a connection of its own. In the child,
``close()`` returns at once and leaves the parent's connection alone, and
every other call raises ``RuntimeError``: make a new client in the child.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
import os
import ssl as ssl_module
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack, overload

import structlog
from typing_extensions import TypeVar as DefaultTypeVar

import wsclient
from wsclient.config import DEFAULT_COMPRESSION, CloseActions, Overflow, check_timeout

__all__ = ["Client", "Session"]

T = TypeVar("T")
Data = wsclient.Data
M = DefaultTypeVar("M", str, bytes, Data, default=Data)
"""What the client delivers: ``str`` with ``text=True``, ``bytes`` with ``decode=False``, else ``str | bytes``."""

_CALLBACKS = ("on_connect", "on_message", "on_disconnect", "on_state_change", "url", "headers")
"""Arguments that may be plain functions, run in the callback thread (``url``/``headers`` also as values)."""
_PLAIN_CALLBACKS = ("url", "headers", "on_disconnect", "on_state_change")
"""Callbacks whose arguments and result cross threads unchanged: a new one such as ``on_disconnect`` goes here."""

_log = structlog.get_logger("wsclient")

_QUICK_SIZE = 65536
"""Largest ``str``/``bytes`` (in characters or bytes) that ``send()`` hands to the loop without waiting."""
_QUICK_WINDOW = 16
"""Messages handed over without waiting that may be on their way at once; past them ``send()`` waits again."""


def _wait(name: str, timeout: object) -> float | None:
    """Check ``timeout`` as the asyncio client does and say how long a thread waits: ``None`` for no limit.

    A timeout beyond what a thread can wait (``inf``, ``1e300``) is no limit,
    where ``threading`` would raise ``OverflowError``.
    """
    check_timeout(name, timeout)
    if timeout is None or timeout >= threading.TIMEOUT_MAX:  # type: ignore[operator]
        return None
    return timeout  # type: ignore[return-value]


class _Inbox:
    """A bounded FIFO filled on the event loop and emptied by threads.

    ``put()`` appends without taking a lock unless a reader waits; when the
    inbox is full it returns a future the loop awaits (the session then stops
    reading: TCP backpressure), released once readers drained half of it.
    Readers block on a condition only when the inbox is empty.
    """

    def __init__(self, limit: int) -> None:
        self._items: deque[Any] = deque()
        self._limit = limit
        self._low = limit // 2
        self._lock = threading.Lock()
        self._nonempty = threading.Condition(self._lock)
        self._readers_waiting = 0
        self._space: asyncio.Future[None] | None = None
        self._end: BaseException | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # The event loop's side.

    def put(self, item: Any) -> Awaitable[None] | None:
        """Append ``item``; return a future to await when the inbox is full."""
        items = self._items
        items.append(item)
        if self._readers_waiting:
            with self._lock:
                self._nonempty.notify()
        if len(items) >= self._limit:
            with self._lock:
                if len(items) >= self._limit and self._end is None and self.loop is not None:
                    self._space = self.loop.create_future()
                    return self._space
        return None

    def put_now(self, item: Any) -> None:
        """Append ``item`` whatever the limit (callback jobs, which must not wait behind messages)."""
        with self._lock:
            self._items.append(item)
            self._nonempty.notify()

    def close(self, end: BaseException) -> None:
        """Let readers drain what is left, then raise ``end``."""
        with self._lock:
            if self._end is None:
                self._end = end
            self._nonempty.notify_all()
            self._release_space()

    # The readers' side.

    def get(self, timeout: float | None = None) -> Any:
        """The oldest item; the closing exception once closed and drained; ``TimeoutError`` after ``timeout``."""
        try:
            item = self._items.popleft()
        except IndexError:
            return self._wait(timeout)
        if self._space is not None and len(self._items) <= self._low:
            with self._lock:
                self._release_space()
        return item

    def _wait(self, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            # Counted before looking, so a put() that comes after the look sees a waiting reader.
            self._readers_waiting += 1
            try:
                while not self._items:
                    self._release_space()
                    if self._end is not None:
                        raise self._end.with_traceback(None)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"no message within {timeout} s")
                    self._nonempty.wait(remaining)
            finally:
                self._readers_waiting -= 1
            return self._items.popleft()

    def _release_space(self) -> None:
        # Called with the lock held.
        space, self._space = self._space, None
        if space is not None and self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(_resolve, space, None)


def _resolve(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class _Job:
    """A plain callback to run in the callback thread, its outcome reported to the loop."""

    __slots__ = ("args", "cancelled", "function", "future", "loop")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], loop: asyncio.AbstractEventLoop) -> None:
        self.function = function
        self.args = args
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.cancelled = False

    def run(self) -> None:
        if self.cancelled:
            return
        try:
            result = self.function(*self.args)
        except BaseException as exc:
            report: Callable[..., None] = _fail
            outcome: Any = exc
        else:
            report, outcome = _resolve, result
        with contextlib.suppress(RuntimeError):  # the loop is closed: the client stopped while the callback ran
            self.loop.call_soon_threadsafe(report, self.future, outcome)


class _Portal:
    """The event loop thread of one client, the callback thread, and the calls between them and the user's threads.

    It holds no reference to the sync ``Client``, so that a client the
    application forgot to close can be collected and its finalizer stop them.
    """

    client: wsclient.Client[Any]

    def __init__(self, inbox: _Inbox, callbacks: _Inbox | None) -> None:
        self.inbox = inbox
        self.callbacks = callbacks
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: threading.Thread | None = None
        self.callback_thread: threading.Thread | None = None
        self.end: BaseException | None = None
        self.ended = threading.Event()
        self.pid = os.getpid()
        """The process that started the threads: a child of ``os.fork()`` has none of them."""
        self._lock = threading.Lock()
        self._accepting = False
        self._started = threading.Event()
        self._calls: dict[concurrent.futures.Future[Any], asyncio.Task[Any]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._sends: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        """Messages handed over by :meth:`send_soon` whose send has not ended yet (guarded by ``_lock``)."""
        self.close_requested = False
        """Set (under ``_lock``) before a close is scheduled: no ``send_soon()`` may then race it."""
        self.failed_sends: list[Any] = []
        """Messages handed over without waiting that the client refused (it stopped first): still unsent."""

    # Lifecycle.

    def forked(self) -> bool:
        """Whether this is a child of ``os.fork()``, where the client's threads do not exist."""
        return os.getpid() != self.pid

    def start(self, on_message: Callable[[Any], object] | None) -> None:
        self.pid = os.getpid()
        context = contextvars.copy_context()
        self.loop_thread = threading.Thread(target=context.run, args=(self._thread_main,), name="wsclient-loop")
        self.loop_thread.start()
        self._started.wait()
        if self.callbacks is not None:
            # A daemon: it runs the application's callbacks, which nothing can bound; the loop thread
            # is not, and the interpreter's exit closes the client first (see _close_at_exit).
            self.callback_thread = threading.Thread(
                target=context.copy().run,
                args=(_run_callbacks, self.callbacks, on_message),
                name="wsclient-callbacks",
                daemon=True,
            )
            self.callback_thread.start()
        _live.add(self)

    def _thread_main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        """The loop thread's one task: run the client until it stops, then settle every pending call."""
        loop = self.loop = self.inbox.loop = asyncio.get_running_loop()
        if self.callbacks is not None:
            self.callbacks.loop = loop
        with self._lock:
            self._accepting = True
        self._started.set()
        end: BaseException = wsclient.ClientClosed()
        try:
            await self.client.start()
            await self.client.wait_closed()
            stats = self.client.stats
            end = wsclient.ClientClosed("client is closed", stats.last_close_code, stats.last_close_reason or "")
        except Exception as exc:
            end = exc
        finally:
            with self._lock:
                self._accepting = False
            # Calls scheduled before the gate closed start on the next turn of the loop; then wait for them.
            await asyncio.sleep(0)
            if pending := set(self._calls.values()) | self._closing | self._sends:
                await asyncio.wait(pending)
            self.end = end
            self.inbox.close(end)
            if self.callbacks is not None:
                self.callbacks.close(end)
            self.ended.set()

    def request_close(self, code: int = 1000, reason: str = "") -> None:
        """Start closing without waiting (a finalizer or the interpreter's exit may call this from any thread)."""
        if self.forked():
            return  # the connection is the parent's
        with self._lock:
            if self._accepting and self.loop is not None:
                self.close_requested = True
                self.loop.call_soon_threadsafe(self._close_soon, code, reason)

    def _close_soon(self, code: int, reason: str) -> None:
        assert self.loop is not None
        task = self.loop.create_task(self.client.close(code, reason))
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task[None]) -> None:
        self._closing.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _log.error("close_failed", exc_info=error)

    def join(self, timeout: float | None) -> bool:
        """Wait for both threads to end (except the calling one); False if ``timeout`` ran out first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        current = threading.current_thread()
        for thread in (self.loop_thread, self.callback_thread):
            if thread is None or thread is current:
                continue
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
        return True

    # Calls from the user's threads into the loop.

    def call(
        self, timeout: float | None, function: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any
    ) -> T:
        """Run ``function(*args, **kwargs)`` on the loop and wait for its result, at most ``timeout`` seconds."""
        if threading.current_thread() is self.loop_thread:
            raise RuntimeError("a blocking call from the client's own event loop thread would deadlock")
        if self.forked():
            raise RuntimeError(f"this client belongs to process {self.pid}: after os.fork(), make a new client")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if not self._accepting or self.loop is None:
                raise wsclient.ClientClosed("client is closed") from self.end
            self.loop.call_soon_threadsafe(self._begin, future, partial(function, *args, **kwargs))
        try:
            return future.result(timeout)
        except BaseException:
            # A timeout or a KeyboardInterrupt: the call must not go on without its caller.
            if not future.done() and not future.cancel():
                with self._lock:
                    if self._accepting and self.loop is not None:
                        self.loop.call_soon_threadsafe(self._cancel, future)
            raise

    def send_soon(self, send: Callable[..., Coroutine[Any, Any, None]], message: Data, ttl: float | None) -> bool:
        """Hand ``send(message, ttl=ttl)`` to the loop without waiting for it; False if the caller must wait instead.

        The caller waits (``call()``) when ``_QUICK_WINDOW`` messages are still
        on their way (a slow connection: backpressure), once a close was
        requested (so a quick send never races it), and from the loop's thread.
        """
        if threading.current_thread() is self.loop_thread:
            return False
        with self._lock:
            if not self._accepting or self.loop is None or self.close_requested or self._in_flight >= _QUICK_WINDOW:
                return False
            self._in_flight += 1
            self.loop.call_soon_threadsafe(self._start_send, send, message, ttl)
        return True

    def _start_send(self, send: Callable[..., Coroutine[Any, Any, None]], message: Data, ttl: float | None) -> None:
        assert self.loop is not None
        if sys.version_info >= (3, 12):
            # The write happens now, in this callback, not one turn of the loop later; it usually ends here too.
            task = asyncio.Task(self._send(send, message, ttl), loop=self.loop, eager_start=True)
            if task.done():
                return
        else:
            task = self.loop.create_task(self._send(send, message, ttl))
        self._sends.add(task)

    async def _send(self, send: Callable[..., Coroutine[Any, Any, None]], message: Data, ttl: float | None) -> None:
        """A send handed over by :meth:`send_soon`, accounted for on every way out, with no done callback."""
        error: BaseException | None = None
        try:
            await send(message, ttl=ttl)
        except BaseException as exc:
            error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._sends.discard(asyncio.current_task())
            with self._lock:
                self._in_flight -= 1
            if error is not None:
                # The client stopped (or its outbox filled up) between the caller's look and the loop's turn.
                self.failed_sends.append(message)
                _log.warning("send_failed", error=type(error).__name__, unsent=len(self.failed_sends))

    def _begin(self, future: concurrent.futures.Future[T], function: Callable[[], Coroutine[Any, Any, T]]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        assert self.loop is not None
        # The coroutine is made here, on the loop: a call that never starts leaves none un-awaited.
        task = self.loop.create_task(function())
        self._calls[future] = task
        task.add_done_callback(lambda done: self._settle(future, done))

    def _settle(self, future: concurrent.futures.Future[T], task: asyncio.Task[T]) -> None:
        self._calls.pop(future, None)
        if task.cancelled():
            future.set_exception(wsclient.ClientClosed("cancelled: the client is closing"))
        elif (error := task.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())

    def _cancel(self, future: concurrent.futures.Future[Any]) -> None:
        task = self._calls.get(future)
        if task is not None:
            task.cancel()

    # Calls from the loop into the callback thread.

    async def run_callback(self, function: Callable[..., T], *args: Any) -> T:
        """Run a plain callback in the callback thread, after every callback and message queued before it."""
        assert self.callbacks is not None
        assert self.loop is not None
        job = _Job(function, args, self.loop)
        self.callbacks.put_now(job)
        try:
            return await job.future  # type: ignore[no-any-return]
        except asyncio.CancelledError:
            job.cancelled = True
            raise


def _run_callbacks(queue: _Inbox, on_message: Callable[[Any], object] | None) -> None:
    """The callback thread: run jobs and deliver messages one at a time until the client stopped."""
    while True:
        try:
            item = queue.get()
        except BaseException:
            return
        if type(item) is _Job:
            item.run()
            continue
        assert on_message is not None
        try:
            on_message(item)
        except Exception:
            _log.exception("on_message_failed")


_live: weakref.WeakSet[_Portal] = weakref.WeakSet()
_at_exit_registered = False
_registry_lock = threading.Lock()


def _close_at_exit() -> None:
    """Close every client still running when the main thread ends, before the interpreter joins threads."""
    portals = [portal for portal in _live if not portal.forked()]
    for portal in portals:
        portal.request_close(1001, "going away")
    for portal in portals:
        portal.join(2 * portal.client.config.close_timeout + 1)


def _register_at_exit() -> None:
    global _at_exit_registered
    with _registry_lock:
        if not _at_exit_registered:
            # Runs before non-daemon threads are joined (concurrent.futures does the same), unlike atexit.
            threading._register_atexit(_close_at_exit)  # type: ignore[attr-defined]
            _at_exit_registered = True


def _grace(timeout: float | None) -> float | None:
    """How long a thread waits for a call that ends itself after ``timeout``: a little longer, so its error wins.

    ``timeout`` was checked (see :func:`_wait`).
    """
    wait = _wait("timeout", timeout)
    return None if wait is None or wait + 1.0 >= threading.TIMEOUT_MAX else wait + 1.0


def _wrap_plain(portal: _Portal, function: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    """An async callable that runs ``function`` in the callback thread."""

    async def callback(*args: Any) -> T:
        return await portal.run_callback(function, *args)

    return callback


def _wrap_on_connect(
    portal: _Portal, on_connect: Callable[[Session], object]
) -> Callable[[wsclient.Session], Awaitable[None]]:
    """An async ``on_connect`` that runs the plain one in the callback thread, with a blocking session."""

    async def callback(session: wsclient.Session) -> None:
        await portal.run_callback(on_connect, Session(session, portal))

    return callback


class Session:
    """One live connection as a plain ``on_connect`` sees it: ``send()`` and ``recv()`` block.

    The same connection as :class:`wsclient.Session`; each call waits at most
    ``timeout`` seconds (``TimeoutError``), forever when ``None``.
    """

    def __init__(self, session: wsclient.Session, portal: _Portal) -> None:
        self._session = session
        self._portal = portal
        self.id = session.id

    def __repr__(self) -> str:
        return f"<wsclient.sync.Session {self.id}>"

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""
        return self._session.subprotocol

    @property
    def response_headers(self) -> Mapping[str, str]:
        """The headers of the server's handshake response."""
        return self._session.response_headers

    @property
    def is_open(self) -> bool:
        """Whether the connection is open: neither closing nor closed."""
        return self._session.is_open

    def send(self, message: Data, *, timeout: float | None = None) -> None:
        """Send on this connection now (no buffering); raises ``ConnectionClosed`` if it is gone.

        Args:
            message: A ``str`` (a text frame) or ``bytes`` (a binary frame).
            timeout: Seconds to wait at most; ``None``: no limit.

        Raises:
            websockets.exceptions.ConnectionClosed: The connection is closed or closing.
            TimeoutError: The send did not finish within ``timeout``.
        """
        self._portal.call(_wait("timeout", timeout), self._session.send, message)

    def recv(self, timeout: float | None = None) -> Data:
        """Receive the next message of this connection; ``TimeoutError`` after ``timeout`` seconds.

        Args:
            timeout: Seconds to wait at most; ``None``: no limit.

        Raises:
            TimeoutError: No message within ``timeout``.
            websockets.exceptions.ConnectionClosed: The connection ended.
        """
        return self._portal.call(_wait("timeout", timeout), self._session.recv)

    def request(self, message: Data, *, key: Hashable, timeout: float | None = 10.0) -> Data:
        """Send on this connection and return the reply matched to ``key``, as :meth:`wsclient.Session.request`.

        Args:
            message: The request.
            key: The key ``reply_key`` finds in the reply.
            timeout: Seconds to wait for the reply; ``None``: no limit.

        Raises:
            RequestTimeout: No reply within ``timeout``.
            RequestInterrupted: The session ended before the reply.
        """
        return self._portal.call(_grace(timeout), partial(self._session.request, message, key=key, timeout=timeout))


class Options(TypedDict, total=False):
    """The keyword arguments of the sync :class:`Client` besides ``url``, ``text``, ``decode`` and ``on_message``.

    They are :class:`wsclient.Client`'s, with plain functions where it takes async ones.
    """

    on_connect: Callable[[Session], None] | None
    on_disconnect: Callable[[wsclient.SessionEnd], None] | None
    on_state_change: Callable[[wsclient.StateChange], None] | None
    reply_key: Callable[[Any], Hashable | None] | None
    backoff: wsclient.Backoff
    max_attempts: int | None
    max_outage: float | None
    heartbeat: wsclient.Heartbeat | None
    idle_timeout: float | None
    reconnect_on_normal_close: bool
    close_actions: CloseActions | None
    classify_error: Callable[[BaseException], wsclient.Action | None] | None
    max_buffered: int
    overflow: Overflow
    inbox_size: int
    open_timeout: float | None
    close_timeout: float
    headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None
    subprotocols: Sequence[str] | None
    ssl: ssl_module.SSLContext | None
    compression: str | None
    max_size: int | None
    max_queue: int
    transport: Literal["websockets", "picows"]
    proxy: str | Literal[True] | None


class Client(Generic[M]):
    """A WebSocket connection that stays up, for code without asyncio.

    Takes the same arguments as :class:`wsclient.Client` and behaves the same
    way: ``with Client(url) as client:`` returns once a session is open (or
    raises ``FatalError``/``GaveUp``) and leaving it flushes and closes with
    1000; ``recv()`` and ``for message in client`` give one stream across
    reconnects. Every method may be called from any thread. Typed as the
    asyncio client is: ``Client(url, text=True)`` is a ``Client[str]``,
    ``Client(url, decode=False)`` a ``Client[bytes]``.

    ``on_connect(session)``, ``on_message(message)``, ``on_disconnect(end)``,
    ``on_state_change(change)`` and callable ``url`` and ``headers`` are plain
    functions, run one at a time and in order in one
    callback thread per client (started only when there is a callback); the
    client's event loop runs in another thread, which ends with the client.
    ``classify_error`` and ``reply_key`` run on the event loop: keep them quick, pure functions.
    """

    @overload
    def __init__(
        self: Client[str],
        url: str | Callable[[], str],
        *,
        text: Literal[True],
        on_message: Callable[[str], None] | None = None,
        **options: Unpack[Options],
    ) -> None: ...

    @overload
    def __init__(
        self: Client[bytes],
        url: str | Callable[[], str],
        *,
        text: Literal[False] = False,
        decode: Literal[False],
        on_message: Callable[[bytes], None] | None = None,
        **options: Unpack[Options],
    ) -> None: ...

    @overload
    def __init__(
        self: Client[Data],
        url: str | Callable[[], str],
        *,
        text: Literal[False] = False,
        decode: Literal[True] = True,
        on_message: Callable[[Data], None] | None = None,
        **options: Unpack[Options],
    ) -> None: ...

    def __init__(
        self,
        url: str | Callable[[], str],
        *,
        text: bool = False,
        decode: bool = True,
        on_connect: Callable[[Session], None] | None = None,
        on_message: Callable[[Any], None] | None = None,
        on_disconnect: Callable[[wsclient.SessionEnd], None] | None = None,
        on_state_change: Callable[[wsclient.StateChange], None] | None = None,
        reply_key: Callable[[Any], Hashable | None] | None = None,
        backoff: wsclient.Backoff = wsclient.Backoff(),
        max_attempts: int | None = None,
        max_outage: float | None = None,
        heartbeat: wsclient.Heartbeat | None = wsclient.Heartbeat(),
        idle_timeout: float | None = None,
        reconnect_on_normal_close: bool = False,
        close_actions: CloseActions | None = None,
        classify_error: Callable[[BaseException], wsclient.Action | None] | None = None,
        max_buffered: int = 1024,
        overflow: Overflow = "error",
        inbox_size: int = 1024,
        open_timeout: float | None = 10.0,
        close_timeout: float = 10.0,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        subprotocols: Sequence[str] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        compression: Any = DEFAULT_COMPRESSION,
        max_size: int | None = 2**20,
        max_queue: int = 16,
        transport: Literal["websockets", "picows"] = "websockets",
        proxy: str | Literal[True] | None = True,
    ) -> None:
        """Check every argument (in the caller's thread) and make the client; nothing starts yet.

        Every argument means what it means for :class:`wsclient.Client`, and
        is checked the same way; only the callbacks differ: they are plain
        functions, run in the client's callback thread.

        Args:
            url: A ``ws://`` or ``wss://`` URL, or a plain function returning one before every attempt.
            text: Every message is a ``str`` (binary frames decoded as UTF-8); the client is a ``Client[str]``.
            decode: ``False``: text messages arrive as ``bytes``, not decoded; the client is a ``Client[bytes]``.
            on_connect: ``def on_connect(session: wsclient.sync.Session) -> None``, on every fresh session,
                before buffered sends go out; ``session.send()``/``recv()``/``request()`` block.
            on_message: ``def on_message(message) -> None``, called with each message instead of ``recv()``
                and iteration; what it raises is logged and counted, not fatal.
            on_disconnect: ``def on_disconnect(end: wsclient.SessionEnd) -> None``, after every session that opened.
            on_state_change: ``def on_state_change(change: wsclient.StateChange) -> None``, told of every state
                change and outage, in order, in the callback thread.
            reply_key: Finds in a message the key of the request it answers, or ``None``.
            backoff: Delays between attempts (:class:`wsclient.Backoff`).
            max_attempts: Give up (``GaveUp``) after this many failed attempts in a row.
            max_outage: Give up after this many seconds without an open session.
            heartbeat: Pings and the dead-peer verdict (:class:`wsclient.Heartbeat`); ``None`` turns it off.
            idle_timeout: End the session when no data arrived for this many seconds.
            reconnect_on_normal_close: Reconnect after the server closes with 1000 or 1005.
            close_actions: Overrides of the close policy: ``{code: action}`` or a function of the ``SessionEnd``.
            classify_error: Override of the connect-error policy: ``exc -> Action | None``; runs on the loop.
            max_buffered: Messages ``send()`` may buffer while disconnected.
            overflow: When the outbox is full: ``"error"`` (``BufferFull``), ``"drop_oldest"`` or ``"wait"``.
            inbox_size: Received messages waiting for ``recv()`` before the session stops reading.
            open_timeout: Seconds for TCP, TLS and the handshake (``on_connect`` gets as long again).
            close_timeout: Bound of ``close()`` and of a server-initiated close.
            headers: Extra handshake headers, or a plain function returning them before every attempt.
            subprotocols: Subprotocols to offer.
            ssl: The ``ssl.SSLContext`` for ``wss://``.
            compression: ``"deflate"`` (permessage-deflate, websockets only) or ``None``.
            max_size: Largest message accepted, in bytes; ``None`` for no limit.
            max_queue: Frames websockets buffers before it stops reading (websockets transport).
            transport: ``"websockets"`` or ``"picows"`` (the ``fast`` extra).
            proxy: ``True``: the proxy the environment names; a proxy URL; ``None``: connect directly.

        Raises:
            TypeError: An argument of the wrong type, or an ``async def`` callback (use ``wsclient.Client``).
            ValueError: An argument out of range, named in the message.
        """
        options: dict[str, Any] = {
            "text": text,
            "decode": decode,
            "on_connect": on_connect,
            "on_message": on_message,
            "on_disconnect": on_disconnect,
            "on_state_change": on_state_change,
            "reply_key": reply_key,
            "backoff": backoff,
            "max_attempts": max_attempts,
            "max_outage": max_outage,
            "heartbeat": heartbeat,
            "idle_timeout": idle_timeout,
            "reconnect_on_normal_close": reconnect_on_normal_close,
            "close_actions": close_actions,
            "classify_error": classify_error,
            "max_buffered": max_buffered,
            "overflow": overflow,
            "inbox_size": inbox_size,
            "open_timeout": open_timeout,
            "close_timeout": close_timeout,
            "headers": headers,
            "subprotocols": subprotocols,
            "ssl": ssl,
            "compression": compression,
            "max_size": max_size,
            "max_queue": max_queue,
            "transport": transport,
            "proxy": proxy,
        }
        sources: dict[str, Any] = {name: url if name == "url" else options.get(name) for name in _CALLBACKS}
        for name, value in sources.items():
            if value is None or (name in _PLAIN_CALLBACKS and not callable(value)):
                continue  # a plain url or headers value: the asyncio client checks it
            if not callable(value):
                raise TypeError(f"{name} must be callable, got {type(value).__name__}")
            if inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(getattr(value, "__call__", None)):  # noqa: B004
                raise TypeError(f"{name} must be a plain function for wsclient.sync.Client; use wsclient.Client")
        size = options.get("inbox_size", 1024)
        inbox = _Inbox(size if isinstance(size, int) and size > 0 else 1)
        callbacks = _Inbox(inbox._limit) if any(callable(value) for value in sources.values()) else None
        portal = _Portal(inbox, callbacks)
        # The wrappers hold the portal, never this object, so that a forgotten client can be collected.
        wrapped: dict[str, Any] = {"url": url, **options}
        for name in _PLAIN_CALLBACKS:
            if callable(sources[name]):
                wrapped[name] = _wrap_plain(portal, sources[name])
        if (on_connect := sources["on_connect"]) is not None:
            wrapped["on_connect"] = _wrap_on_connect(portal, on_connect)
        on_message = sources["on_message"]
        wrapped["on_message"] = callbacks.put if callbacks is not None and on_message is not None else inbox.put
        target = wrapped.pop("url")
        # The asyncio client checks every argument, here in the caller's thread.
        self._client: wsclient.Client[M] = wsclient.Client(target, **wrapped)
        portal.client = self._client
        self._portal = portal
        self._on_message: Callable[[Any], object] | None = on_message
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<wsclient.sync.Client {self.state.value}>"

    # Lifecycle.

    @property
    def state(self) -> wsclient.State:
        """Where the client is: idle, connecting, open, reconnecting, closing or closed."""
        return self._client.state

    @property
    def stats(self) -> wsclient.Stats:
        """Counters and the outage history, as :attr:`wsclient.Client.stats`."""
        return self._client.stats

    def start(self) -> None:
        """Start the background thread and the supervisor without waiting for a session."""
        if self._portal.loop_thread is not None or self._client.state is not wsclient.State.IDLE:
            raise RuntimeError(f"client cannot start: it is {self._client.state.value}")
        _register_at_exit()
        self._portal.start(self._on_message)
        # A client the application forgot to close is closed when collected; the thread holds no reference to it.
        self._finalizer = weakref.finalize(self, self._portal.request_close)

    def wait_open(self, timeout: float | None = None) -> None:
        """Wait until a session is open; raise why the client stopped if it stops first.

        Raises ``TimeoutError`` after ``timeout`` seconds.

        Args:
            timeout: Seconds to wait at most; ``None``: no limit.

        Raises:
            TimeoutError: No session opened within ``timeout``.
            FatalError: The client stopped because retrying cannot help.
            GaveUp: The client stopped after ``max_attempts`` or ``max_outage``.
            RuntimeError: The client was not started.
        """
        grace = _grace(timeout)
        self._check_started()
        portal = self._portal
        try:
            portal.call(grace, self._client.wait_open, timeout)
            return
        except wsclient.ClientClosed:
            # The client stopped before the call reached its loop: say why it stopped.
            portal.ended.wait()
            end = portal.end
            if end is None:
                raise
        # Raised out of the except clause: what stopped the client keeps its own cause and context.
        raise end.with_traceback(None)

    def wait_closed(self, timeout: float | None = None) -> None:
        """Wait until the client stopped for good (what ``on_message`` users wait on).

        Returns when it stopped cleanly; raises the ``FatalError``/``GaveUp``
        that stopped it otherwise, and ``TimeoutError`` after ``timeout`` seconds.

        Args:
            timeout: Seconds to wait at most; ``None``: no limit.

        Raises:
            TimeoutError: The client still runs after ``timeout``.
            FatalError: What stopped the client, when retrying could not help.
            GaveUp: The client gave up after ``max_attempts`` or ``max_outage``.
            RuntimeError: The client was not started, or this is a callback.
        """
        wait = _wait("timeout", timeout)
        self._check_started()
        self._check_not_callback("wait_closed")
        if not self._portal.ended.wait(wait):
            raise TimeoutError(f"client still running after {timeout} s")
        end = self._portal.end
        if end is not None and not isinstance(end, wsclient.ClientClosed):
            raise end.with_traceback(None)

    def close(self, code: int = 1000, reason: str = "", *, timeout: float | None = None) -> None:
        """Flush the outbox, close with ``code``, stop reconnecting and end the background threads. Idempotent.

        The close itself is bounded by ``close_timeout``; ``timeout`` bounds the
        wait for callbacks still queued to finish (``TimeoutError``). Called
        from a callback, it returns once the connection closed. In a child of
        ``os.fork()`` it returns at once: the connection is the parent's.

        Args:
            code: The close code: 1000, 1001 or an application code 3000-4999.
            reason: The close reason, at most 123 bytes in UTF-8.
            timeout: Seconds to wait for queued callbacks to finish; ``None``: no limit.

        Raises:
            ValueError: ``code`` or ``reason`` is not one a client may send.
            TimeoutError: Callbacks still ran after ``timeout``.
        """
        wait = _wait("timeout", timeout)
        portal = self._portal
        if portal.forked():
            return
        if portal.loop_thread is None:
            self._client_close_idle(code, reason)
            return
        with portal._lock:
            # Sends after this wait for their outcome, so none is handed over behind the close unseen.
            portal.close_requested = True
        with contextlib.suppress(wsclient.ClientClosed):  # it may have stopped on its own
            portal.call(None, self._client.close, code, reason)
        if not portal.join(wait):
            raise TimeoutError(f"callbacks still running {timeout} s after close")

    def _client_close_idle(self, code: int, reason: str) -> None:
        # Never started: no loop to run on; the asyncio client closes without one.
        coroutine = self._client.close(code, reason)
        try:
            coroutine.send(None)
        except StopIteration:
            pass
        else:  # pragma: no cover - an idle client's close() never waits
            coroutine.close()
            raise RuntimeError("unexpected wait while closing an idle client")

    def __enter__(self) -> Client[M]:
        self.start()
        try:
            self.wait_open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_started(self) -> None:
        if self._portal.forked():
            raise RuntimeError(
                f"this client belongs to process {self._portal.pid}, which started it:"
                " after os.fork(), make a new client in the child"
            )
        if self._portal.loop_thread is None:
            raise RuntimeError("client is not started: use 'with client' or 'client.start()'")

    def _check_not_callback(self, name: str) -> None:
        if threading.current_thread() is self._portal.callback_thread:
            raise RuntimeError(f"{name}() from a callback would wait for the callback itself")

    # Receiving.

    def recv(self, timeout: float | None = None) -> M:
        """The next message, across reconnects; ``TimeoutError`` after ``timeout`` seconds.

        Raises ``ClientClosed`` once the client stopped cleanly and every
        received message was read, or the ``FatalError``/``GaveUp`` that stopped it.

        Args:
            timeout: Seconds to wait at most; ``None``: no limit.

        Raises:
            TimeoutError: No message within ``timeout``.
            ClientClosed: The client stopped cleanly and every message was read.
            FatalError: What stopped the client, when retrying could not help.
            GaveUp: The client gave up.
            RuntimeError: ``on_message`` is set, the client was not started, or this is a callback.
        """
        if self._on_message is not None:
            raise RuntimeError("recv() is not available when on_message is set: messages go to the handler")
        wait = _wait("timeout", timeout)
        self._check_started()
        self._check_not_callback("recv")
        return self._portal.inbox.get(wait)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[M]:
        if self._on_message is not None:
            raise RuntimeError("iteration is not available when on_message is set: messages go to the handler")
        self._check_started()
        self._check_not_callback("iteration")
        get = self._portal.inbox.get
        while True:
            try:
                yield get()
            except wsclient.ClientClosed:
                return

    # Sending.

    def send(self, message: Data, *, ttl: float | None = None, timeout: float | None = None) -> None:
        """Send ``message`` now if a session is open, else buffer it for the next session.

        Blocks while the asyncio client's ``send()`` would wait (a full outbox
        while open, or ``overflow="wait"``), at most ``timeout`` seconds
        (``TimeoutError``; the message may then still go out). Each thread's
        messages go out in the order that thread sent them. ``ttl`` is the
        asyncio client's: a buffered message not written within it is never sent.

        While a session is open, a ``str`` of ASCII or a ``bytes`` of at most
        64 KiB is handed to the client's loop without waiting for the write
        (as long as fewer than 16 such messages are still on their way;
        beyond that ``send()`` waits again). If the loop then cannot take such
        a message (the client stopped in between, or the session ended with a
        full outbox and ``overflow="error"``), it is listed by :meth:`unsent`
        and a ``send_failed`` warning is logged.

        Args:
            message: A ``str`` (a text frame) or ``bytes`` (a binary frame).
            ttl: Seconds a buffered message may wait for a session; ``None``: no deadline.
            timeout: Seconds to wait at most; ``None``: no limit.

        Raises:
            TimeoutError: ``send()`` still waited after ``timeout``.
            ClientClosed: The client is closed or closing.
            BufferFull: The outbox is full while disconnected, with ``overflow="error"``.
            RuntimeError: The client was not started.
        """
        wait = _wait("timeout", timeout)
        self._check_started()
        kind = type(message)
        if (
            (kind is bytes or (kind is str and message.isascii()))
            and len(message) <= _QUICK_SIZE
            and self._client.state is wsclient.State.OPEN
        ):
            # Nothing can fail in the caller any more (the type, the encoding, ttl aside): don't wait for the write.
            if ttl is not None:
                check_timeout("ttl", ttl)
            if self._portal.send_soon(self._client.send, message, ttl):
                return
        self._portal.call(wait, self._client.send, message, ttl=ttl)

    def request(self, message: Data, *, key: Hashable, timeout: float | None = 10.0) -> M:
        """Send ``message`` and return its reply, as :meth:`wsclient.Client.request` (needs ``reply_key``).

        Raises ``RequestTimeout`` after ``timeout`` seconds (a message still
        buffered then is never sent), ``RequestInterrupted`` at once if the
        session that carried it ends, ``ClientClosed`` if the client closes.

        Args:
            message: The request, as for :meth:`send`.
            key: The key ``reply_key`` finds in the reply.
            timeout: Seconds to wait for the reply; ``None``: no limit.

        Raises:
            RequestTimeout: No reply within ``timeout``.
            RequestInterrupted: The session that carried the request ended first.
            ClientClosed: The client is closed, or closes first.
        """
        grace = _grace(timeout)
        self._check_started()
        reply: M = self._portal.call(grace, partial(self._client.request, message, key=key, timeout=timeout))
        return reply

    def unsent(self) -> list[Data]:
        """Messages handed to ``send()`` that no session has written yet (all of them, once closed)."""
        return self._client.unsent() + self._portal.failed_sends
