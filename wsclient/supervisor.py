"""The connection supervisor: connect with retry, run a session, apply the policy, back off.

This is the only place that decides what happens after a session ends. One
outage is one tenacity retry loop; it restarts from the first delay after a
session stayed open for ``Backoff.stable_after`` seconds, and a shorter
session pays part of its count back (``Backoff.carried_attempts``).
"""

from __future__ import annotations

import asyncio
import inspect
import ssl as ssl_module
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import AsyncRetrying, RetryCallState, RetryError, retry_if_exception

from .buffers import Deliver, Outbox, Waiters
from .config import ClientConfig, Data
from .errors import CallbackError, FatalError, GaveUp
from .events import Cause, ClosedBy, SessionEnd, State
from .hooks import Observers
from .logs import describe_error, redact_url
from .policy import (
    Action,
    SessionDropped,
    callback_error,
    close_action,
    connect_action,
    connect_hint,
    hook_action,
    to_fatal,
)
from .redact import redact_error
from .replies import Requests
from .session import ABNORMAL_CLOSURE, Session, ours
from .stats import Outage, Stats
from .transports import open_transport
from .wire import check_headers, check_url, handshake_target

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


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the exception groups a TaskGroup raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException | None) -> str | None:
    """A log line's ``error``: a dropped session is told by how it ended, not by an internal class name."""
    if isinstance(exc, SessionDropped):
        end = exc.end
        return f"session ended: {end.cause.value}, code {end.code} by the {end.closed_by.value}"
    return describe_error(exc)


STOPPED = SessionEnd(1000, "", ClosedBy.CLIENT, Cause.USER_CLOSE, 0.0)
"""The end reported when ``close()`` came before a session could open."""


