"""The connection supervisor: connect with retry, run a session, apply the policy, back off.

This is the only place that decides what happens after a session ends. One
outage is one tenacity retry loop; it restarts from the first delay only after
a session stayed open for ``Backoff.stable_after`` seconds.
"""

from __future__ import annotations

import asyncio
import inspect
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception

from .buffers import Deliver, Outbox
from .config import ClientConfig, Data, check_url
from .errors import FatalError, GaveUp, HandshakeError
from .events import SessionEnd, State
from .logs import describe_error, redact_url
from .policy import Action, SessionDropped, close_action, connect_action, hook_action, to_fatal
from .session import Session, open_connection
from .stats import Outage, Stats

__all__ = ["Supervisor"]

T = TypeVar("T")


async def _resolve(source: T | Callable[[], T | Awaitable[T]]) -> T:
    """The value of a setting given as a value, or as a plain or async callable."""
    if not callable(source):
        return source
    value = source()
    if inspect.isawaitable(value):
        return await value
    return value


def _is_transient(exc: BaseException) -> bool:
    # CancelledError is a BaseException: it must end the loop, never be retried.
    return isinstance(exc, Exception) and not isinstance(exc, FatalError)


class Supervisor:
    """Keeps one client connected: the loop behind ``Client``."""

    def __init__(
        self,
        config: ClientConfig,
        stats: Stats,
        outbox: Outbox[Data],
        deliver: Deliver,
        set_state: Callable[[State], None],
        log: Any,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._config = config
        self._stats = stats
        self._outbox = outbox
        self._deliver = deliver
        self._set_state = set_state
        self._log = log
        self._sleep = sleep
        self._wait = config.backoff.wait()
        self._ssl: ssl_module.SSLContext | None = config.ssl
        self._seed: SessionDropped | None = None
        self._opened_once = False
        self.session: Session | None = None
        self.opened = asyncio.Event()
        """Set while a session is open; cleared when it ends."""

    async def run(self) -> SessionEnd:
        """Keep connected until the policy says stop; return the last session's end.

        Raises ``FatalError`` when retrying cannot help and ``GaveUp`` when
        ``max_attempts`` or ``max_outage`` is reached.
        """
        while True:
            seeded = self._seed is not None
            max_attempts = self._config.max_attempts
            retrying = AsyncRetrying(
                sleep=self._sleep,
                wait=self._wait,
                stop=self._config.backoff.stop(
                    None if max_attempts is None else max_attempts + seeded, self._config.max_outage
                ),
                retry=retry_if_exception(_is_transient),
                before_sleep=self._before_sleep,
            )
            started = time.monotonic()
            try:
                outcome: SessionEnd | SessionDropped = await retrying(self._attempt)
            except RetryError as exc:
                last = exc.last_attempt
                cause = last.exception()
                attempts = last.attempt_number - seeded
                elapsed = time.monotonic() - started
                self._log.error("gave_up", attempts=attempts, error=describe_error(cause))
                raise GaveUp(attempts, elapsed) from cause
            except FatalError as exc:
                self._log.error("fatal", error=describe_error(exc))
                raise
            if isinstance(outcome, SessionEnd):
                self._log.info("stopped", code=outcome.code, closed_by=outcome.closed_by.value)
                return outcome
            # A stable session dropped: a fresh outage, whose first failure is that drop.
            self._seed = outcome

    async def _attempt(self) -> SessionEnd | SessionDropped:
        """One try: connect, run a session to its end, classify the end."""
        if self._seed is not None:
            seed, self._seed = self._seed, None
            raise seed
        config, stats = self._config, self._stats
        stats.connect_attempts += 1
        if (outage := stats.current_outage) is not None:
            outage.attempts += 1
        url, headers = await self._resolve_target()
        log = self._log.bind(url=redact_url(url))
        log.debug("connecting", attempt=stats.connect_attempts)
        try:
            connection = await open_connection(config, url, headers, self._ssl_for(url))
        except Exception as exc:
            action = connect_action(exc, config.classify_error)
            log.warning("connect_failed", error=describe_error(exc), action=action.value)
            if action is Action.FATAL:
                raise to_fatal(exc) from exc
            raise
        session = Session(connection, config, stats, log)
        self.session = session
        try:
            end = await session.run(config.on_connect, self._on_open, self._deliver, self._outbox)
        finally:
            self.session = None
            self.opened.clear()
        if session.hook_error is not None:
            error = session.hook_error
            log.warning("on_connect_failed", session_id=session.id, exc_info=error)
            if hook_action(error) is Action.FATAL:
                raise to_fatal(error) from error
            raise error
        return self._after(session, end, log)

    async def _resolve_target(self) -> tuple[str, Mapping[str, str] | None]:
        """This attempt's URL and headers: callables run before every attempt, so tokens are fresh."""
        try:
            url = await _resolve(self._config.url)
            headers: Mapping[str, str] | None = await _resolve(self._config.headers)
        except Exception as exc:
            self._log.warning("url_or_headers_failed", exc_info=exc)
            raise
        try:
            check_url(url)
            if headers is not None and not isinstance(headers, Mapping):
                raise TypeError(f"headers callable must return a mapping, got {type(headers).__name__}")
        except (TypeError, ValueError) as exc:
            raise HandshakeError(str(exc)) from exc
        return url, headers

    def _after(self, session: Session, end: SessionEnd, log: Any) -> SessionEnd | SessionDropped:
        """Record how a session ended and turn the policy's decision into the retry loop's terms."""
        stats = self._stats
        stats.last_close_code = end.code
        stats.last_close_reason = end.reason
        stats.last_closed_by = end.closed_by.value
        stats.last_cause = end.cause.value
        action = close_action(
            end,
            reconnect_on_normal_close=self._config.reconnect_on_normal_close,
            overrides=self._config.close_actions,
        )
        log.info(
            "disconnected",
            session_id=session.id,
            code=end.code,
            reason=end.reason,
            closed_by=end.closed_by.value,
            cause=end.cause.value,
            duration=round(end.duration, 3),
            action=action.value,
        )
        if action is Action.STOP:
            return end
        dropped = SessionDropped(end)
        if action is Action.FATAL:
            raise to_fatal(dropped)
        self._set_state(State.RECONNECTING)
        stats.outages_total += 1
        stats.outages.append(Outage(start=time.time(), cause=end.cause.value))
        if end.duration >= self._config.backoff.stable_after:
            return dropped
        raise dropped

    def _on_open(self, session: Session) -> None:
        stats = self._stats
        stats.sessions += 1
        if self._opened_once:
            stats.reconnects += 1
        self._opened_once = True
        if (outage := stats.current_outage) is not None:
            outage.end = time.time()
        self._set_state(State.OPEN)
        self.opened.set()
        self._log.info("connected", session_id=session.id, subprotocol=session.subprotocol, sessions=stats.sessions)

    def _ssl_for(self, url: str) -> ssl_module.SSLContext | None:
        """One TLS context per client, reused on every reconnect (a new one per attempt leaks)."""
        if not url.startswith("wss:"):
            return self._config.ssl
        if self._ssl is None:
            self._ssl = ssl_module.create_default_context()
        return self._ssl

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        self._log.info(
            "retrying",
            attempt=retry_state.attempt_number,
            delay=round(retry_state.upcoming_sleep, 4),
            error=describe_error(error),
        )
