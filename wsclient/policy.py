"""What to do after a session ends or a connection attempt fails: pure functions over tables.

This is the only module that knows close codes and error classes. Nothing here
does I/O; every function is a table lookup that tests can walk row by row, and
users override any decision through ``Client(close_actions=..., classify_error=...)``.
"""

from __future__ import annotations

import email.utils
import enum
import math
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidMessage,
    InvalidProxy,
    InvalidProxyStatus,
    InvalidStatus,
    InvalidURI,
    ProxyError,
)

from .errors import (
    CallbackError,
    CertificateError,
    FatalCloseError,
    FatalError,
    HandshakeError,
    HandshakeRejected,
    ProxyRejected,
    Reconnect,
    RequestInterrupted,
)
from .events import Cause, ClosedBy, SessionEnd
from .redact import describe_error

if TYPE_CHECKING:
    from websockets.http11 import Response

__all__ = [
    "Action",
    "ClosePolicy",
    "ErrorClassifier",
    "FATAL_CLOSE_CODES",
    "NORMAL_CLOSE_CODES",
    "ProxyStatus",
    "RECONNECT_CLOSE_CODES",
    "RETRY_STATUSES",
    "SessionDropped",
    "callback_error",
    "close_action",
    "connect_action",
    "connect_hint",
    "hook_action",
    "parse_retry_after",
    "retry_delay_hint",
    "to_fatal",
]


class Action(enum.Enum):
    """The supervisor's choice after a session ends or an attempt fails."""

    RECONNECT = "reconnect"
    """Back off and open a new session."""
    STOP = "stop"
    """Stop cleanly: iteration ends, ``recv()`` raises ``ClientClosed``."""
    FATAL = "fatal"
    """Stop with a ``FatalError``: retrying cannot help."""


ErrorClassifier = Callable[[BaseException], "Action | None"]
"""A user's rule for connect errors: return an action, or ``None`` for the default."""

ClosePolicy = Callable[[SessionEnd], "Action | str | None"]
"""A user's rule over a whole session end (code, reason, who closed, cause): an action, or ``None`` for the default."""

NORMAL_CLOSE_CODES = frozenset({1000, 1005})
"""Deliberate closes: 1000 Normal Closure, 1005 a close frame without a code."""

RECONNECT_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014, 1015})
"""Going away, abnormal closure, server error, restart, try again later, bad gateway, TLS."""

FATAL_CLOSE_CODES = frozenset({1002, 1003, 1007, 1008, 1009, 1010})
"""Protocol error, unsupported data, invalid data, policy violation, too big, extension."""

APPLICATION_CLOSE_CODES = range(3000, 5000)
"""Registered (3000-3999) and private (4000-4999) codes: their meaning is the application's."""

RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
"""Handshake rejections that may pass on their own: timeout, rate limit, server errors."""

TRY_AGAIN_LATER = 1013


class ProxyStatus(InvalidProxyStatus):
    """A proxy refused to open the tunnel with an HTTP status; ``proxy`` names it without its credentials."""

    def __init__(self, response: Response, proxy: str) -> None:
        super().__init__(response)
        self.proxy = proxy

    def __str__(self) -> str:
        return f"proxy {self.proxy} rejected the tunnel with HTTP {self.response.status_code}"


class SessionDropped(Exception):
    """A session ended and the policy says reconnect; carries how it ended."""

    def __init__(self, end: SessionEnd) -> None:
        self.end = end
        super().__init__(f"session ended: {end.cause.value}, code {end.code} by {end.closed_by.value}")


