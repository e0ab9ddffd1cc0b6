"""One live connection: opening it, its tasks, and the record of why it ended.

A session owns one task group (``asyncio.TaskGroup``'s rules, in fewer
bytes): the heartbeat, the idle watchdog, the sender and the consumer live
and die with it, so no task of a previous connection survives a reconnect. The sender is a task only while the outbox
holds messages: an idle session waits in its consumer alone. A session talks
to its connection only through a :class:`wsclient.transports.Transport`, and
turns the transport's end record into a :class:`SessionEnd`, once.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import sys
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from functools import partial
from typing import Any, TypeVar

from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

from .buffers import Deliver, Envelope, Inbox, Outbox
from .config import ClientConfig, Data, check_timeout
from .errors import CallbackError, RequestInterrupted, RequestTimeout
from .events import Cause, ClosedBy, SessionEnd
from .heartbeat import HeartbeatTimer, IdleTimer, Watch
from .hooks import Observers
from .replies import Request, Requests
from .stats import Stats
from .transports import NOT_UTF8, Direct, Transport, over_max_size

__all__ = ["Handler", "Session", "count_write", "end_from_close", "ours", "to_payload"]

ABNORMAL_CLOSURE = 1006
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009
_session_numbers = itertools.count(1)
T = TypeVar("T")


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


def ours(error: asyncio.CancelledError) -> bool:
    """Whether ``error`` cancels the running task itself, rather than being raised by application code.

    Code of the application that awaited a future someone else cancelled
    raises ``CancelledError`` too: that is a bug in the callback, to be
    handled like its other exceptions. A cancellation of our own task (the
    client closing, a task group failing) is counted by the task and must
    propagate. Outside any task (a frame callback) it is never ours.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def count_write(stats: Stats, written: bool) -> None:
    """Account for one message handed to a connection: written, or interrupted on the way."""
    if written:
        stats.messages_out += 1
    else:
        stats.sends_interrupted += 1


def end_from_close(
    exc: ConnectionClosed, cause: Cause | None, duration: float, max_size: int | None = None
) -> SessionEnd:
    """Turn websockets' account of a closed connection into a :class:`SessionEnd`.

    When this side failed the connection (a message over ``max_size`` gives
    1009), websockets reports 1006 as ``code`` but keeps the real code in
    ``exc.sent``: the code that matters is the first close frame, either way.
    A 1009 of this side's reads the same on both transports, naming ``max_size``
    (each library words its own check differently).
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
    if closed_by is ClosedBy.CLIENT:
        # This side's failures read the same on both transports (each library words its own checks).
        if code == MESSAGE_TOO_BIG and max_size is not None:
            reason = over_max_size(max_size)
        elif code == INVALID_DATA and reason not in NOT_UTF8:
            reason = NOT_UTF8[1]
    return SessionEnd(int(code), reason, closed_by, cause, duration)


class Handler:
    """The application's ``on_message``, with its failures counted and logged instead of raised.

    ``direct`` says the handler is a plain function: a transport that pushes
    messages from its frame callback may then call it there, with no task,
    queue or coroutine in between, as long as nothing waits before it.
    """

    __slots__ = ("direct", "failed", "handler")

    def __init__(
        self, handler: Callable[[Any], object], failed: Callable[[BaseException], None], *, direct: bool
    ) -> None:
        self.handler = handler
        self.failed = failed
        self.direct = direct

    async def __call__(self, message: Any) -> None:
        try:
            result = self.handler(message)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:
            self.failed(exc)
        except asyncio.CancelledError as exc:
            if ours(exc):
                raise
            self.failed(exc)

    async def finish(self, result: Awaitable[Any]) -> None:
        """Await what the handler, called from a frame callback, returned."""
        try:
            await result
        except Exception as exc:
            self.failed(exc)
        except asyncio.CancelledError as exc:
            if ours(exc):
                raise
            self.failed(exc)


class _Pending:
    """In the handler's queue: what a handler called from the frame callback returned, awaited in turn."""

    __slots__ = ("result",)

    def __init__(self, result: Awaitable[Any]) -> None:
        self.result = result


