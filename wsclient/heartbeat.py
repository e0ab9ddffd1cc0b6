"""Heartbeat settings, and the timers that notice a dead peer.

A peer is alive when anything proves it within the timeout: its pong, any
inbound bytes, or the kernel draining what we wrote. A session whose reading
we paused ourselves (the application is not reading) is backpressured, not
dead: while the peer's bytes wait unread in the socket, or when we read again
during the beat, its pong may be behind data we held back, and a missing pong
is never held against it. With reading paused and nothing waiting in the
socket, everything the peer sent was read (a pong too, which resolves its
waiter whatever the application does): its silence is its own. A peer that
keeps sending but took none of our waiting bytes within the timeout is
stalled, however lively its own data looks.

Bounds, with ``i = interval``, ``t = timeout`` and ``m = missed_pongs``: a
peer that goes silent (dead, or no longer reading and sending nothing) is
noticed within ``i + t``; one that keeps sending but no longer reads within
``i + m * max(i, t)`` (as ``write_stalled`` once our writes wait on it), as
long as the application leaves none of the peer's data unread; if reading
was paused in the last ``m`` beats, ``m * max(i, t)`` more (what the peer
queued meanwhile may still stand before its pong). Time the application
keeps the event loop busy without yielding comes on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import CallbackError
from .events import Cause

__all__ = [
    "Heartbeat",
    "HeartbeatTimer",
    "IdleTimer",
    "Link",
    "beat",
    "beat_verdict",
    "heartbeat_message",
    "held_back",
    "idle_verdict",
]

HeartbeatMessage = str | bytes | Callable[[], str | bytes]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Send a ping every ``interval`` seconds; no sign of life within ``timeout`` ends the session.

    A late pong is forgiven while data keeps arriving (a busy server's pong
    waits behind its own data), but only ``missed_pongs`` times in a row: a
    peer that sends and no longer reads is dead too. With ``message`` set, an
    application message (many servers want ``{"op": "ping"}``) is sent instead
    of a protocol ping, and any inbound data within ``timeout`` counts as the
    answer. ``message`` may be a callable returning the message, for servers
    that want a fresh timestamp.

    Attributes:
        interval: Seconds between two pings (or application messages).
        timeout: Seconds to wait for a pong, or any data, after a ping; also the time writes may stay
            blocked with nothing taken before the session ends as ``write_stalled``.
        message: ``None`` for a protocol ping; a ``str``/``bytes`` (or a callable returning one) for an
            application ping such as ``'{"op": "ping"}'``, answered by any inbound data.
        missed_pongs: Late pongs forgiven in a row while data keeps arriving.
    """

    interval: float = 20.0
    timeout: float = 10.0
    message: HeartbeatMessage | None = None
    missed_pongs: int = 3

    def __post_init__(self) -> None:
        for name in ("interval", "timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Heartbeat {name} must be a number, got {value!r}")
            if not value > 0:
                raise ValueError(f"Heartbeat {name} must be > 0, got {value!r}")
        if isinstance(self.missed_pongs, bool) or not isinstance(self.missed_pongs, int):
            raise TypeError(f"Heartbeat missed_pongs must be an int, got {self.missed_pongs!r}")
        if self.missed_pongs < 1:
            raise ValueError(f"Heartbeat missed_pongs must be >= 1, got {self.missed_pongs!r}")
        if self.message is not None and not (isinstance(self.message, str | bytes) or callable(self.message)):
            raise TypeError(f"Heartbeat message must be str, bytes or a callable, got {self.message!r}")


class Link(Protocol):
    """What the heartbeat needs to know of one connection."""

    @property
    def last_rx(self) -> float:
        """Loop time at which bytes last arrived."""

    @property
    def last_drain(self) -> float:
        """Loop time at which the write buffer last drained below its low-water mark."""

    def reading_paused(self) -> bool:
        """Whether reading is paused because the application is not consuming messages."""

    @property
    def reading_resumed(self) -> float:
        """Loop time at which reading last resumed after a pause (0.0 if it never paused)."""

    def unread(self) -> int | None:
        """Bytes the peer sent that wait unread in the socket, or None where that cannot be told."""

    async def send_heartbeat(self, message: str | bytes | None) -> Awaitable[float] | None:
        """Send a ping (``message is None``; returns the pong waiter) or an application message."""

    def write_backlog(self) -> int:
        """Bytes written by this side that the peer has not taken yet (waiting in the transport)."""

    def write_stalled(self, since: float, backlog: int) -> bool:
        """Whether writing stayed blocked since ``since`` with no byte of ``backlog`` taken by the peer."""