def close_action(
    end: SessionEnd,
    *,
    reconnect_on_normal_close: bool = False,
    overrides: Mapping[int, Action] | ClosePolicy | None = None,
) -> Action:
    """Decide what follows a session that ended as ``end``.

    A close the application asked for always stops. Otherwise the user's
    rule wins (a per-code mapping, or a callable over the whole end that
    returns ``None`` to keep the default), then the defaults of RFC 6455's
    code ranges. The code is the one that mattered (see :class:`SessionEnd`),
    so a server that makes this side fail the connection (1009, 1007) does
    not get an endless loop.

    Args:
        end: How the session ended: the code that mattered, who closed, the cause.
        reconnect_on_normal_close: Reconnect after a server's 1000 or 1005 instead of stopping.
        overrides: ``{code: Action}``, or a callable over ``end`` returning an action or ``None`` for the
            default, as ``Client(close_actions=...)`` takes.

    Returns:
        What the supervisor does next.
    """
    if end.cause is Cause.USER_CLOSE:
        return Action.STOP
    if callable(overrides):
        chosen = overrides(end)
        if chosen is not None:
            return Action(chosen)
    elif overrides and end.code in overrides:
        return overrides[end.code]
    if end.code in NORMAL_CLOSE_CODES:
        if end.closed_by is ClosedBy.SERVER and reconnect_on_normal_close:
            return Action.RECONNECT
        return Action.STOP
    if end.code in FATAL_CLOSE_CODES:
        return Action.FATAL
    if end.code in APPLICATION_CLOSE_CODES:
        return Action.STOP
    # RECONNECT_CLOSE_CODES, and codes no registry gives a meaning to.
    return Action.RECONNECT


def connect_action(exc: BaseException, classify: ErrorClassifier | None = None) -> Action:
    """Decide whether a failed connection attempt is worth retrying.

    The order matters: ``ssl.SSLCertVerificationError`` is an ``OSError`` and
    an HTTP rejection is an ``InvalidHandshake``, so the specific rules come first.

    Args:
        exc: What the attempt raised (OS, TLS, handshake or timeout error).
        classify: A callable returning an action for ``exc``, or ``None`` for the default, as
            ``Client(classify_error=...)`` takes.

    Returns:
        ``Action.RECONNECT`` to retry with backoff, ``Action.FATAL`` to stop at once.
    """
    if classify is not None:
        action = classify(exc)
        if action is not None:
            return action
    if isinstance(exc, FatalError):
        return Action.FATAL
    if isinstance(exc, InvalidStatus | InvalidProxyStatus):
        # A proxy's 407 is as fatal as a server's 401; its 502/503/504 pass like a server's.
        return Action.RECONNECT if exc.response.status_code in RETRY_STATUSES else Action.FATAL
    for error_class, action in _CONNECT_ERROR_RULES:
        if isinstance(exc, error_class):
            return action
    return Action.FATAL


_CONNECT_ERROR_RULES: tuple[tuple[type[BaseException], Action], ...] = (
    (ssl.SSLCertVerificationError, Action.FATAL),
    (InvalidURI, Action.FATAL),
    (InvalidProxy, Action.FATAL),
    # EOF or garbage instead of an HTTP response: a server restarting or overloaded.
    (InvalidMessage, Action.RECONNECT),
    (ProxyError, Action.RECONNECT),
    # Bad Sec-WebSocket-Accept, refused subprotocol or extension, no upgrade.
    (InvalidHandshake, Action.FATAL),
    # Refused, reset, unreachable, DNS failure, TLS handshake cut short, open_timeout.
    (OSError, Action.RECONNECT),
    (TimeoutError, Action.RECONNECT),
    (EOFError, Action.RECONNECT),
)


_RETRIED = "retried with backoff; max_attempts= or max_outage= makes the client give up"


