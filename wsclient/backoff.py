"""Backoff settings turned into tenacity wait and stop strategies.

The delays are tenacity's own: exponential with full jitter by default
(``wait_random_exponential``), plus whatever the server asked for through
``Retry-After`` or close code 1013.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tenacity import RetryCallState
from tenacity.stop import stop_after_attempt, stop_after_delay, stop_base, stop_never
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential

from .policy import retry_delay_hint

__all__ = ["Backoff", "stop_after_outage", "wait_server_hint"]


class wait_server_hint(wait_base):  # noqa: N801 - named like tenacity's strategies
    """Wait what the server asked for: ``Retry-After`` on 429/503, or a 1013 close."""

    def __init__(self, overload_delay: float, cap: float) -> None:
        self.overload_delay = overload_delay
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        return retry_delay_hint(exc, overload_delay=self.overload_delay, cap=self.cap)


class stop_after_outage(stop_base):  # noqa: N801 - named like tenacity's strategies
    """Stop once the client has been without an open session for ``max_outage`` seconds.

    tenacity's ``stop_after_delay`` counts from the start of the retry loop,
    which also spans short sessions that were up; this counts only the time
    down, read from ``down_since`` (a ``clock`` reading, ``None`` while a session is open).
    """

    def __init__(
        self, max_outage: float, down_since: Callable[[], float | None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_outage = max_outage
        self.down_since = down_since
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        since = self.down_since()
        return since is not None and self.clock() - since >= self.max_outage


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait between connection attempts.

    Attempt *n* waits a random time in ``[0, min(maximum, initial * multiplier**(n-1))]``
    ("full jitter", which spreads a crowd of clients reconnecting to one
    server), or exactly that bound with ``jitter=False``. The count restarts
    after a session stayed open for ``stable_after`` seconds; a shorter
    session pays part of it back (``carried_attempts``), so a server that
    accepts and drops at once is not hammered in a tight loop, while one that
    stayed up for seconds is reconnected to promptly.
    """

    initial: float = 0.5
    """Upper bound of the first delay, in seconds."""
    maximum: float = 30.0
    """Upper bound of any delay, in seconds."""
    multiplier: float = 2.0
    """Growth of the bound from one attempt to the next.

    A smaller one (1.5, say) brings a client back sooner after a short outage,
    but packs a crowd's attempts closer together when a server restarts under
    many clients: the benchmarks measure both.
    """
    jitter: bool = True
    """Full jitter (random in ``[0, bound]``); ``False`` waits the bound itself."""
    stable_after: float = 10.0
    """Seconds a session must stay open before the next outage starts from ``initial`` again.

    A shorter session of ``d`` seconds caps the bound of the next delay at
    ``initial * stable_after / d`` (see ``carried_attempts``).
    """
    overload_delay: float = 5.0
    """Extra delay after close 1013 or a 429/503 that gave no usable ``Retry-After``."""
    max_retry_after: float = 300.0
    """Upper bound of a server's ``Retry-After``, so a hostile value cannot park the client."""

    def __post_init__(self) -> None:
        for name in ("initial", "maximum", "stable_after", "overload_delay", "max_retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"Backoff {name} must be a number, got {value!r}")
            if not value >= 0:
                raise ValueError(f"Backoff {name} must be >= 0, got {value!r}")
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, int | float):
            raise TypeError(f"Backoff multiplier must be a number, got {self.multiplier!r}")
        if not self.multiplier >= 1:
            raise ValueError(f"Backoff multiplier must be >= 1, got {self.multiplier!r}")
        if self.maximum < self.initial:
            raise ValueError(f"Backoff maximum ({self.maximum}) must be >= initial ({self.initial})")

    def carried_attempts(self, attempts: int, duration: float) -> int:
        """How many of an outage's attempts a session that lasted ``duration`` seconds carries on.

        The drop of such a session is the next attempt after the carried ones,
        and waits that attempt's delay. A session that stayed up ``d`` seconds
        caps the bound of that delay at ``initial * stable_after / d``: one that
        lasted ``stable_after`` restarts from ``initial``, one half as long
        allows twice the delay, and one that ended at once caps nothing, so the
        count goes on growing against a server that accepts and drops at once or
        within a few hundred milliseconds. Once the count has grown against a
        server that keeps dropping after ``d`` seconds, each cycle lasts ``d``
        plus a delay of more than ``initial * stable_after / (multiplier * d)``
        (half that with full jitter, on average): with the defaults, at most
        one connection every 2.2 s on average, whatever ``d`` is. A session of
        several seconds lets the client come back promptly after it.

        Args:
            attempts: The attempts of the outage before the session, the one that opened it included.
            duration: How long the session stayed open, in seconds.

        Returns:
            The attempts carried on: ``attempts`` at most, 0 once ``duration >= stable_after``.

        Raises:
            ValueError: ``attempts`` or ``duration`` is negative.
        """
        if attempts < 0:
            raise ValueError(f"attempts must be >= 0, got {attempts!r}")
        if not duration >= 0:
            raise ValueError(f"duration must be >= 0, got {duration!r}")
        if duration >= self.stable_after:
            return 0
        if duration == 0 or self.multiplier == 1:
            return attempts
        # The largest c with multiplier**c <= stable_after / duration, by multiplication: no log rounding,
        # no overflow (the product reaches inf, which compares), and no more steps than ``attempts``.
        ratio = self.stable_after / duration
        growth = 1.0
        for carried in range(attempts):
            growth *= self.multiplier
            if growth > ratio:
                return carried
        return attempts

    def wait(self) -> wait_base:
        """The tenacity wait strategy for these settings."""
        base: wait_base
        if self.jitter:
            base = wait_random_exponential(multiplier=self.initial, max=self.maximum, exp_base=self.multiplier)
        else:
            base = wait_exponential(multiplier=self.initial, max=self.maximum, exp_base=self.multiplier)
        return base + wait_server_hint(self.overload_delay, self.max_retry_after)

    @staticmethod
    def stop(
        max_attempts: int | None = None,
        max_outage: float | None = None,
        down_since: Callable[[], float | None] | None = None,
    ) -> stop_base:
        """The tenacity stop strategy: after ``max_attempts`` attempts or ``max_outage`` seconds of one outage.

        With ``down_since`` (a ``time.monotonic()`` reading), only the time
        without an open session counts towards ``max_outage``.
        """
        stop: stop_base = stop_never
        if max_attempts is not None:
            stop = stop | stop_after_attempt(max_attempts)
        if max_outage is not None:
            stop = stop | (
                stop_after_delay(max_outage) if down_since is None else stop_after_outage(max_outage, down_since)
            )
        return stop