class _Tasks:
    """The session's task group: ``asyncio.TaskGroup``'s rules, in slots, its set made by the first task.

    A task that fails cancels the others and the body of the ``async with``,
    which then raises a ``BaseExceptionGroup`` of the failures; leaving waits for
    every task; a cancellation of the parent cancels them all and propagates.
    The logic is the standard library's (Python 3.11), without what the
    session does not use (contexts, re-entry checks): an idle session holds
    this object alone, not a group, its dict, an empty set and an empty list
    (the set lives while tasks run, the list once one failed).
    """

    __slots__ = (
        "_aborting",
        "_base_error",
        "_done",
        "_errors",
        "_exiting",
        "_parent",
        "_parent_cancel_requested",
        "_tasks",
    )

    def __init__(self) -> None:
        self._exiting = False
        self._aborting = False
        self._parent: asyncio.Task[Any] | None = None
        self._parent_cancel_requested = False
        self._tasks: set[asyncio.Task[Any]] | None = None
        self._errors: list[BaseException] | None = None
        self._base_error: BaseException | None = None
        self._done: asyncio.Future[None] | None = None

    async def __aenter__(self) -> _Tasks:
        self._parent = asyncio.current_task()
        if self._parent is None:  # pragma: no cover - a session always runs in a task
            raise RuntimeError("the session's tasks need a parent task")
        return self

    async def __aexit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self._exiting = True
        parent = self._parent
        assert parent is not None
        if exc is not None and _is_base_error(exc) and self._base_error is None:
            self._base_error = exc
        propagate: BaseException | None = exc if et is asyncio.CancelledError else None
        # If this flag is set, uncancel() must be called: a cancellation the group asked for is not the caller's.
        if self._parent_cancel_requested and parent.uncancel() == 0:
            propagate = None
        if et is not None and not self._aborting:
            # The parent is being cancelled, or the body raised: the tasks end with it.
            self._abort()
        while self._tasks:
            if self._done is None:
                self._done = parent.get_loop().create_future()
            try:
                await self._done
            except asyncio.CancelledError as cancelled:
                if not self._aborting:
                    # The parent is cancelled while its tasks still run.
                    propagate = cancelled
                    self._abort()
            self._done = None
        if self._base_error is not None:
            raise self._base_error
        # A cancellation propagates unless there are errors: those come first.
        if propagate is not None and not self._errors:
            raise propagate
        if et is not None and et is not asyncio.CancelledError:
            assert exc is not None
            self._add_error(exc)
        if self._errors:
            errors, self._errors = self._errors, None  # exceptions hold frames: keep no reference
            raise BaseExceptionGroup("unhandled errors in a TaskGroup", errors) from None

    def create_task(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` as a task of the group; ``RuntimeError`` once the group is finished or shutting down."""
        if self._parent is None:
            raise RuntimeError("the session's tasks are not running yet")
        if self._exiting and not self._tasks:
            raise RuntimeError("the session's tasks are finished")
        if self._aborting:
            raise RuntimeError("the session's tasks are shutting down")
        task = self._parent.get_loop().create_task(coro, name=name)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._on_task_done)
        return task

    def _add_error(self, exc: BaseException) -> None:
        if self._errors is None:
            self._errors = []
        self._errors.append(exc)

    def _abort(self) -> None:
        self._aborting = True
        for task in self._tasks or ():
            if not task.done():
                task.cancel()

    def _on_task_done(self, task: asyncio.Task[Any]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
            if not self._tasks:
                self._tasks = None  # between two heartbeats, an idle session holds no set
        if self._done is not None and not self._tasks and not self._done.done():
            self._done.set_result(None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self._add_error(exc)
        if _is_base_error(exc) and self._base_error is None:
            self._base_error = exc
        parent = self._parent
        assert parent is not None
        if parent.done():  # pragma: no cover - as in the standard library, which is not sure it can happen
            parent.get_loop().call_exception_handler(
                {
                    "message": f"Task {task!r} has errored out but its parent task {parent} is already completed",
                    "exception": exc,
                    "task": task,
                }
            )
            return
        if not self._aborting and not self._parent_cancel_requested:
            # Cancel the body now; __aexit__ uncancels the parent, since the cancellation was the group's.
            self._abort()
            self._parent_cancel_requested = True
            parent.cancel()


def _is_base_error(exc: BaseException) -> bool:
    return isinstance(exc, SystemExit | KeyboardInterrupt)


class Session:
    """One live connection, as ``on_connect`` sees it.

    ``send()`` and ``recv()`` talk to this connection directly: use them in
    ``on_connect`` to authenticate and subscribe before the application sees
    the session's messages and before buffered sends go out.
    """

    # Slots, not a __dict__: a session lives as long as its connection, and a process may hold thousands.
    __slots__ = (
        "_cause",
        "_config",
        "_held",
        "_hook_reader",
        "_log",
        "_observers",
        "_outbox",
        "_over",
        "_recv",
        "_requests",
        "_sender",
        "_stats",
        "_tg",
        "_timers",
        "bound",
        "connection",
        "flushing",
        "hook_error",
        "id",
        "number",
        "ready",
        "started",
        "transport",
    )

    def __init__(
        self,
        transport: Transport,
        config: ClientConfig,
        stats: Stats,
        log: Any,
        requests: Requests | None = None,
        observers: Observers | None = None,
    ) -> None:
        self.number = next(_session_numbers)
        self.id = f"s{self.number}"
        """The session's name in logs, stats and errors, such as ``"s3"``."""
        self.transport = transport
        """The connection as the session sees it (see :mod:`wsclient.transports`)."""
        self.connection: Any = transport.raw
        """The library's own connection, for what wsclient does not wrap: websockets' ``ClientConnection``
        (``latency``, ``local_address``) or picows' ``WSTransport``."""
        self._recv: Callable[[], Awaitable[Data]] = transport.recv
        self._config = config
        self._stats = stats
        self._log = log
        self._cause: Cause | None = None
        self.started = transport.loop.time()
        """Loop time at which the connection opened."""
        self.ready = False
        """True once ``on_connect`` ran and the outbox was flushed: sends may go straight out."""
        self.flushing = False
        """True once ``on_connect`` ran: from then on, what is buffered is flushed by a sender."""
        self.hook_error: Exception | None = None
        """What ``on_connect`` raised, if it failed; the supervisor decides what follows."""
        self._requests = requests
        self._observers = observers
        self.bound: set[Request] | None = None
        """Requests this session wrote whose reply has not come: its end fails them (made by the first)."""
        self._over = False
        self._tg: _Tasks | None = None
        self._sender: asyncio.Task[None] | None = None
        self._outbox: Outbox[Data] | None = None
        self._hook_reader: asyncio.Task[None] | None = None
        self._held: Inbox[Data] | None = None
        self._timers: tuple[HeartbeatTimer | IdleTimer, ...] = ()

    def __repr__(self) -> str:
        transport = self.transport
        state = "OPEN" if transport.is_open else "CLOSED" if transport.closing() else "CLOSING"
        return f"<Session {self.id} {state}>"

    # What the application may use (in on_connect, or through client.session).

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, if any."""
        return self.transport.subprotocol

    @property
    def response_headers(self) -> Headers:
        """The headers of the server's handshake response, looked up case-insensitively."""
        return self.transport.response_headers

    @property
    def is_open(self) -> bool:
        """Whether the connection is open: neither closing nor closed."""
        return self.transport.is_open

    async def send(self, message: Data) -> None:
        """Send on this connection now (no buffering); raises ``ConnectionClosed`` if it is gone.

        A message is written at once when the session :attr:`is_open`; if the
        connection then breaks, or the call is cancelled while the write
        drains, it counts in ``stats.sends_interrupted``. A ``str`` that is not
        valid Unicode raises ``UnicodeEncodeError`` before anything is written.

        Args:
            message: A ``str`` (a text frame) or bytes-like object (a binary frame).

        Raises:
            websockets.exceptions.ConnectionClosed: The connection is closed or closing.
            TypeError: ``message`` is neither ``str`` nor bytes-like.
        """
        payload, text = to_payload(message)
        send = self.transport.send
        if not self.is_open:
            await send(payload, text=text)  # raises ConnectionClosed: nothing is written
            raise self.transport.end_record()
        written = False
        try:
            await send(payload, text=text)
            # Aborted while the send waited to drain: websockets returns without raising.
            written = self.is_open
        finally:
            count_write(self._stats, written)

    async def recv(self) -> Data:
        """Receive the next message of this connection (only before the consumer starts).

        Raises:
            websockets.exceptions.ConnectionClosed: The connection ended.
        """
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

        Args:
            message: The request, as for :meth:`send`.
            key: The key ``reply_key`` finds in the reply.
            timeout: Seconds to wait for the reply; ``None``: no limit.

        Raises:
            RequestTimeout: No reply within ``timeout``.
            RequestInterrupted: The session ended before the reply.
            ValueError: A request with ``key`` is already pending.
            RuntimeError: The client has no ``reply_key``.
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
                    await self.transport.send(payload, text=text)
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
        if self.bound is None:
            self.bound = set()
        self.bound.add(request)
        return True

    def _interrupt_requests(self) -> None:
        """This session ended: fail every request it carried whose reply has not come."""
        self._over = True
        if self.bound and self._requests is not None:
            bound, self.bound = self.bound, None
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
        transport = self.transport
        compressed = limit is not None and not transport.checks_message_size
        try:
            while True:
                message = await recv()
                if compressed and too_big(message, limit):  # type: ignore[arg-type]
                    await transport.close(MESSAGE_TOO_BIG, over_max_size(limit))  # type: ignore[arg-type]
                    continue
                if requests.pending and requests.resolve(message, self):
                    continue
                held.offer(message)
        except UnicodeDecodeError:
            await transport.close(INVALID_DATA, NOT_UTF8[0])
            held.close(transport.end_record())
        except ConnectionClosed as exc:
            self._interrupt_requests()
            held.close(exc)

    # What the heartbeat needs (the Link protocol).

    @property
    def last_rx(self) -> float:
        return self.transport.last_rx

    @property
    def last_drain(self) -> float:
        return self.transport.last_drain

    def reading_paused(self) -> bool:
        return self.transport.reading_paused()

    @property
    def reading_resumed(self) -> float:
        return self.transport.reading_resumed

    def unread(self) -> int | None:
        return self.transport.unread()

    def write_backlog(self) -> int:
        return self.transport.write_backlog()

    def write_stalled(self, since: float, backlog: int) -> bool:
        return self.transport.write_stalled(since, backlog)

    async def send_heartbeat(self, message: str | bytes | None) -> Awaitable[float] | None:
        if message is None:
            pong = await self.transport.ping()
            if (observers := self._observers) is not None and observers.all and isinstance(pong, asyncio.Future):
                pong.add_done_callback(observers.pong_done)
            return pong
        await self.transport.send(message, text=isinstance(message, str))
        return None

    # Lifecycle, driven by the supervisor.

    def abort(self, cause: Cause) -> None:
        """Drop the transport at once, without a close handshake (the peer may be dead)."""
        if self._cause is None:
            self._cause = cause
        self.transport.abort()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close with a handshake, bounded by ``close_timeout`` whatever the peer does."""
        if self._cause is None:
            self._cause = Cause.USER_CLOSE
        transport = self.transport
        try:
            async with asyncio.timeout(self._config.close_timeout):
                await transport.close(code, reason)
        except TimeoutError:
            transport.abort()
        await transport.wait_closed()

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
            async with _Tasks() as tg:
                self._tg = tg
                # Timers, not sleeping tasks: an idle session holds a timer handle for each.
                timers: tuple[HeartbeatTimer | IdleTimer, ...] = ()
                if (heartbeat := self._config.heartbeat) is not None:
                    timers += (HeartbeatTimer(heartbeat, self, self._spawn_watch, self._log),)
                if (idle_timeout := self._config.idle_timeout) is not None:
                    timers += (IdleTimer(idle_timeout, self, self._verdict),)
                self._timers = timers
                for timer in timers:
                    timer.start()
                try:
                    # Not one coroutine around both steps: an idle session keeps only the consumer's frame.
                    end = None if on_connect is None else await self._hook(on_connect)
                    if end is None:
                        self._opened(on_ready, outbox)
                        del on_ready  # a bound method: this frame lives as long as the session, keep nothing spent
                        end = await self._consume(deliver)
                finally:
                    for timer in timers:
                        timer.stop()
                    if outbox.on_add == self._start_sender:
                        outbox.on_add = None
                if (sender := self._sender) is not None:
                    sender.cancel()
        finally:
            self.ready = False
            self._tg = None
            if not self.transport.closing():
                self.transport.abort()
            self._interrupt_requests()
        return end

    async def _hook(self, on_connect: Callable[[Session], Awaitable[None]]) -> SessionEnd | None:
        """Run ``on_connect``; if it raised, keep the error in ``hook_error``, close, and say how the session ended."""
        try:
            await self._run_on_connect(on_connect)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                if ours(exc):
                    raise
                # Raised by the hook's own code, not by a cancellation of this task: a bug in the hook.
                error = CallbackError("on_connect", exc)
                error.__cause__ = exc
                self.hook_error = error
            else:
                self.hook_error = exc
            await self.close(1000, "on_connect failed")
            return await self._ended()
        finally:
            if (reader := self._hook_reader) is not None:
                # Cancelling websockets' recv() loses no message: the consumer reads on from here.
                reader.cancel()
                await asyncio.wait({reader})
        return None

    def _opened(self, on_ready: Callable[[Session], None], outbox: Outbox[Data]) -> None:
        """``on_connect`` is done: report the session open and flush the outbox before any direct send."""
        on_ready(self)
        self.flushing = True
        self._outbox = outbox
        outbox.on_add = self._start_sender
        if outbox.queue:
            self._start_sender()
        else:
            self.ready = True
            outbox.wake()

    async def _run_on_connect(self, on_connect: Callable[[Session], Awaitable[None]]) -> None:
        """Run the hook, bounded by ``open_timeout`` so a server that never answers cannot stall the client."""
        timeout = self._config.open_timeout
        bound = asyncio.timeout(timeout)
        try:
            async with bound:
                await on_connect(self)
        except TimeoutError as exc:
            if bound.expired() and self.transport.is_open:
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
        if self._cause is not None or not self.transport.is_open:
            # Already closing (our close, the server's, or another watcher's verdict), and bounded by
            # close_timeout: a verdict now would be a false alarm and would misname why the session ended.
            return
        self._log.warning(
            cause.value, session_id=self.id, silent_for=round(self.transport.loop.time() - self.last_rx, 3)
        )
        self.abort(cause)

    def _start_sender(self) -> None:
        """Start the sender unless it runs: the outbox holds messages and this session flushes them."""
        if self._sender is not None or (tg := self._tg) is None or (outbox := self._outbox) is None:
            return
        if not self.transport.is_open:
            return  # the session is ending: what is buffered waits for the next one
        coro = self._flush(outbox)
        try:
            self._sender = tg.create_task(coro, name=f"wsclient-sender-{self.id}")
        except RuntimeError:
            # The group is shutting down (a task failed): the messages stay buffered for the next session.
            coro.close()

    async def _flush(self, outbox: Outbox[Data]) -> None:
        """Write the outbox in order until it is empty, then end: the next buffered message starts a new sender.

        Until the outbox was first emptied, ``ready`` is False and sends are
        buffered behind it, so buffered messages go out before direct sends.
        A popped message is this task's to account for: written, or
        interrupted when the connection breaks or the task is cancelled
        while the write drains (the frame is already in the transport then).
        """
        transport, stats = self.transport, self._stats
        send = transport.send
        try:
            while len(outbox):
                if not transport.is_open:
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
                    await send(payload, text=text)
                    # Aborted while the send waited to drain: websockets returns without raising.
                    written = transport.is_open
                except ConnectionClosed:
                    return
                finally:
                    count_write(stats, written)
                if not written:
                    return
            if not self.ready:
                self.ready = True
                outbox.wake()
        finally:
            self._sender = None

    async def _consume(self, deliver: Deliver) -> SessionEnd:
        """Deliver every message of the connection until it ends, and say how it ended.

        Each loop waits in ``arrival()`` while nothing waits for ``recv()``:
        an idle connection holds one future there rather than a suspended ``recv()``.
        """
        recv, stats = self._recv, self._stats
        limit = self._config.max_size
        requests = self._requests
        transport = self.transport
        try:
            if (held := self._held) is not None:
                # What arrived while on_connect waited for its replies comes first, in order.
                self._held = None
                put = partial(self._put, deliver) if isinstance(deliver, Inbox) else deliver
                while (message := held.poll()) is not None:
                    stats.messages_in += 1
                    await put(message)
            queued, arrival = transport.queued, transport.arrival
            if transport.pushes:
                if requests is None and isinstance(deliver, Inbox):
                    # What _pump() does for the inbox, without its frame and closures: an idle session keeps neither.
                    await transport.pump(deliver, None, stats)
                else:
                    await self._pump(deliver)
            elif requests is not None and isinstance(deliver, Handler):
                await self._handle_beside_reader(deliver, requests)
            elif requests is not None:
                # Only a client with reply_key pays for the lookup, and only while a request waits.
                pending, resolve = requests.pending, requests.resolve
                compressed = limit is not None and not transport.checks_message_size
                put = partial(self._put, deliver) if isinstance(deliver, Inbox) else deliver
                while True:
                    if not queued:
                        await arrival()
                    message = await recv()
                    if compressed and too_big(message, limit):  # type: ignore[arg-type]
                        await transport.close(MESSAGE_TOO_BIG, over_max_size(limit))  # type: ignore[arg-type]
                        continue
                    if pending and resolve(message, self):
                        continue
                    stats.messages_in += 1
                    await put(message)
            elif limit is not None and not transport.checks_message_size:
                # Compressed frames were let through with some slack: check the message itself.
                inbox, handle = (deliver, None) if isinstance(deliver, Inbox) else (None, deliver)
                while True:
                    if not queued:
                        await arrival()
                    message = await recv()
                    if too_big(message, limit):
                        await transport.close(MESSAGE_TOO_BIG, over_max_size(limit))
                        continue
                    stats.messages_in += 1
                    if handle is not None:
                        await handle(message)
                    elif not inbox.offer(message):  # type: ignore[union-attr]
                        await self._put(inbox, message)  # type: ignore[arg-type]
            elif isinstance(deliver, Inbox):
                offer = deliver.offer
                while True:
                    if not queued:
                        await arrival()
                    message = await recv()
                    stats.messages_in += 1
                    if not offer(message):
                        await self._put(deliver, message)
            else:
                while True:
                    if not queued:
                        await arrival()
                    message = await recv()
                    stats.messages_in += 1
                    await deliver(message)
        except UnicodeDecodeError:
            # text=True and a binary message that is not UTF-8: the feed broke its contract.
            await transport.close(INVALID_DATA, NOT_UTF8[0])
        except ConnectionClosed:
            pass
        self._interrupt_requests()
        return await self._ended()

    async def _handle_beside_reader(self, handler: Handler, requests: Requests) -> None:
        """Run ``on_message`` beside a reader task that resolves replies, so the handler may await ``request()``.

        What a pushing transport does from its frame callback: replies resolve
        their requests while the handler runs; other messages wait, in order,
        in a queue of ``inbox_size`` (reading waits while it is full).
        """
        queue: Inbox[Data] = Inbox(self._config.inbox_size)
        assert self._tg is not None
        reading = self._tg.create_task(self._read_beside(queue, requests), name=f"wsclient-reader-{self.id}")
        try:
            while True:
                message = queue.poll()
                if message is None:
                    try:
                        message = await queue.get()
                    except ConnectionClosed:
                        return
                await handler(message)
        finally:
            reading.cancel()

    async def _read_beside(self, queue: Inbox[Data], requests: Requests) -> None:
        recv, stats, transport = self._recv, self._stats, self.transport
        limit = self._config.max_size
        compressed = limit is not None and not transport.checks_message_size
        pending, resolve = requests.pending, requests.resolve
        queued, arrival = transport.queued, transport.arrival
        try:
            while True:
                if not queued:
                    await arrival()
                message = await recv()
                if compressed and too_big(message, limit):  # type: ignore[arg-type]
                    await transport.close(MESSAGE_TOO_BIG, f"message over max_size ({limit} bytes)")
                    continue
                if pending and resolve(message, self):
                    continue
                stats.messages_in += 1
                if not queue.offer(message):
                    await queue.put(message)
        except UnicodeDecodeError:
            await transport.close(INVALID_DATA, "binary message is not UTF-8 text")
            self._interrupt_requests()
        except ConnectionClosed:
            # No reply comes any more: a request the handler awaits fails now, not at its timeout.
            self._interrupt_requests()
        finally:
            queue.close(ConnectionClosed(None, None))

    async def _put(self, inbox: Inbox[Data], message: Data) -> None:
        """Put a received message into the inbox, waiting for room only while the connection lasts.

        A session ended by a verdict (the transport aborted) must end even
        when the application is not reading: once the connection is gone,
        the message goes in over the limit, as what is left of it does after.
        """
        if inbox.offer(message):
            return
        room = asyncio.ensure_future(inbox.put(message))
        lost = asyncio.ensure_future(self.transport.wait_closed())
        put = False
        try:
            await asyncio.wait((room, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if lost.done():
                lost.exception()  # websockets' wait_closed() raises nothing, but never leave an error unseen
            else:
                lost.cancel()
            if room.done():
                put = True
            else:
                # Not resumed yet: cancelled, it appends nothing; awaited, so no task outlives the session.
                room.cancel()
                await asyncio.wait((room,))
        if put:
            room.result()
        else:
            inbox.push(message)

    async def _pump(self, deliver: Deliver) -> None:
        """Receive from a transport that pushes each message from its frame callback.

        Into the inbox, a message goes straight from the callback. A plain
        ``on_message`` function is called there too while nothing waits before
        it; otherwise messages wait, in order, in a queue of ``inbox_size``
        that pauses reading while full (what one read brought is taken whole),
        and an ``async`` handler runs here.
        """
        transport, stats, requests = self.transport, self._stats, self._requests
        queue: Inbox[Any] = deliver if isinstance(deliver, Inbox) else Inbox(self._config.inbox_size)
        # True from the moment a message waits in the queue until the loop below found it empty again.
        busy = [False]
        take: Callable[[Data], bool] = queue.push
        direct: Direct | None = None
        if isinstance(deliver, Handler) and deliver.direct:
            push, handler, failed = queue.push, deliver.handler, deliver.failed

            def returned(result: object) -> None:
                if inspect.isawaitable(result):
                    # Awaited below, in turn: later messages wait in the queue behind it.
                    busy[0] = True
                    transport.call_directly(None)
                    push(_Pending(result))

            def take(message: Data) -> bool:
                if busy[0]:
                    return push(message)  # the handler is still at an earlier message: keep the order
                try:
                    result = handler(message)
                except (Exception, asyncio.CancelledError) as exc:
                    # A plain function raising CancelledError cancels nothing: it is the handler's bug.
                    failed(exc)
                    return True
                if result is not None:
                    returned(result)
                return True

            if requests is None:
                # The transport calls the handler itself from its frame callback while nothing waits in the queue.
                direct = Direct(handler, failed, returned)

        counted: Stats | None = stats
        sink = take
        if requests is not None:
            pending, resolve = requests.pending, requests.resolve

            def sink(message: Data) -> bool:
                if pending and resolve(message, self):
                    return True
                stats.messages_in += 1
                return take(message)

            counted = None
        if isinstance(deliver, Inbox):
            await transport.pump(queue, None if requests is None else sink, counted)
            return
        assert self._tg is not None
        transport.call_directly(direct)
        pumping = self._tg.create_task(self._pump_into(queue, sink, counted), name=f"wsclient-pump-{self.id}")
        try:
            while True:
                item = queue.poll()
                if item is None:
                    if busy[0] and direct is not None:
                        transport.call_directly(direct)
                    busy[0] = False
                    try:
                        item = await queue.get()
                    except ConnectionClosed:
                        return
                busy[0] = True
                if type(item) is _Pending:
                    assert isinstance(deliver, Handler)
                    await deliver.finish(item.result)
                else:
                    await deliver(item)
        finally:
            pumping.cancel()

    async def _pump_into(self, queue: Inbox[Any], sink: Callable[[Data], bool], counted: Stats | None) -> None:
        try:
            await self.transport.pump(queue, sink, counted)
            # No reply comes any more: a request the handler awaits fails now, not at its timeout.
            self._interrupt_requests()
        finally:
            queue.close(ConnectionClosed(None, None))

    def end_now(self) -> SessionEnd:
        """How the session ended, from what is known at once (it is being cancelled; nothing is awaited)."""
        duration = self.transport.loop.time() - self.started
        return end_from_close(self.transport.end_record(), self._cause, duration, self._config.max_size)

    async def _ended(self) -> SessionEnd:
        transport = self.transport
        await transport.wait_closed()
        self.ready = False
        duration = transport.loop.time() - self.started
        return end_from_close(transport.end_record(), self._cause, duration, self._config.max_size)
