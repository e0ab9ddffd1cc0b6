"""Backoff settings as tenacity strategies: delays asserted on a synthetic retry state, never slept."""

from __future__ import annotations

import random

import pytest
from tenacity import AsyncRetrying, RetryCallState, RetryError
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from wsclient import Backoff, Cause, ClosedBy, SessionEnd
from wsclient.policy import SessionDropped


def state(attempt: int, exc: BaseException | None = None) -> RetryCallState:
    retry_state = RetryCallState(retry_object=AsyncRetrying(), fn=None, args=(), kwargs={})
    retry_state.attempt_number = attempt
    error = exc if exc is not None else ConnectionRefusedError()
    retry_state.set_exception((type(error), error, None))
    return retry_state


def test_without_jitter_the_bound_grows_geometrically_up_to_maximum() -> None:
    wait = Backoff(initial=0.5, maximum=4.0, multiplier=2.0, jitter=False).wait()
    assert [wait(state(n)) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]


def test_multiplier_sets_the_growth() -> None:
    wait = Backoff(initial=1.0, maximum=100.0, multiplier=3.0, jitter=False).wait()
    assert [wait(state(n)) for n in range(1, 5)] == [1.0, 3.0, 9.0, 27.0]


def test_default_bounds_double_from_half_a_second_to_thirty() -> None:
    wait = Backoff(jitter=False).wait()
    assert [wait(state(n)) for n in (1, 2, 3, 4, 5, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert wait(state(7)) == 30.0
    assert wait(state(50)) == 30.0


def test_full_jitter_stays_within_the_bound_and_spreads() -> None:
    random.seed(1234)
    wait = Backoff(initial=0.5, maximum=4.0, multiplier=2.0).wait()
    for attempt, bound in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        delays = [wait(state(attempt)) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        # Full jitter: the whole range is used, not just the top of it.
        assert min(delays) < bound * 0.1
        assert max(delays) > bound * 0.9


def test_retry_after_lengthens_the_next_delay() -> None:
    wait = Backoff(initial=0.5, maximum=4.0, jitter=False).wait()
    rejected = InvalidStatus(Response(503, "busy", Headers({"Retry-After": "7"})))
    assert wait(state(1, rejected)) == 0.5 + 7.0


def test_retry_after_is_capped() -> None:
    wait = Backoff(initial=0.5, maximum=4.0, multiplier=2.0, jitter=False, max_retry_after=20.0).wait()
    rejected = InvalidStatus(Response(429, "slow down", Headers({"Retry-After": "99999"})))
    assert wait(state(2, rejected)) == 1.0 + 20.0


def test_close_1013_adds_the_overload_delay() -> None:
    wait = Backoff(initial=0.5, maximum=4.0, jitter=False, overload_delay=3.0).wait()
    dropped = SessionDropped(SessionEnd(1013, "busy", ClosedBy.SERVER, Cause.CLOSED, 0.1))
    assert wait(state(1, dropped)) == 0.5 + 3.0


async def test_stop_after_max_attempts_in_a_real_retry_loop() -> None:
    slept: list[float] = []

    async def record(delay: float) -> None:
        slept.append(delay)

    calls = 0

    async def always_refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError

    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0, jitter=False)
    retrying = AsyncRetrying(sleep=record, wait=backoff.wait(), stop=Backoff.stop(max_attempts=5))
    with pytest.raises(RetryError):
        await retrying(always_refused)
    assert calls == 5
    assert slept == [1.0, 2.0, 4.0, 8.0]


def test_stop_never_without_limits() -> None:
    stop = Backoff.stop()
    assert stop(state(10_000)) is False


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"initial": -1}, ValueError, "initial"),
        ({"maximum": -0.5}, ValueError, "maximum"),
        ({"initial": 2.0, "maximum": 1.0}, ValueError, "maximum"),
        ({"multiplier": 0.5}, ValueError, "multiplier"),
        ({"multiplier": "2"}, TypeError, "multiplier"),
        ({"initial": "1"}, TypeError, "initial"),
        ({"stable_after": -1}, ValueError, "stable_after"),
        ({"overload_delay": float("nan")}, ValueError, "overload_delay"),
        ({"max_retry_after": True}, TypeError, "max_retry_after"),
    ],
)
def test_bad_settings_name_the_argument(kwargs: dict[str, object], error: type[Exception], name: str) -> None:
    with pytest.raises(error, match=name):
        Backoff(**kwargs)  # type: ignore[arg-type]