def connect_hint(exc: BaseException, action: Action, url: str) -> str:
    """What a failed connection attempt means and what to change, for the ``connect_failed`` event.

    A mistyped host name is retried like a network outage (DNS may be down
    for a moment); the hint says so and names the settings that stop it.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "wss" else 80)
    if isinstance(exc, socket.gaierror):
        what = f"the host name {host!r} could not be resolved (check the url, or DNS)"
    elif isinstance(exc, ConnectionRefusedError):
        what = f"nothing accepts connections at {host}:{port} (is the server up, the port right?)"
    elif isinstance(exc, ProxyError | InvalidProxyStatus) or type(exc).__module__.startswith("python_socks"):
        what = "the proxy failed (check proxy= or the proxy environment variables)"
    elif isinstance(exc, TimeoutError):
        what = "no complete handshake within open_timeout"
    elif isinstance(exc, InvalidStatus):
        what = f"the server answered the handshake with HTTP {exc.response.status_code}"
    elif isinstance(exc, ssl.SSLCertVerificationError):
        what = "the server's certificate is not trusted: pass ssl= a context that trusts its CA"
    else:
        what = "the connection attempt failed"
    if action is Action.RECONNECT:
        return f"{what}; {_RETRIED}"
    if action is Action.FATAL:
        return f"{what}; not retried"
    return what


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    Reconnect,
    ConnectionClosed,
    RequestInterrupted,
    OSError,
    TimeoutError,
)
"""What a user callable (``on_connect``, a URL or headers callable) may raise to ask for a reconnect.

``RequestInterrupted`` is here because the session it names is gone; a
``RequestTimeout`` is a ``TimeoutError``.
"""


def hook_action(exc: BaseException) -> Action:
    """Decide what follows an exception from a user callable such as ``on_connect``.

    A connection error (or :class:`Reconnect`) reconnects; anything else is a
    bug in the application that retrying would only repeat, so it is fatal.
    """
    if isinstance(exc, FatalError):
        return Action.FATAL
    return Action.RECONNECT if isinstance(exc, CONNECTION_ERRORS) else Action.FATAL


def callback_error(callback: str, exc: Exception) -> Exception:
    """What a user callable's exception becomes: itself when it asks for a reconnect or is fatal already, else a bug."""
    if isinstance(exc, FatalError) or hook_action(exc) is Action.RECONNECT:
        return exc
    return CallbackError(callback, exc)


def to_fatal(exc: BaseException) -> FatalError:
    """Translate the error behind a fatal decision into the ``FatalError`` the user sees."""
    if isinstance(exc, FatalError):
        return exc
    if isinstance(exc, SessionDropped):
        end = exc.end
        return FatalCloseError(end.code, end.reason, end.closed_by.value)
    if isinstance(exc, InvalidStatus):
        return HandshakeRejected(exc.response.status_code, exc.response.headers)
    if isinstance(exc, InvalidProxyStatus):
        return ProxyRejected(exc.response.status_code, getattr(exc, "proxy", "(unknown)"), exc.response.headers)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateError(f"server certificate not trusted: {exc.verify_message or exc}")
    # The text of a handshake error can hold the URL (an invalid one, a redirect's Location): redacted.
    return HandshakeError(describe_error(exc) or type(exc).__name__)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or ``None``."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_delay_hint(exc: BaseException | None, *, overload_delay: float, cap: float) -> float:
    """Extra seconds the server asked for before the next attempt (``Retry-After``, close 1013).

    A 429 without a usable ``Retry-After`` and a 1013 close both ask for
    ``overload_delay``. A 503 waits only what its ``Retry-After`` says: a
    proxy's 502/503/504 during a deploy is the commonest handshake failure and
    comes back on the ordinary backoff. A hint is never longer than ``cap``,
    so a hostile ``Retry-After`` cannot park the client forever.
    """
    hint: float | None = None
    if isinstance(exc, InvalidStatus) and exc.response.status_code in (429, 503):
        hint = parse_retry_after(exc.response.headers.get("Retry-After"))
        if hint is None and exc.response.status_code == 429:
            hint = overload_delay
    elif isinstance(exc, SessionDropped) and exc.end.code == TRY_AGAIN_LATER:
        hint = overload_delay
    return 0.0 if hint is None else min(hint, cap)