class Supervisor:
    """Keeps one client connected: the loop behind ``Client``."""

    __slots__ = (
        "_config",
        "_deliver",
        "_down_at",
        "_log",
        "_number",
        "_observers",
        "_open",
        "_opened_once",
        "_opening",
        "_outbox",
        "_requests",
        "_resume",
        "_seed",
        "_seeded",
        "_set_state",
        "_sleep",
        "_ssl",
        "_stats",
        "_stopping",
        "_target",
        "session",
    )

    def __init__(
        self,
        config: ClientConfig,
        stats: Stats,
        outbox: Outbox[Data],
        deliver: Deliver,
        set_state: Callable[[State], None],
        log: Any,
        stopping: Callable[[], bool] = lambda: False,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        requests: Requests | None = None,
        observers: Observers | None = None,
    ) -> None:
        self._config = config
        self._observers = Observers(log) if observers is None else observers
        self._target: str | None = None
        """The URL of the attempt in progress, once resolved."""
        self._requests = requests
        self._stats = stats
        self._outbox = outbox
        self._deliver = deliver
        self._set_state = set_state
        self._log = log
        self._stopping = stopping
        self._sleep = sleep
        self._down_at: float | None = None
        self._ssl: ssl_module.SSLContext | None = config.ssl
        self._seed: Exception | None = None
        """The failure the next retry loop starts from: how the last session ended, if it ended for a retry."""
        self._resume = 0
        """Attempts of this outage made before the next loop (its first attempt continues their count)."""
        self._seeded = False
        """Whether this outage began with a stable session's drop, which counts as no attempt."""
        self._number = 0
        """The attempt number tenacity gave the current attempt, in the count of this outage."""
        self._opened_once = False
        self.session: Session | None = None
        self._open = False
        self._opening = Waiters()

    async def run(self) -> SessionEnd:
        """Keep connected until the policy says stop; return the last session's end.

        Raises ``FatalError`` when retrying cannot help and ``GaveUp`` when
        ``max_attempts`` or ``max_outage`` is reached. Once ``stopping()``
        holds, no new session opens.

        One outage is one tenacity retry loop, made when the outage starts and
        gone once a session opens: an open session holds no tenacity object.
        A session that ends before ``stable_after`` continues its outage's
        count, less what its time up paid back (``Backoff.carried_attempts``),
        in a fresh loop, whose first attempt is that session's end.
        """
        self._mark_down()
        while True:
            started = time.monotonic()
            try:
                # Every failure of an attempt stays inside tenacity, which retries it or raises RetryError;
                # anything else that comes out is a failure of the retry loop itself (a strategy or a
                # callback that raised) and propagates: retrying it as an attempt would restart the loop
                # with no attempt made and no sleep, a busy loop.
                opened: tuple[Session, Any] | SessionEnd = await self._retrying()(self._attempt)
            except RetryError as exc:
                last = exc.last_attempt
                cause = last.exception()
                attempts = last.attempt_number - self._seeded
                elapsed = time.monotonic() - (started if self._down_at is None else self._down_at)
                limit = _limit_reached(self._config, attempts)
                self._log.error("gave_up", attempts=attempts, limit=limit, error=_describe(cause))
                raise GaveUp(attempts, elapsed, limit, _describe(cause) or "") from (
                    None if cause is None else redact_error(cause)
                )
            except FatalError as exc:
                self._log.error("fatal", error=describe_error(exc))
                raise
            if isinstance(opened, SessionEnd):
                self._log.info("stopped", code=opened.code, closed_by=opened.closed_by.value)
                return opened
            try:
                # No await between the handshake and the session's own cleanup: a cancellation lands inside it.
                outcome = await self._live(*opened)
            except FatalError as exc:
                self._log.error("fatal", error=describe_error(exc))
                raise
            except Exception as exc:
                # A session that ended before it was stable, or whose on_connect failed: the outage goes on,
                # its count less what the session's time up paid back.
                if not _is_transient(exc):  # pragma: no cover - FatalError is handled above
                    raise
                self._seed, self._resume = exc, self._carried(exc)
                continue
            if isinstance(outcome, SessionEnd):
                self._log.info("stopped", code=outcome.code, closed_by=outcome.closed_by.value)
                return outcome
            # A stable session dropped: a fresh outage, whose first failure is that drop.
            self._seed, self._resume, self._seeded = outcome, 0, True

    def _retrying(self) -> AsyncRetrying:
        """This outage's retry loop: tenacity's wait and stop strategies, attempts counted from ``_resume``."""
        max_attempts = self._config.max_attempts
        return AsyncRetrying(
            sleep=self._sleep,
            wait=self._config.backoff.wait(),
            stop=self._config.backoff.stop(
                None if max_attempts is None else max_attempts + self._seeded,
                self._config.max_outage,
                down_since=lambda: self._down_at,
            ),
            retry=retry_if_exception(_is_transient),
            before=self._before_attempt,
            before_sleep=self._before_sleep,
        )

    def _carried(self, exc: Exception) -> int:
        """The attempts of this outage the next loop continues from, after a session that was not stable."""
        attempts = self._number - 1
        if isinstance(exc, SessionDropped):
            return self._config.backoff.carried_attempts(attempts, exc.end.duration)
        return attempts  # on_connect failed: as a failed attempt, whatever the session's time up

    def _before_attempt(self, retry_state: RetryCallState) -> None:
        if self._resume:
            # The loop continues an outage: its count, which the wait and stop strategies read, goes on too.
            retry_state.attempt_number += self._resume
            self._resume = 0
        self._number = retry_state.attempt_number

    async def _attempt(self) -> tuple[Session, Any] | SessionEnd:
        """One try: connect, and return the session to run with its logger (or ``STOPPED``)."""
        if self._seed is not None:
            seed, self._seed = self._seed, None
            raise seed
        if self._stopping():
            return STOPPED
        if not (observers := self._observers).all:
            return await self._connect()
        self._target = None
        observers.connect_started()
        try:
            opened = await self._connect()
        except BaseException as exc:
            observers.connect_ended(self._target, exc)
            raise
        observers.connect_ended(self._target, None)
        return opened

    async def _connect(self) -> tuple[Session, Any] | SessionEnd:
        """Open a connection to this attempt's URL; return the session to run with its logger (or ``STOPPED``)."""
        config, stats = self._config, self._stats
        stats.connect_attempts += 1
        if (outage := stats.current_outage) is not None:
            outage.attempts += 1
        # open_timeout bounds the whole attempt: the url and headers callables, then the handshake.
        loop = asyncio.get_running_loop()
        timeout = config.open_timeout
        deadline = None if timeout is None else loop.time() + timeout
        given, url, headers = await self._resolve_target(timeout)
        self._target = url
        log = self._log.bind(url=redact_url(given))
        log.debug("connecting", attempt=stats.connect_attempts)
        try:
            remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
            transport = await open_transport(config, url, headers, self._ssl_for(url), remaining)
        except Exception as exc:
            action = self._connect_action(exc)
            log.warning(
                "connect_failed", error=describe_error(exc), action=action.value, hint=connect_hint(exc, action, url)
            )
            if action is Action.FATAL:
                raise to_fatal(exc) from redact_error(exc)
            raise
        if self._stopping():
            # close() came while the handshake ran: this session must not start.
            transport.abort()
            await transport.wait_closed()
            return STOPPED
        return Session(transport, config, stats, log, self._requests, self._observers), log

    async def _live(self, session: Session, log: Any) -> SessionEnd | SessionDropped:
        """Run an open session to its end and classify the end.

        Returns the end when the policy says stop, a stable session's drop
        (a fresh outage follows); raises the drop of a session that was not
        stable, or the error of a failed ``on_connect``, to go on with the outage.
        """
        config = self._config
        self.session = session
        try:
            end = await session.run(config.on_connect, self._on_open, self._deliver, self._outbox)
        except asyncio.CancelledError:
            # close() gave up waiting, or was cancelled: the session ends here, by the client.
            self._record(session, session.end_now(), Action.STOP, log)
            raise
        except Exception as exc:
            end = self._failed(session, _leaf(exc), log)
        finally:
            self.session = None
            self._open = False
            self._mark_down()
        if config.on_disconnect is not None:
            # One loop step first: the callers of the requests this session failed see it before the hook runs.
            await asyncio.sleep(0)
            await self._run_on_disconnect(config.on_disconnect, session, end, log)
        if session.hook_error is not None:
            error = session.hook_error
            if hook_action(error) is Action.FATAL:
                log.error("callback_failed", callback="on_connect", session_id=session.id, exc_info=error)
                fatal = to_fatal(callback_error("on_connect", error))
                raise fatal from (error.__cause__ if fatal is error else error)
            log.warning("on_connect_failed", session_id=session.id, error=describe_error(error))
            raise error
        return self._after(session, end, log)

    async def _run_on_disconnect(
        self, hook: Callable[[SessionEnd], Awaitable[None]], session: Session, end: SessionEnd, log: Any
    ) -> None:
        """Tell the application how the session ended, before the policy decides what follows.

        Bounded by ``close_timeout``. A connection error (or a timeout) from the
        hook is logged and changes nothing; any other exception is a bug: fatal,
        ``CancelledError`` included unless it cancels the supervisor itself.
        """
        try:
            async with asyncio.timeout(self._config.close_timeout):
                await hook(end)
        except asyncio.CancelledError as exc:
            if ours(exc):
                raise
            # Raised by the hook's own code, not by a cancellation of this task: a bug in the hook.
            log.error("callback_failed", callback="on_disconnect", session_id=session.id, exc_info=exc)
            raise CallbackError("on_disconnect", exc) from exc
        except Exception as exc:
            if hook_action(exc) is Action.FATAL:
                log.error("callback_failed", callback="on_disconnect", session_id=session.id, exc_info=exc)
                fatal = to_fatal(callback_error("on_disconnect", exc))
                raise fatal from (None if fatal is exc else exc)
            log.warning("on_disconnect_failed", session_id=session.id, error=describe_error(exc))

    def _failed(self, session: Session, error: BaseException, log: Any) -> SessionEnd:
        """An exception escaped the session: a lost connection goes on as one, anything else is fatal."""
        if hook_action(error) is Action.FATAL:
            log.error("session_failed", session_id=session.id, exc_info=error)
            if isinstance(error, FatalError):
                raise error
            raise FatalError(f"session failed: {describe_error(error)}") from error
        log.error("session_failed", session_id=session.id, exc_info=error)
        duration = session.transport.loop.time() - session.started
        return SessionEnd(ABNORMAL_CLOSURE, "", ClosedBy.NOBODY, Cause.CONNECTION_LOST, duration)

    def _connect_action(self, exc: Exception) -> Action:
        try:
            return connect_action(exc, self._config.classify_error)
        except Exception as error:
            raise CallbackError("classify_error", error) from error

    async def _resolve_target(self, open_timeout: float | None) -> tuple[str, str, dict[str, str] | None]:
        """This attempt's URL as given, and the URL and headers to send: callables run before every attempt.

        The callables share the attempt's ``open_timeout``: one that overruns it
        is a ``TimeoutError`` of this attempt that names it, retried like one.
        A connection error raised by a callable is retried; anything else is a
        bug, and fatal, and so is a URL or headers that the handshake cannot send.
        Userinfo of the URL becomes an ``Authorization`` header here, for both transports.
        """
        config = self._config
        name = "url"
        deadline = asyncio.timeout(open_timeout)
        try:
            async with deadline:
                url = await _resolve(config.url)
                name = "headers"
                headers: object = await _resolve(config.headers)
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():
                overran = TimeoutError(f"the {name} callable did not return within open_timeout ({open_timeout}s)")
                self._log.warning("url_or_headers_failed", callback=name, error=describe_error(overran))
                raise overran from exc  # its context shows where the callable was waiting
            error = callback_error(name, exc)
            self._log.warning("url_or_headers_failed", callback=name, error=describe_error(exc))
            if error is exc:
                raise
            raise error from redact_error(exc)
        name = "url"
        try:
            check_url(url)
            name = "headers"
            checked = None if headers is None else check_headers(headers)
            name = "url" if callable(config.url) else "headers"
            return (url, *handshake_target(url, checked, name))
        except (TypeError, ValueError) as exc:
            self._log.error("callback_failed", callback=name, error=describe_error(exc))
            raise CallbackError(name, exc) from exc

    def _after(self, session: Session, end: SessionEnd, log: Any) -> SessionEnd | SessionDropped:
        """Record how a session ended and turn the policy's decision into the retry loop's terms."""
        try:
            action = close_action(
                end,
                reconnect_on_normal_close=self._config.reconnect_on_normal_close,
                overrides=self._config.close_actions,
            )
        except Exception as exc:
            self._record(session, end, None, log)
            raise CallbackError("close_actions", exc) from exc
        self._record(session, end, action, log)
        stats = self._stats
        if action is Action.STOP:
            if end.closed_by is ClosedBy.SERVER:
                log.warning(
                    "stopped_by_server",
                    code=end.code,
                    reason=end.reason,
                    hint="the server closed normally; reconnect_on_normal_close=True or close_actions reconnects",
                )
            return end
        dropped = SessionDropped(end)
        if action is Action.FATAL:
            raise to_fatal(dropped)
        stats.outages_total += 1
        stats.outages.append(Outage(start=time.time(), cause=end.cause))
        # After the outage's record: those told of the change find it in stats.current_outage.
        self._set_state(State.RECONNECTING)
        if end.duration >= self._config.backoff.stable_after:
            return dropped
        raise dropped

    def _record(self, session: Session, end: SessionEnd, action: Action | None, log: Any) -> None:
        """Keep how the session ended in the stats and the log."""
        stats = self._stats
        stats.last_close_code = end.code
        stats.last_close_reason = end.reason
        stats.last_closed_by = end.closed_by
        stats.last_cause = end.cause
        if self._observers.all:
            self._observers.session_ended(end)
        log.info(
            "disconnected",
            session_id=session.id,
            code=end.code,
            reason=end.reason,
            closed_by=end.closed_by.value,
            cause=end.cause.value,
            duration=round(end.duration, 3),
            action=None if action is None else action.value,
        )

    async def wait_opened(self) -> None:
        """Return once a session is open: at once while one is, else when the next one opens."""
        if not self._open:
            await self._opening.wait()

    def _on_open(self, session: Session) -> None:
        stats = self._stats
        stats.sessions += 1
        if self._opened_once:
            stats.reconnects += 1
        self._opened_once = True
        self._down_at = stats.down_since = None
        if (outage := stats.current_outage) is not None:
            outage.end = time.time()
        self._set_state(State.OPEN)
        self._open = True
        self._opening.wake_all()
        # The subprotocol only when one was chosen: stdlib's logfmt line and structlog render None differently.
        chosen = {} if session.subprotocol is None else {"subprotocol": session.subprotocol}
        self._log.info("connected", session_id=session.id, sessions=stats.sessions, **chosen)

    def _mark_down(self) -> None:
        """Note when the client last had no open session, for ``max_outage`` and ``stats.down_since``."""
        if self._down_at is None:
            self._down_at = time.monotonic()
            self._stats.down_since = time.time()

    def _ssl_for(self, url: str) -> ssl_module.SSLContext | None:
        """One TLS context per client, reused on every reconnect (a new one per attempt leaks)."""
        if not url.startswith("wss:"):
            return self._config.ssl
        if self._ssl is None:
            self._ssl = ssl_module.create_default_context()
        return self._ssl

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        self._log.info("retrying", attempt=retry_state.attempt_number, delay=round(retry_state.upcoming_sleep, 4))


def _limit_reached(config: ClientConfig, attempts: int) -> str:
    """Which setting ended the retries: ``max_attempts`` when the count got there, else ``max_outage``."""
    if config.max_attempts is not None and attempts >= config.max_attempts:
        return f"max_attempts={config.max_attempts}"
    if config.max_outage is not None:
        return f"max_outage={config.max_outage:g}"
    return ""