# How much of an outage's count a session shorter than stable_after carries on: the bound of the delay after
# its drop (initial * multiplier ** carried) stays within initial * stable_after / duration.
@pytest.mark.parametrize(
    ("attempts", "duration", "carried"),
    [
        (5, 0.0, 5),  # accepted, then dropped at once: the whole count, the delays keep growing
        (50, 0.0, 50),
        (5, 0.05, 5),  # 200: the count may grow to 7 (64 initial delays, the maximum's bound)
        (9, 0.05, 7),
        (9, 0.3, 5),  # a few hundred milliseconds: up to 32 initial delays (16 s)
        (3, 0.3, 3),
        (9, 1.0, 3),  # one second: up to 8 (4 s)
        (9, 2.5, 2),  # exactly 4: up to 4 initial delays, inclusive
        (9, 2.6, 1),
        (9, 4.5, 1),  # the health check's 4.5 s: up to 2 initial delays (1 s)
        (9, 5.0, 1),
        (9, 5.1, 0),  # past half of stable_after: from initial again
        (9, 9.99, 0),
        (9, 10.0, 0),  # stable
        (9, 3600.0, 0),
        (0, 0.3, 0),
        (0, 0.0, 0),
    ],
)
def test_a_short_session_carries_the_count_its_duration_allows(attempts: int, duration: float, carried: int) -> None:
    assert Backoff().carried_attempts(attempts, duration) == carried


def test_the_delay_after_a_short_session_stays_within_initial_times_stable_after_over_its_duration() -> None:
    backoff = Backoff(initial=0.5, maximum=1e9, multiplier=1.5, jitter=False, stable_after=10.0)
    wait = backoff.wait()
    for duration in (0.001, 0.01, 0.1, 0.3, 1.0, 2.0, 4.5, 6.0, 6.7, 9.0, 9.99):
        carried = backoff.carried_attempts(1000, duration)
        assert wait(state(carried + 1)) <= 0.5 * 10.0 / duration
        # and no less than the next bound down: the largest delay the cap allows
        assert wait(state(carried + 2)) > 0.5 * 10.0 / duration


@pytest.mark.parametrize(
    ("backoff", "attempts", "duration", "carried"),
    [
        (Backoff(multiplier=1.0), 7, 9.0, 7),  # a constant delay: nothing to pay back before stable_after
        (Backoff(multiplier=1.0), 7, 10.0, 0),
        (Backoff(stable_after=0), 7, 0.0, 0),  # every session is stable
        (Backoff(initial=0), 7, 4.5, 1),  # the cap is in multiples of initial, whatever initial is
        (Backoff(multiplier=3.0), 9, 1.0, 2),  # 3**2 <= 10 < 3**3
        (Backoff(), 10**6, 1e-300, 999),  # 2**999 <= 1e301 < 2**1000
        (Backoff(), 10**6, 5e-324, 10**6),  # the ratio and the product overflow to inf, which compare
        (Backoff(), 10**6, 1e-9, 33),
    ],
)
def test_carried_attempts_at_the_edges(backoff: Backoff, attempts: int, duration: float, carried: int) -> None:
    assert backoff.carried_attempts(attempts, duration) == carried


@pytest.mark.parametrize(("attempts", "duration"), [(-1, 1.0), (1, -0.1), (1, float("nan"))])
def test_carried_attempts_rejects_what_no_session_reports(attempts: int, duration: float) -> None:
    with pytest.raises(ValueError, match=r"attempts|duration"):
        Backoff().carried_attempts(attempts, duration)