def heartbeat_message(settings: Heartbeat) -> str | bytes | None:
    """This beat's application message: ``settings.message``, or what its callable returns (checked)."""
    message = settings.message
    if not callable(message):
        return message
    try:
        message = message()
    except Exception as exc:
        raise CallbackError("Heartbeat.message", exc) from exc
    if not isinstance(message, str | bytes):
        error = TypeError(f"must return str or bytes, got {type(message).__name__}")
        raise CallbackError("Heartbeat.message", error) from error
    return message


def beat_verdict(
    *, pinged: bool, answered: bool, sign: str | None, stalled: bool, missed: int, missed_pongs: int
) -> tuple[Cause | None, int]:
    """What one beat says: the cause that ends the session (``None`` to go on) and the pongs missed in a row now.

    ``pinged``: a protocol ping was sent (its pong is the answer); ``answered``:
    that pong came within the timeout; ``sign``: the other sign of life seen
    since the beat (see :func:`_other_sign_of_life`), ``None`` for none;
    ``stalled``: our writes stayed blocked with nothing taken meanwhile.
    """
    if answered:
        return None, 0
    if sign is None:
        return Cause.HEARTBEAT_TIMEOUT, missed
    if sign == "data_received" and stalled:
        # The peer talks but takes nothing we write: inbound data proves nothing about our sends.
        return Cause.WRITE_STALLED, missed
    if pinged and sign != "reading_paused":
        # Only a pong proves the peer still reads what we send.
        missed += 1
        if missed >= missed_pongs:
            return Cause.HEARTBEAT_TIMEOUT, missed
    return None, missed


async def beat(settings: Heartbeat, link: Link, missed: int = 0, log: Any = None) -> tuple[Cause | None, int]:
    """Send one heartbeat, wait up to ``settings.timeout`` for an answer and judge it with :func:`beat_verdict`.

    A missing pong is forgiven, and logged as ``heartbeat_deferred``, when
    reading is paused on purpose (always), or when data arrived or drained
    meanwhile (up to ``missed_pongs`` times in a row). Writes blocked for the
    whole timeout with nothing taken end the session as ``Cause.WRITE_STALLED``.
    """
    sent_at = asyncio.get_running_loop().time()
    message = heartbeat_message(settings)
    backlog = link.write_backlog()
    pong: Awaitable[float] | None = None
    try:
        async with asyncio.timeout(settings.timeout):
            pong = await link.send_heartbeat(message)
            if pong is not None:
                await asyncio.shield(pong)
            else:
                await asyncio.sleep(settings.timeout)
    except TimeoutError:
        pass
    answered = pong is not None and _answered(pong)
    # Data we held back in the last missed_pongs beats may still stand between the peer and its pong.
    recent = sent_at - settings.missed_pongs * max(settings.interval, settings.timeout)
    sign = None if answered else _other_sign_of_life(link, sent_at, recent)
    stalled = sign == "data_received" and link.write_stalled(sent_at, backlog)
    cause, missed = beat_verdict(
        pinged=pong is not None,
        answered=answered,
        sign=sign,
        stalled=stalled,
        missed=missed,
        missed_pongs=settings.missed_pongs,
    )
    if cause is None and not answered and log is not None:
        log.debug("heartbeat_deferred", reason=sign, missed=missed)
    return cause, missed


Watch = Callable[[], Awaitable["Cause | None"]]
"""A coroutine function run as one step of a watcher: a cause ends the session, ``None`` goes on."""


