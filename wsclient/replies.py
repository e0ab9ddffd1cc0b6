"""Pending requests and the replies that resolve them.

A request is a future keyed by what ``reply_key`` finds in its reply. It is
bound to the session that writes its message, so that session's end fails it
at once; the consumer of that session resolves it before delivering anything.
Keys match by type as well as value: ``True``, ``1`` and ``1.0`` are equal in
Python, but a reply whose id is ``true`` or ``1.0`` does not answer request ``1``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

from .buffers import Envelope, Outbox
from .errors import ClientClosed, RequestInterrupted
from .logs import describe_error

if TYPE_CHECKING:
    from .config import Data

__all__ = ["ReplyKey", "Request", "Requests", "json_field", "typed"]

ReplyKey = Callable[[Any], Hashable | None]
"""Finds the key of the request a message answers, or ``None`` when it answers none."""


def json_field(name: str) -> ReplyKey:
    """A ``reply_key`` reading the top-level field ``name`` of a JSON object (``json_field("id")`` for JSON-RPC).

    A message that does not mention ``"name"`` is not parsed at all; one that
    is not a JSON object, or whose field is a list or an object, answers no
    request, nor does one nested too deeply for Python's parser (a
    ``RecursionError`` is the message's fault, not the application's).

    Args:
        name: The field that carries the request's key.

    Returns:
        A ``reply_key`` for :class:`wsclient.Client`.

    Raises:
        TypeError: ``name`` is not a non-empty ``str``.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    text = json.dumps(name)
    raw = text.encode()

    def reply_key(message: Data) -> Hashable | None:
        if (text not in message) if isinstance(message, str) else (raw not in message):
            return None
        try:
            document = json.loads(message)
        except (ValueError, RecursionError):
            return None
        if type(document) is not dict:
            return None
        value = document.get(name)
        return None if isinstance(value, list | dict) else value

    reply_key.__qualname__ = f"json_field({name!r})"
    return reply_key


def typed(key: Hashable) -> Hashable:
    """The key of ``key`` among pending requests: its type as well as its value, in tuples too.

    Python finds ``True == 1 == 1.0`` and hashes them alike; a reply id of
    another type is another id all the same (JSON ``true`` is not ``1``).
    """
    if type(key) is tuple:
        return (tuple, *map(typed, key))
    return (type(key), key)


class Request:
    """One pending request: its future, the message that carries it, and the session that wrote it."""

    __slots__ = ("envelope", "future", "key", "sent", "session", "slot")

    def __init__(self, key: Hashable, future: asyncio.Future[Any]) -> None:
        self.key = key
        self.slot = typed(key)
        """Its key in ``Requests.pending``: the key with its type."""
        self.future = future
        self.envelope: Envelope | None = None
        """The buffered message, while the outbox holds it."""
        self.session: Any = None
        """The session that wrote the message; only its consumer resolves the request."""
        self.sent = False
        """Whether the message was handed to a connection."""

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class Requests:
    """The pending requests of one client (or of one session's ``on_connect``), by key."""

    __slots__ = ("_log", "_reply_key", "_reported", "_stats", "_stopping", "pending")

    def __init__(self, reply_key: ReplyKey, stats: Any, log: Any, stopping: Callable[[], bool] = lambda: False) -> None:
        self.pending: dict[Hashable, Request] = {}
        """Empty unless a request waits: the consumer tests it before calling ``reply_key``. Keyed by :func:`typed`."""
        self._reply_key = reply_key
        self._stats = stats
        self._log = log
        self._stopping = stopping
        self._reported = False

    def add(self, key: Hashable) -> Request:
        """Register a request under ``key``; a key already pending is a ``ValueError``."""
        if key is None:
            raise ValueError("key must not be None: reply_key returns None for a message that is no reply")
        hash(key)  # a TypeError for an unhashable key
        request = Request(key, asyncio.get_running_loop().create_future())
        if request.slot in self.pending:
            raise ValueError(f"a request with key {key!r} is already pending")
        self.pending[request.slot] = request
        return request

    def resolve(self, message: Any, session: Any) -> bool:
        """Resolve the request ``message`` answers on ``session`` and say so; False lets the message flow on.

        ``reply_key`` raising counts as "not a reply"; the first failure is logged with its traceback.
        A plain function raising ``CancelledError`` cancels nothing: it is such a failure too.
        """
        try:
            key = self._reply_key(message)
            if key is None:
                return False
            slot = typed(key)
            request = self.pending.get(slot)
        except (Exception, asyncio.CancelledError) as exc:
            self._report(exc)
            return False
        if request is None or request.session is not session:
            return False
        del self.pending[slot]
        if session.bound is not None:
            session.bound.discard(request)
        self._stats.replies += 1
        if not request.future.done():
            request.future.set_result(message)
        return True

    def _report(self, exc: BaseException) -> None:
        if not self._reported:
            self._reported = True
            self._log.error("reply_key_failed", error=describe_error(exc), exc_info=exc)

    def forget(self, request: Request, outbox: Outbox[Any] | None) -> bool:
        """The request is over (replied, timed out, cancelled, failed): drop it everywhere.

        Returns True when its message was still buffered, and is now a tombstone never to be sent.
        """
        if self.pending.get(request.slot) is request:
            del self.pending[request.slot]
        if request.session is not None and request.session.bound is not None:
            request.session.bound.discard(request)
        envelope = request.envelope
        request.envelope = None
        return envelope is not None and outbox is not None and outbox.expire(envelope)

    def fail_all(self, make_error: Callable[[Request], BaseException], outbox: Outbox[Any] | None) -> None:
        """Fail every pending request (the client stopped); buffered messages of requests become tombstones."""
        for request in list(self.pending.values()):
            self.forget(request, outbox)
            request.fail(make_error(request))

    def interrupt(self, requests: Iterable[Request], session_id: str, end: Any) -> None:
        """Fail requests whose session ended before their reply: ``ClientClosed`` if the client is closing."""
        closing = self._stopping()
        for request in requests:
            if closing:
                error: Exception = ClientClosed(
                    f"client closed before the reply to request {request.key!r}: "
                    "the server may or may not have acted on it"
                )
            else:
                error = RequestInterrupted(request.key, session_id, end)
            request.fail(error)
