"""What a client tells its observers, at the points where something slow happens anyway.

State changes, connect attempts, session ends, requests and pongs: nothing
here runs per message. A client with no observer pays one truth test of an
empty tuple at each of those points. ``on_state_change`` is one observer;
:mod:`wsclient.otel` adds another.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeAlias

from .events import SessionEnd, State
from .logs import describe_error
from .stats import Outage

__all__ = ["MAX_PENDING_CHANGES", "Observer", "Observers", "OnStateChange", "StateChange", "StateListener"]

MAX_PENDING_CHANGES = 1000
"""State changes kept for an ``on_state_change`` that falls behind; older ones are dropped (and logged)."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """One change of ``client.state``, as ``on_state_change`` receives it.

    ``outage`` is set on the changes that start or end an outage (see
    :attr:`wsclient.Stats.outages`): a copy of the record as it stood at the
    change, so a listener that runs later still sees it as it was.
    """

    old: State
    """The state the client left."""
    new: State
    """The state the client is in now."""
    at: float
    """When the change happened (epoch seconds)."""
    outage: Outage | None = None
    """The outage this change starts (``end`` is ``None``) or ends (``end`` is set), else ``None``."""

    @property
    def outage_started(self) -> bool:
        """Whether this change starts an outage: an open session dropped and the client reconnects."""
        return self.outage is not None and self.outage.end is None

    @property
    def outage_ended(self) -> bool:
        """Whether this change ends an outage: a session opened again, or the client stopped during it."""
        return self.outage is not None and self.outage.end is not None


OnStateChange: TypeAlias = Callable[[StateChange], Awaitable[None] | None]
"""A plain or async function told of every :class:`StateChange`."""

RequestDone = Callable[[BaseException | None], None]
"""Called once when a request ends, with the exception it raised or ``None`` for a reply."""


class Observer:
    """Told of a client's slow events; every method does nothing unless overridden.

    Methods run on the client's event loop, inline, at the event: they must
    return at once and should not raise (an exception is logged and ignored).
    """

    def state_changed(self, change: StateChange) -> None:
        """``client.state`` changed."""

    def connect_started(self) -> None:
        """A connect attempt starts (before the URL and headers are resolved)."""

    def connect_ended(self, url: str | None, error: BaseException | None) -> None:
        """The attempt ended: ``error`` is ``None`` when the handshake succeeded; ``url`` once resolved."""

    def session_ended(self, end: SessionEnd) -> None:
        """A session that had opened ended (its duration is ``end.duration``)."""

    def request_started(self, key: Hashable) -> RequestDone | None:
        """A ``request()`` starts; the callable returned, if any, is told how it ended."""
        return None

    def pong(self, rtt: float) -> None:
        """A heartbeat ping was answered after ``rtt`` seconds."""


class Observers:
    """The observers of one client, as a tuple replaced whole: any thread may add or remove one."""

    __slots__ = ("_log", "all")

    def __init__(self, log: Any) -> None:
        self.all: tuple[Observer, ...] = ()
        """Empty unless someone observes: every call site tests it first."""
        self._log = log

    def add(self, observer: Observer) -> Callable[[], None]:
        """Add ``observer``; return the function that removes it (idempotent)."""
        self.all = (*self.all, observer)

        def remove() -> None:
            self.all = tuple(o for o in self.all if o is not observer)

        return remove

    def _failed(self, observer: Observer, event: str, exc: Exception) -> None:
        self._log.error("observer_failed", observer=type(observer).__qualname__, event=event, error=describe_error(exc))

    def state_changed(self, change: StateChange) -> None:
        for observer in self.all:
            try:
                observer.state_changed(change)
            except Exception as exc:
                self._failed(observer, "state_changed", exc)

    def connect_started(self) -> None:
        for observer in self.all:
            try:
                observer.connect_started()
            except Exception as exc:
                self._failed(observer, "connect_started", exc)

    def connect_ended(self, url: str | None, error: BaseException | None) -> None:
        for observer in self.all:
            try:
                observer.connect_ended(url, error)
            except Exception as exc:
                self._failed(observer, "connect_ended", exc)

    def session_ended(self, end: SessionEnd) -> None:
        for observer in self.all:
            try:
                observer.session_ended(end)
            except Exception as exc:
                self._failed(observer, "session_ended", exc)

    def request_started(self, key: Hashable) -> RequestDone:
        done: list[RequestDone] = []
        for observer in self.all:
            try:
                if (callback := observer.request_started(key)) is not None:
                    done.append(callback)
            except Exception as exc:
                self._failed(observer, "request_started", exc)

        def request_done(error: BaseException | None) -> None:
            for callback in done:
                try:
                    callback(error)
                except Exception as exc:
                    self._log.error("observer_failed", event="request_done", error=describe_error(exc))

        return request_done

    def pong_done(self, pong: asyncio.Future[float]) -> None:
        """A pong waiter's done callback: report the round trip if a pong came."""
        if pong.cancelled() or pong.exception() is not None:
            return
        rtt = pong.result()
        for observer in self.all:
            try:
                observer.pong(rtt)
            except Exception as exc:
                self._failed(observer, "pong", exc)


def snapshot(outage: Outage | None) -> Outage | None:
    """A copy of ``outage`` that later changes to the client's record leave alone."""
    return None if outage is None else dataclasses.replace(outage)


class StateListener(Observer):
    """Delivers state changes to ``on_state_change``, in order, from a task of its own.

    The supervisor only appends to a queue: a slow listener delays the next
    delivery, never the client. The task exists only while changes wait, and
    the client drains it when it stops (bounded by ``close_timeout``).
    """

    def __init__(self, callback: OnStateChange, log: Any, limit: int = MAX_PENDING_CHANGES) -> None:
        self._callback = callback
        self._log = log
        self._queue: deque[StateChange] = deque()
        self._limit = limit
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Changes dropped because the listener fell ``limit`` changes behind."""

    def state_changed(self, change: StateChange) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            self.dropped += 1
            self._log.warning("state_changes_dropped", dropped=self.dropped, limit=self._limit)
        self._queue.append(change)
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop yet (a sync client closed before it started): nothing can run the listener
            self._task = loop.create_task(self._deliver(), name="wsclient-state-listener")

    async def _deliver(self) -> None:
        try:
            while self._queue:
                change = self._queue.popleft()
                try:
                    result = self._callback(change)
                    if inspect.isawaitable(result):
                        await result
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    self._failed(asyncio.CancelledError("raised by on_state_change"))
                except Exception as exc:
                    self._failed(exc)
        finally:
            self._task = None

    def _failed(self, exc: BaseException) -> None:
        self._log.error("on_state_change_failed", error=describe_error(exc), exc_info=exc)

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - bounded by the client's close_timeout
        """Wait until every queued change was delivered, at most ``timeout`` seconds; then give up on the rest."""
        task = self._task
        if task is None:
            return
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            await asyncio.wait({task})
            raise
        if not done:
            self._log.warning("on_state_change_timeout", undelivered=len(self._queue) + 1, timeout=timeout)
            self._queue.clear()
            task.cancel()
            await asyncio.wait({task})
