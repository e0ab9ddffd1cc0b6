"""Counters and the outage history of one client.

A data collector reads ``outages`` to know exactly when its data has a gap:
each entry is one disconnected period with its start, end and cause.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .events import Cause, ClosedBy

__all__ = ["Outage", "Stats"]

MAX_OUTAGES = 1000
"""Outages kept in memory; older ones are counted in ``Stats.outages_total`` only."""


@dataclass(slots=True)
class Outage:
    """One period without a live session. Times are wall-clock epoch seconds.

    Attributes:
        start: When the session was lost (or the first attempt began).
        cause: Why: the cause of the session's end, or of the first failed attempt.
        end: When a session opened again; ``None`` while the outage lasts.
        attempts: Connection attempts during the outage.
    """

    start: float
    cause: Cause
    end: float | None = None
    attempts: int = 0

    @property
    def duration(self) -> float | None:
        """Seconds without a session, or ``None`` while the outage lasts."""
        return None if self.end is None else self.end - self.start


@dataclass(slots=True)
class Stats:
    """What happened to a client so far; read it at any time, it is updated in place."""

    sessions: int = 0
    """Sessions opened (handshake and ``on_connect`` both succeeded)."""
    reconnects: int = 0
    """Sessions opened after the first one."""
    connect_attempts: int = 0
    """Opening handshakes tried, failed ones included."""
    messages_in: int = 0
    """Messages received from the server and delivered to the stream (replies count in ``replies``)."""
    messages_out: int = 0
    """Messages written into a connection."""
    buffered: int = 0
    """Messages waiting in the outbox right now."""
    dropped: int = 0
    """Buffered messages discarded by ``overflow="drop_oldest"``."""
    expired: int = 0
    """Buffered messages removed unsent: their ``send(ttl=)`` ran out, or their request timed out or was given up."""
    sends_interrupted: int = 0
    """Messages whose write a broken connection or a cancellation interrupted.

    They may or may not have reached the server: only an application
    acknowledgement proves delivery.
    """
    replies: int = 0
    """Messages that resolved a pending request (they are not delivered to the stream)."""
    handler_errors: int = 0
    """Exceptions raised by ``on_message`` (logged, rate-limited; the stream goes on)."""
    last_close_code: int | None = None
    """The close code of the last session that ended (the one that mattered, see ``SessionEnd``)."""
    last_close_reason: str = ""
    """The close reason of the last session that ended."""
    last_closed_by: ClosedBy | None = None
    """Which side closed the last session that ended."""
    last_cause: Cause | None = None
    """Why the last session ended."""
    down_since: float | None = None
    """Since when (epoch seconds) the client has had no open session, first connect included; ``None`` while open."""
    outages_total: int = 0
    """Outages since the client started, including those no longer kept in ``outages``."""
    _outages: deque[Outage] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def outages(self) -> deque[Outage]:
        """The most recent outages, oldest first; the last one may still be going on."""
        # Made on first use: an empty deque costs 760 bytes, and most clients never see an outage.
        if self._outages is None:
            self._outages = deque(maxlen=MAX_OUTAGES)
        return self._outages

    @property
    def current_outage(self) -> Outage | None:
        """The outage going on now, if any."""
        outages = self._outages
        if outages and outages[-1].end is None:
            return outages[-1]
        return None
