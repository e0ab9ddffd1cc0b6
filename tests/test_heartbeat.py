"""The heartbeat's and the idle watchdog's verdicts, as tables: every row is one situation of a beat or a look."""

from __future__ import annotations

import pytest

from wsclient import Cause
from wsclient.heartbeat import beat_verdict, idle_verdict

TIMEOUT = Cause.HEARTBEAT_TIMEOUT
STALLED = Cause.WRITE_STALLED

# pinged, answered, sign of life, stalled, missed before, missed_pongs -> verdict, missed after
BEATS = [
    # A pong answers everything and forgives what was missed before.
    (True, True, None, False, 0, 3, None, 0),
    (True, True, None, False, 2, 3, None, 0),
    # No pong and no other sign of life: dead, whatever came before.
    (True, False, None, False, 0, 3, TIMEOUT, 0),
    (False, False, None, False, 0, 3, TIMEOUT, 0),
    (True, False, None, True, 1, 3, TIMEOUT, 1),
    # Data arrived but the pong did not: forgiven up to missed_pongs times in a row.
    (True, False, "data_received", False, 0, 3, None, 1),
    (True, False, "data_received", False, 1, 3, None, 2),
    (True, False, "data_received", False, 2, 3, TIMEOUT, 3),
    (True, False, "data_received", False, 0, 1, TIMEOUT, 1),
    (True, False, "data_drained", False, 0, 3, None, 1),
    (True, False, "data_drained", False, 2, 3, TIMEOUT, 3),
    # Data arrived while our writes stayed blocked with nothing taken: stalled, not dead.
    (True, False, "data_received", True, 0, 3, STALLED, 0),
    (False, False, "data_received", True, 0, 3, STALLED, 0),
    # Stalled writes with only drained data as a sign is a contradiction the link never reports; drain wins.
    (True, False, "data_drained", True, 0, 3, None, 1),
    # Our own backpressure is never held against the peer, and does not count as a missed pong.
    (True, False, "reading_paused", False, 0, 3, None, 0),
    (True, False, "reading_paused", False, 2, 3, None, 2),
    (True, False, "reading_paused", True, 2, 3, None, 2),
    (False, False, "reading_paused", False, 0, 1, None, 0),
    # An application message has no pong: any inbound data within the timeout is its answer.
    (False, False, "data_received", False, 0, 1, None, 0),
    (False, False, "data_drained", False, 5, 1, None, 5),
]


@pytest.mark.parametrize(("pinged", "answered", "sign", "stalled", "missed", "missed_pongs", "cause", "after"), BEATS)
def test_beat_verdict(
    pinged: bool,
    answered: bool,
    sign: str | None,
    stalled: bool,
    missed: int,
    missed_pongs: int,
    cause: Cause | None,
    after: int,
) -> None:
    verdict = beat_verdict(
        pinged=pinged, answered=answered, sign=sign, stalled=stalled, missed=missed, missed_pongs=missed_pongs
    )
    assert verdict == (cause, after)


# now, last_rx, idle_timeout, reading paused -> verdict, when to look next
LOOKS = [
    # Data came recently: look again when the silence could first have lasted long enough.
    (100.0, 99.0, 5.0, False, None, 104.0),
    (100.0, 99.0, 5.0, True, None, 104.0),
    (100.0, 100.0, 5.0, False, None, 105.0),
    # Silent for the whole timeout: idle, at once.
    (100.0, 95.0, 5.0, False, Cause.IDLE_TIMEOUT, 100.0),
    (100.0, 50.0, 5.0, False, Cause.IDLE_TIMEOUT, 100.0),
    # Silent because we paused reading: our doing, look again a whole timeout later.
    (100.0, 95.0, 5.0, True, None, 105.0),
    (100.0, 50.0, 5.0, True, None, 105.0),
]


@pytest.mark.parametrize(("now", "last_rx", "idle_timeout", "paused", "cause", "next_at"), LOOKS)
def test_idle_verdict(
    now: float, last_rx: float, idle_timeout: float, paused: bool, cause: Cause | None, next_at: float
) -> None:
    assert idle_verdict(now, last_rx, idle_timeout, paused) == (cause, next_at)
