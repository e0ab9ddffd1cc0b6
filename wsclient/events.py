"""The client's states, their legal transitions, and the record of how a session ended.

Everything that affects the state machine lives in this file: the transitions
are a table, and an illegal transition raises.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Cause", "ClosedBy", "SessionEnd", "State", "TRANSITIONS", "check_transition"]


class State(enum.Enum):
    """Where the client is in its life."""

    IDLE = "idle"
    """Built, not started yet."""
    CONNECTING = "connecting"
    """Opening its first session."""
    OPEN = "open"
    """A session is live."""
    RECONNECTING = "reconnecting"
    """A session ended; backing off and opening the next one."""
    CLOSING = "closing"
    """``close()`` was called; the last session is closing."""
    CLOSED = "closed"
    """Stopped for good."""


TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CONNECTING, State.CLOSING, State.CLOSED}),
    State.CONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.OPEN: frozenset({State.RECONNECTING, State.CLOSING, State.CLOSED}),
    State.RECONNECTING: frozenset({State.OPEN, State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


def check_transition(old: State, new: State) -> State:
    """Return ``new`` if the client may go from ``old`` to it, else raise ``RuntimeError``."""
    if new not in TRANSITIONS[old]:
        raise RuntimeError(f"illegal state transition {old.value} -> {new.value}")
    return new


class ClosedBy(enum.StrEnum):
    """Which side ended a connection (a ``str``: ``ClosedBy.SERVER == "server"``)."""

    SERVER = "server"
    """The server sent the first close frame."""
    CLIENT = "client"
    """This side sent the first close frame (``close()``, or failing a bad connection)."""
    NOBODY = "nobody"
    """No close frame either way: reset, abort, heartbeat timeout (code 1006)."""


class Cause(enum.StrEnum):
    """Why a session ended, as far as this side can tell (a ``str``: ``Cause.CLOSED == "closed"``)."""

    CLOSED = "closed"
    """A close frame was exchanged."""
    CONNECTION_LOST = "connection_lost"
    """The TCP connection broke without a close handshake."""
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"
    """No pong and no inbound data within the heartbeat timeout."""
    IDLE_TIMEOUT = "idle_timeout"
    """No inbound data for ``idle_timeout``."""
    WRITE_STALLED = "write_stalled"
    """Data waited to be written and the peer took none of it within the heartbeat timeout."""
    USER_CLOSE = "user_close"
    """The application called ``close()``."""


@dataclass(frozen=True, slots=True)
class SessionEnd:
    """How one session ended: the input of the close policy.

    ``code`` is the close code that matters: the one received from the server
    when it closed, the one this side sent when it failed the connection, and
    1006 when no close frame went either way.

    Attributes:
        code: The close code that mattered (1006 when no close frame went either way).
        reason: The close reason, ``""`` when none.
        closed_by: Which side closed: :class:`ClosedBy`.
        cause: Why the session ended: :class:`Cause`.
        duration: Seconds the session lasted.
    """

    code: int
    reason: str
    closed_by: ClosedBy
    cause: Cause
    duration: float
