"""The two bounded buffers between the application and the sessions.

The inbox carries received messages to ``recv()`` and iteration across
reconnects; the outbox keeps what ``send()`` was handed while no session
could take it, in order, until the next session flushes it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from .errors import BufferFull, fresh_error
from .stats import Stats

__all__ = ["Deliver", "Envelope", "Inbox", "Outbox", "SessionStart", "Waiters"]

T = TypeVar("T")


class Waiters:
    """Futures of tasks waiting for a condition, woken one at a time in FIFO order."""

    __slots__ = ("futures",)

    def __init__(self) -> None:
        # A list, not a deque: a deque's first block costs 760 bytes, and waiters are few, so popping
        # the head is cheap. Made by the first waiter: most never have one.
        self.futures: list[asyncio.Future[None]] | None = None
        """Non-empty while some task waits: the hot paths test it before calling ``wake_one()``."""

    async def wait(self) -> None:
        future = asyncio.get_running_loop().create_future()
        if self.futures is None:
            self.futures = []
        self.futures.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # Woken, then cancelled before using the turn: pass it on.
                self.wake_one()
            elif self.futures is not None and future in self.futures:
                self.futures.remove(future)
            raise

    def wake_one(self) -> None:
        while self.futures:
            future = self.futures.pop(0)
            if not future.done():
                future.set_result(None)
                return

    def wake_all(self) -> None:
        futures, self.futures = self.futures, None
        for future in futures or ():
            if not future.done():
                future.set_result(None)


class Inbox(Generic[T]):
    """A bounded FIFO of received messages that ends with an exception once closed and drained.

    The queue is made by the first message: an idle connection does not pay for it.
    """

    __slots__ = ("_end", "_getters", "_items", "_limit", "_low", "_on_room", "_putters")

    def __init__(self, limit: int) -> None:
        self._items: deque[T] | None = None
        self._limit = limit
        self._low = limit // 2
        self._getters = Waiters()
        self._putters = Waiters()
        self._end: BaseException | None = None
        self._on_room: Callable[[], None] | None = None

    def __len__(self) -> int:
        items = self._items
        return 0 if items is None else len(items)

    def full(self) -> bool:
        return len(self) >= self._limit

    def offer(self, item: T) -> bool:
        """Append ``item`` if it fits, without waiting: the consumer's fast path."""
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) >= self._limit:
            return False
        items.append(item)
        if self._getters.futures:
            self._getters.wake_one()
        return True

    def push(self, item: T) -> bool:
        """Append ``item`` even over the limit; False once full, when the producer must stop (see :meth:`when_room`).

        For a transport's frame callback: the frames of one read are taken
        whole, and reading pauses until the reader made room.
        """
        items = self._items
        if items is None:
            items = self._items = deque()
        items.append(item)
        if self._getters.futures:
            self._getters.wake_one()
        return len(items) < self._limit

    def appender(self) -> Callable[[T], None]:
        """The queue's own ``append``, for a producer that adds a batch and then calls :meth:`fed`."""
        if self._items is None:
            self._items = deque()
        return self._items.append

    def fed(self) -> bool:
        """After a batch of appends: wake a reader for each new item; False once full (see :meth:`when_room`)."""
        count = len(self)
        getters, woken = self._getters, 0
        while getters.futures and woken < count:
            getters.wake_one()
            woken += 1
        return count < self._limit

    def when_room(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the reader took the inbox down to half its limit (now, if it is there or closed)."""
        if len(self) <= self._low or self._end is not None:
            callback()
        else:
            self._on_room = callback

    async def put(self, item: T) -> None:
        """Append ``item``, waiting while the inbox is full (backpressure on the session)."""
        while len(self) >= self._limit and self._end is None:
            await self._putters.wait()
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._getters.wake_one()

    async def get(self) -> T:
        """Return the oldest message; once closed and empty, raise the closing exception."""
        while not (items := self._items):
            if self._end is not None:
                raise fresh_error(self._end)
            await self._getters.wait()
        item = items.popleft()
        self._putters.wake_one()
        if self._on_room is not None and len(items) <= self._low:
            self._room()
        return item

    def poll(self) -> T | None:
        """Remove and return the oldest message if there is one, without waiting: the reader's fast path."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._putters.futures:
            self._putters.wake_one()
        if self._on_room is not None and len(items) <= self._low:
            self._room()
        return item

    def _room(self) -> None:
        callback, self._on_room = self._on_room, None
        assert callback is not None
        callback()

    def close(self, end: BaseException) -> None:
        """Let readers drain what is left, then raise ``end`` from ``get()``."""
        if self._end is None:
            self._end = end
        self._getters.wake_all()
        self._putters.wake_all()


class Envelope:
    """A buffered message that may die in the outbox: it has a ``send(ttl=)`` deadline, or a request waits on it.

    Dying leaves a tombstone that the sender skips at flush, so a timeout
    costs O(1) however long the outbox is. Exactly one of three owners holds
    the message at any moment: the outbox (``BUFFERED``), the sender that took
    it (``TAKEN``), or ``stats.expired`` (``DEAD``).
    """

    __slots__ = ("message", "request", "state", "timer")

    BUFFERED = 0
    TAKEN = 1
    DEAD = 2

    def __init__(self, message: Any, request: Any = None) -> None:
        self.message = message
        self.request = request
        """The pending request this message carries, if any (a ``wsclient.replies.Request``)."""
        self.timer: asyncio.TimerHandle | None = None
        """The ``ttl`` timer that expires the message, if any."""
        self.state = Envelope.BUFFERED

    def take(self) -> Any:
        """Move the message from the outbox to the sender that writes it."""
        self.state = Envelope.TAKEN
        if self.timer is not None:
            self.timer.cancel()
        return self.message


_COMPACT_AT = 64
"""Tombstones tolerated before the queue is rebuilt without them (when they also outnumber live messages)."""


class Outbox(Generic[T]):
    """Messages handed to ``send()`` that no session has written yet, oldest first.

    A message with a deadline or a request is held in an :class:`Envelope`;
    one that expired stays in ``queue`` as a tombstone until the sender pops
    it, or until tombstones outnumber live messages and the queue is compacted.
    """

    __slots__ = ("_closed", "_dead", "_space", "_stats", "limit", "on_add", "queue")

    def __init__(self, limit: int, stats: Stats) -> None:
        self.queue: deque[T | Envelope] | None = None
        """Buffered messages and tombstones, oldest first (``None`` until the first); change it via the methods."""
        self.limit = limit
        self._stats = stats
        self._space = Waiters()
        self._closed = False
        self._dead = 0
        self.on_add: Callable[[], None] | None = None
        """Called after each message is buffered: the flushing session starts its sender (no task waits here)."""

    def __len__(self) -> int:
        """Live messages: tombstones do not count."""
        queue = self.queue
        return 0 if queue is None else len(queue) - self._dead

    def full(self) -> bool:
        return len(self) >= self.limit

    def items(self) -> list[T]:
        items: list[T] = []
        for item in self.queue or ():
            if type(item) is Envelope:
                if item.state is Envelope.BUFFERED:
                    items.append(item.message)
            else:
                items.append(item)  # type: ignore[arg-type]
        return items

    def add(self, item: T | Envelope, *, drop_oldest: bool = False) -> None:
        """Append ``item``; when full, raise ``BufferFull`` or drop the oldest message."""
        if len(self) >= self.limit:
            if not drop_oldest:
                raise BufferFull(self.limit)
            self._stats.dropped += 1
            if not len(self):
                # A zero-size outbox: the new message itself is the oldest.
                if type(item) is Envelope:
                    item.take()
                    if item.request is not None:
                        item.request.fail(BufferFull(self.limit))
                return
            oldest = self.pop()
            if type(oldest) is Envelope:
                oldest.take()
                if oldest.request is not None:
                    oldest.request.fail(BufferFull(self.limit))
        if self.queue is None:
            self.queue = deque()
        self.queue.append(item)
        self._stats.buffered = len(self)
        if (on_add := self.on_add) is not None:
            on_add()

    def pop(self) -> T | Envelope | None:
        """Remove and return the oldest live item, dropping tombstones before it; ``None`` if only tombstones were left.

        An :class:`Envelope` comes back still ``BUFFERED``: the caller takes it.
        """
        queue = self.queue
        if queue is None:
            raise IndexError("pop from an empty outbox")
        item = queue.popleft()
        while type(item) is Envelope and item.state is Envelope.DEAD:
            self._dead -= 1
            if not queue:
                return None
            item = queue.popleft()
        self._stats.buffered = len(self)
        self._space.wake_all()
        return item

    def expire(self, envelope: Envelope) -> bool:
        """Turn a buffered message into a tombstone, counted in ``stats.expired``; False if it had left already."""
        if envelope.state is not Envelope.BUFFERED:
            return False
        envelope.state = Envelope.DEAD
        if envelope.timer is not None:
            envelope.timer.cancel()
        self._dead += 1
        self._stats.expired += 1
        self._stats.buffered = len(self)
        if self._dead > _COMPACT_AT and self._dead > len(self):
            self.queue = deque(i for i in self.queue or () if type(i) is not Envelope or i.state is not Envelope.DEAD)
            self._dead = 0
        self._space.wake_all()
        return True

    def close(self) -> None:
        """Wake every waiter: nothing will be flushed any more; deadlines stop, what is left stays unsent."""
        self._closed = True
        for item in self.queue or ():
            if type(item) is Envelope and item.timer is not None:
                item.timer.cancel()
        self._space.wake_all()

    def wake(self) -> None:
        """Wake every task waiting for space so it can look at the client's state again."""
        self._space.wake_all()

    async def wait_for_space(self) -> None:
        """Return at the next wake-up (a pop, ``wake()``, or close), or at once if a message fits or it is closed.

        The caller looks again at what it waits for: with ``limit == 0`` a
        message never fits, and only a session ready to take it directly helps.
        """
        if len(self) >= self.limit and not self._closed:
            await self._space.wait()

    async def wait_until_empty(self) -> None:
        """Return once every buffered message was written, or once the outbox is closed."""
        while len(self) and not self._closed:
            await self._space.wait()


class SessionStart:
    """In the client's inbox, before the first message of a session: the messages after it came from that session.

    ``recv()`` takes it out of the stream and remembers the id, so that the
    application can tell which session a message it reads late came from.
    """

    __slots__ = ("session_id",)

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id


Deliver = Inbox[Any] | Callable[[Any], Awaitable[None]]
"""Where a session hands each received message: the client's inbox, or a wrapped ``on_message`` handler."""
