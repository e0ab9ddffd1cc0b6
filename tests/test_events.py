"""The state machine: every pair of states is either in the transition table or raises."""

from __future__ import annotations

import itertools

import pytest

from wsclient import State
from wsclient.events import TRANSITIONS, check_transition

S = State
ALLOWED = {
    (S.IDLE, S.CONNECTING),
    (S.IDLE, S.CLOSING),
    (S.IDLE, S.CLOSED),
    (S.CONNECTING, S.OPEN),
    (S.CONNECTING, S.CLOSING),
    (S.CONNECTING, S.CLOSED),
    (S.OPEN, S.RECONNECTING),
    (S.OPEN, S.CLOSING),
    (S.OPEN, S.CLOSED),
    (S.RECONNECTING, S.OPEN),
    (S.RECONNECTING, S.CLOSING),
    (S.RECONNECTING, S.CLOSED),
    (S.CLOSING, S.CLOSED),
}


def test_table_is_exactly_the_allowed_transitions() -> None:
    assert {(old, new) for old, targets in TRANSITIONS.items() for new in targets} == ALLOWED


@pytest.mark.parametrize(("old", "new"), sorted(ALLOWED, key=lambda p: (p[0].value, p[1].value)))
def test_allowed(old: State, new: State) -> None:
    assert check_transition(old, new) is new


@pytest.mark.parametrize(
    ("old", "new"),
    [p for p in itertools.product(State, State) if p not in ALLOWED],
)
def test_illegal_transition_raises(old: State, new: State) -> None:
    with pytest.raises(RuntimeError, match=f"{old.value} -> {new.value}"):
        check_transition(old, new)