class HeartbeatTimer:
    """Beats every ``settings.interval`` seconds, driven by a timer rather than a sleeping task.

    Between beats a connection holds one timer handle; a beat runs as a task
    (made by ``spawn``, which owns it and acts on its verdict) only while it
    sends and waits for its answer. The next beat is due ``interval`` after
    the previous one was sent, or at once if the answer took longer.
    """

    __slots__ = ("_link", "_log", "_loop", "_settings", "_spawn", "_task", "_timer", "beats", "missed")

    def __init__(
        self,
        settings: Heartbeat,
        link: Link,
        spawn: Callable[[Watch], asyncio.Task[None] | None],
        log: Any = None,
    ) -> None:
        self._settings = settings
        self._link = link
        self._spawn = spawn
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.missed = 0
        """Pongs missed in a row while other signs of life excused them."""
        self.beats = 0
        """Beats started so far."""

    @property
    def running(self) -> bool:
        """Whether a beat is due or in progress (between ``start()`` and ``stop()`` or a verdict)."""
        return self._timer is not None or self._task is not None

    def start(self) -> None:
        self._timer = self._loop.call_at(self._loop.time() + self._settings.interval, self._due)

    def stop(self) -> None:
        """Cancel the next beat and the one in progress, if any."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _due(self) -> None:
        self._timer = None
        self._task = self._spawn(self._beat)

    async def _beat(self) -> Cause | None:
        loop = self._loop
        next_at = loop.time() + self._settings.interval
        self.beats += 1
        try:
            cause, self.missed = await beat(self._settings, self._link, self.missed, self._log)
        finally:
            self._task = None
        if cause is None:
            self._timer = loop.call_at(next_at, self._due)
        return cause


def _other_sign_of_life(link: Link, since: float, recent: float | None = None) -> str | None:
    """Why the peer counts as alive without its pong, or ``None`` if nothing says so.

    Our own backpressure comes first: the pong may be waiting behind data we
    held back (see :func:`held_back`), and that is never held against the peer.
    """
    if held_back(link, since, recent):
        return "reading_paused"
    if link.last_rx >= since:
        return "data_received"
    if link.last_drain >= since:
        return "data_drained"
    return None


def held_back(link: Link, since: float, recent: float | None = None) -> bool:
    """Whether our paused reading may be what kept the peer's answer away since ``since``.

    Reading paused with the peer's bytes waiting unread in the socket (or
    where that cannot be told); or reading resumed since ``recent`` (default
    ``since``) and data came after it, or still waits to be read: what the
    peer queued while we did not read comes first, and its pong behind it. Reading paused with
    nothing waiting means everything the peer sent was read: a pong among it
    would have been seen, so the peer has not answered.
    """
    if link.reading_paused():
        unread = link.unread()
        return unread is None or unread > 0
    resumed = link.reading_resumed
    if resumed < (since if recent is None else recent):
        return False
    # Resumed, and read since, or not yet: the peer's bytes still wait (the pong may be among them).
    return link.last_rx >= resumed or link.unread() != 0


def _answered(pong: Awaitable[float]) -> bool:
    """Whether a pong waiter completed with a pong (not with the connection closing)."""
    if isinstance(pong, asyncio.Future) and pong.done():
        return not pong.cancelled() and pong.exception() is None
    return False


def idle_verdict(now: float, last_rx: float, idle_timeout: float, reading_paused: bool) -> tuple[Cause | None, float]:
    """Whether the peer has been silent for ``idle_timeout`` (``Cause.IDLE_TIMEOUT``), and when to look next.

    Silence while reading is paused on purpose is ours, not the peer's: look again a whole timeout later.
    """
    deadline = last_rx + idle_timeout
    if now < deadline:
        return None, deadline
    if reading_paused:
        return None, now + idle_timeout
    return Cause.IDLE_TIMEOUT, now


class IdleTimer:
    """Calls ``on_idle(Cause.IDLE_TIMEOUT)`` once no inbound data arrived for ``idle_timeout`` seconds.

    A timer looks at ``link.last_rx`` when the silence could first have lasted
    long enough, and again from there: no task waits meanwhile.
    """

    __slots__ = ("_idle_timeout", "_link", "_loop", "_on_idle", "_timer")

    def __init__(self, idle_timeout: float, link: Link, on_idle: Callable[[Cause], None]) -> None:
        self._idle_timeout = idle_timeout
        self._link = link
        self._on_idle = on_idle
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        """Whether a look is due (between ``start()`` and ``stop()`` or a verdict)."""
        return self._timer is not None

    def start(self) -> None:
        self._timer = self._loop.call_at(self._link.last_rx + self._idle_timeout, self._look)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _look(self) -> None:
        link = self._link
        cause, at = idle_verdict(self._loop.time(), link.last_rx, self._idle_timeout, link.reading_paused())
        if cause is None:
            self._timer = self._loop.call_at(at, self._look)
        else:
            self._timer = None
            self._on_idle(cause)
