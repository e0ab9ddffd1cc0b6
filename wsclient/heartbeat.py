"""Heartbeat settings and the loops that notice a dead peer.

A peer is alive when anything proves it within the timeout: its pong, any
inbound bytes, or the kernel draining what we wrote. A session whose reading
we paused ourselves (the application is not reading) is backpressured, not
dead, so it is never declared dead for that. A peer that keeps sending but
took none of our waiting bytes within the timeout is stalled, however lively
its own data looks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import CallbackError
from .events import Cause

__all__ = ["Heartbeat", "Link", "heartbeat_message", "run_heartbeat", "run_idle_watchdog"]

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


async def run_heartbeat(settings: Heartbeat, link: Link, log: Any = None) -> Cause:
    """Ping until the peer stops giving signs of life, then return why: heartbeat timeout or stalled writes.

    A missing pong is forgiven, and logged as ``heartbeat_deferred``, when
    reading is paused on purpose (always), or when data arrived or drained
    meanwhile (up to ``missed_pongs`` times in a row). Writes blocked for the
    whole timeout with nothing taken end the session as ``Cause.WRITE_STALLED``.
    """
    loop = asyncio.get_running_loop()
    next_at = loop.time() + settings.interval
    missed = 0
    while True:
        await asyncio.sleep(max(0.0, next_at - loop.time()))
        sent_at = loop.time()
        next_at = sent_at + settings.interval
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
        if pong is not None and _answered(pong):
            missed = 0
            continue
        reason = _other_sign_of_life(link, sent_at)
        if reason is None:
            return Cause.HEARTBEAT_TIMEOUT
        if reason == "data_received" and link.write_stalled(sent_at, backlog):
            # The peer talks but takes nothing we write: inbound data proves nothing about our sends.
            return Cause.WRITE_STALLED
        if pong is not None and reason != "reading_paused":
            # Only a pong proves the peer still reads what we send.
            missed += 1
            if missed >= settings.missed_pongs:
                return Cause.HEARTBEAT_TIMEOUT
        if log is not None:
            log.debug("heartbeat_deferred", reason=reason, missed=missed)


def _other_sign_of_life(link: Link, since: float) -> str | None:
    """Why the peer counts as alive without its pong, or ``None`` if nothing says so.

    Our own backpressure comes first: with reading paused, the pong may be
    waiting unread in the socket, and that is never held against the peer.
    """
    if link.reading_paused():
        return "reading_paused"
    if link.last_rx >= since:
        return "data_received"
    if link.last_drain >= since:
        return "data_drained"
    return None


def _answered(pong: Awaitable[float]) -> bool:
    """Whether a pong waiter completed with a pong (not with the connection closing)."""
    if isinstance(pong, asyncio.Future) and pong.done():
        return not pong.cancelled() and pong.exception() is None
    return False


async def run_idle_watchdog(idle_timeout: float, link: Link) -> Cause:
    """Return ``Cause.IDLE_TIMEOUT`` once no inbound data arrived for ``idle_timeout`` seconds."""
    loop = asyncio.get_running_loop()
    while True:
        deadline = link.last_rx + idle_timeout
        now = loop.time()
        if now < deadline:
            await asyncio.sleep(deadline - now)
        elif link.reading_paused():
            await asyncio.sleep(idle_timeout)
        else:
            return Cause.IDLE_TIMEOUT
