"""The policy tables, row by row: change a row and a test here fails."""

from __future__ import annotations

import email.utils
import socket
import ssl

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import (
    ConnectionClosedError,
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidProxy,
    InvalidProxyStatus,
    InvalidStatus,
    InvalidUpgrade,
    InvalidURI,
    NegotiationError,
    ProxyError,
    SecurityError,
)
from websockets.http11 import Response

from wsclient import (
    Action,
    CallbackError,
    Cause,
    CertificateError,
    ClosedBy,
    FatalCloseError,
    FatalError,
    HandshakeError,
    HandshakeRejected,
    ProxyRejected,
    Reconnect,
    SessionEnd,
)
from wsclient.policy import (
    ProxyStatus,
    SessionDropped,
    callback_error,
    close_action,
    connect_action,
    connect_hint,
    hook_action,
    parse_retry_after,
    retry_delay_hint,
    to_fatal,
)

R, S, F = Action.RECONNECT, Action.STOP, Action.FATAL


def end(code: int, closed_by: ClosedBy = ClosedBy.SERVER, cause: Cause = Cause.CLOSED) -> SessionEnd:
    return SessionEnd(code=code, reason="why", closed_by=closed_by, cause=cause, duration=1.0)


def proxy_status(code: int) -> InvalidProxyStatus:
    return InvalidProxyStatus(Response(code, "reason", Headers()))


def status(code: int, headers: dict[str, str] | None = None) -> InvalidStatus:
    return InvalidStatus(Response(code, "reason", Headers(headers or {})))


@pytest.mark.parametrize(
    ("session_end", "expected"),
    [
        # Deliberate closes.
        (end(1000), S),
        (end(1005), S),
        (end(1000, ClosedBy.CLIENT, Cause.USER_CLOSE), S),
        # A user close stops whatever code went out.
        (end(1006, ClosedBy.NOBODY, Cause.USER_CLOSE), S),
        # Broken or temporary: reconnect.
        (end(1006, ClosedBy.NOBODY, Cause.CONNECTION_LOST), R),
        (end(1006, ClosedBy.NOBODY, Cause.HEARTBEAT_TIMEOUT), R),
        (end(1006, ClosedBy.NOBODY, Cause.IDLE_TIMEOUT), R),
        (end(1001), R),
        (end(1011), R),
        (end(1012), R),
        (end(1013), R),
        (end(1014), R),
        (end(1015), R),
        # Retrying cannot help, whichever side sent the code.
        (end(1002), F),
        (end(1003), F),
        (end(1007), F),
        (end(1008), F),
        (end(1009), F),
        (end(1010), F),
        (end(1009, ClosedBy.CLIENT), F),
        (end(1007, ClosedBy.CLIENT), F),
        (end(1002, ClosedBy.CLIENT), F),
        # Application codes stop by default.
        (end(3000), S),
        (end(4000), S),
        (end(4999), S),
        # Codes nobody assigned: keep the connection up.
        (end(2000), R),
    ],
)
def test_close_action_defaults(session_end: SessionEnd, expected: Action) -> None:
    assert close_action(session_end) is expected


@pytest.mark.parametrize(
    ("session_end", "expected"),
    [
        (end(1000), R),
        (end(1005), R),
        (end(1000, ClosedBy.CLIENT, Cause.USER_CLOSE), S),
        (end(1000, ClosedBy.CLIENT), S),
    ],
)
def test_reconnect_on_normal_close(session_end: SessionEnd, expected: Action) -> None:
    assert close_action(session_end, reconnect_on_normal_close=True) is expected


def test_overrides_win_except_for_a_user_close() -> None:
    overrides = {4001: R, 1011: F, 1000: R}
    assert close_action(end(4001), overrides=overrides) is R
    assert close_action(end(4002), overrides=overrides) is S
    assert close_action(end(1011), overrides=overrides) is F
    assert close_action(end(1000), overrides=overrides) is R
    assert close_action(end(1000, ClosedBy.CLIENT, Cause.USER_CLOSE), overrides=overrides) is S


def cert_error() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "self-signed certificate"
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), R),
        (ConnectionResetError(104, "reset"), R),
        (OSError(101, "network unreachable"), R),
        (socket.gaierror(-2, "name not known"), R),
        (TimeoutError("timed out during opening handshake"), R),
        (EOFError("connection closed while reading HTTP status line"), R),
        (InvalidMessage("did not receive a valid HTTP response"), R),
        (ssl.SSLError(1, "tls handshake cut short"), R),
        (ProxyError("proxy rejected connection"), R),
        (proxy_status(502), R),
        (proxy_status(503), R),
        (proxy_status(504), R),
        (proxy_status(407), F),
        (proxy_status(403), F),
        (ProxyStatus(Response(407, "", Headers()), "http://p:1"), F),
        (status(500), R),
        (status(502), R),
        (status(503), R),
        (status(599), R),
        (status(429), R),
        (status(408), R),
        (status(400), F),
        (status(401), F),
        (status(403), F),
        (status(404), F),
        (status(410), F),
        (status(302), F),
        (cert_error(), F),
        (InvalidURI("http://x", "scheme isn't ws or wss"), F),
        (InvalidProxy("x://", "bad proxy"), F),
        (InvalidHeader("Sec-WebSocket-Accept", "bad"), F),
        (NegotiationError("unsupported subprotocol"), F),
        (InvalidUpgrade("Upgrade", "h2c"), F),
        (SecurityError("cannot follow redirect to non-secure URI"), F),
        (InvalidHandshake("anything else in the handshake"), F),
        (HandshakeError("already translated"), F),
        (ValueError("a bug, not a network fault"), F),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_connect_action_defaults(exc: BaseException, expected: Action) -> None:
    assert connect_action(exc) is expected


def test_classify_error_overrides_and_none_falls_back() -> None:
    def classify(exc: BaseException) -> Action | None:
        if isinstance(exc, InvalidStatus) and exc.response.status_code == 401:
            return R
        if isinstance(exc, ConnectionRefusedError):
            return F
        return None

    assert connect_action(status(401), classify) is R
    assert connect_action(ConnectionRefusedError(), classify) is F
    assert connect_action(status(403), classify) is F
    assert connect_action(TimeoutError(), classify) is R


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RuntimeError("subscribe failed"), F),
        (KeyError("id"), F),
        (ConnectionResetError(), R),
        (TimeoutError(), R),
        (ConnectionClosedError(None, None), R),
        (Reconnect("resubscribe"), R),
        (FatalError("bad credentials"), F),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_hook_action(exc: BaseException, expected: Action) -> None:
    assert hook_action(exc) is expected


@pytest.mark.parametrize(
    ("exc", "kept"),
    [(ConnectionResetError(), True), (Reconnect(), True), (FatalError("x"), True), (KeyError("id"), False)],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_callback_error_keeps_what_may_be_retried_and_names_a_bug(exc: Exception, kept: bool) -> None:
    error = callback_error("on_connect", exc)
    if kept:
        assert error is exc
    else:
        assert isinstance(error, CallbackError)
        assert isinstance(error, FatalError)
        assert error.callback == "on_connect"
        assert str(error) == "on_connect raised KeyError: 'id'"


def test_a_close_policy_callable_sees_the_whole_end_and_none_keeps_the_default() -> None:
    def policy(session_end: SessionEnd) -> str | None:
        if session_end.code == 1000 and session_end.reason == "ping timed out":
            return "reconnect"
        if session_end.cause is Cause.HEARTBEAT_TIMEOUT:
            return Action.FATAL
        return None

    late_pong = SessionEnd(1000, "ping timed out", ClosedBy.SERVER, Cause.CLOSED, 1.0)
    assert close_action(late_pong, overrides=policy) is R
    assert close_action(end(1000), overrides=policy) is S
    assert close_action(end(1006, ClosedBy.NOBODY, Cause.HEARTBEAT_TIMEOUT), overrides=policy) is F
    assert close_action(end(1011), overrides=policy) is R
    assert close_action(end(1000, ClosedBy.CLIENT, Cause.USER_CLOSE), overrides=lambda _: R) is S
    with pytest.raises(ValueError, match="retry"):
        close_action(end(1000), overrides=lambda _: "retry")


def test_to_fatal_translates_each_kind() -> None:
    rejected = to_fatal(status(401, {"WWW-Authenticate": "Bearer"}))
    assert isinstance(rejected, HandshakeRejected)
    assert rejected.status == 401
    assert rejected.headers["WWW-Authenticate"] == "Bearer"
    assert rejected.headers.get("www-authenticate") == "Bearer"
    assert "401" in str(rejected)

    closed = to_fatal(SessionDropped(end(1008)))
    assert isinstance(closed, FatalCloseError)
    assert (closed.code, closed.reason, closed.closed_by) == (1008, "why", "server")
    assert "1008" in str(closed)

    cert = to_fatal(cert_error())
    assert isinstance(cert, CertificateError)
    assert "self-signed" in str(cert)

    other = to_fatal(NegotiationError("unsupported subprotocol: chat"))
    assert isinstance(other, HandshakeError)
    assert "subprotocol" in str(other)

    proxy = to_fatal(ProxyStatus(Response(407, "", Headers({"Proxy-Authenticate": "Basic"})), "http://[redacted]@p:1"))
    assert isinstance(proxy, ProxyRejected)
    assert (proxy.status, proxy.proxy) == (407, "http://[redacted]@p:1")
    assert proxy.headers["proxy-authenticate"] == "Basic"
    assert "credentials in proxy=" in str(proxy)
    assert isinstance(to_fatal(proxy_status(403)), ProxyRejected)

    same = FatalError("kept")
    assert to_fatal(same) is same


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("0", 0.0),
        ("7", 7.0),
        (" 120 ", 120.0),
        ("-3", None),
        ("soon", None),
        ("1.5", None),
        (email.utils.formatdate(1_000_030, usegmt=True), 30.0),
        (email.utils.formatdate(999_000, usegmt=True), 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=1_000_000) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (status(503, {"Retry-After": "7"}), 7.0),
        (status(429, {"Retry-After": "2"}), 2.0),
        (status(429), 5.0),
        (status(503, {"Retry-After": "garbage"}), 0.0),
        (status(503), 0.0),
        (status(502), 0.0),
        (status(504), 0.0),
        (status(429, {"Retry-After": "garbage"}), 5.0),
        (status(503, {"Retry-After": "86400"}), 60.0),
        (status(500, {"Retry-After": "7"}), 0.0),
        (SessionDropped(end(1013)), 5.0),
        (SessionDropped(end(1012)), 0.0),
        (ConnectionRefusedError(), 0.0),
        (None, 0.0),
    ],
)
def test_retry_delay_hint(exc: BaseException | None, expected: float) -> None:
    assert retry_delay_hint(exc, overload_delay=5.0, cap=60.0) == expected


@pytest.mark.parametrize(
    ("exc", "action", "words"),
    [
        (socket.gaierror(-2, "Name or service not known"), R, "host name 'feed.example' could not be resolved"),
        (ConnectionRefusedError(111, "refused"), R, "nothing accepts connections at feed.example:443"),
        (TimeoutError(), R, "within open_timeout"),
        (ProxyError("failed to connect to SOCKS proxy"), R, "proxy failed"),
        (proxy_status(407), F, "proxy failed"),
        (status(403), F, "HTTP 403"),
        (cert_error(), F, "ssl="),
        (ValueError("other"), F, "attempt failed"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_connect_hint_names_the_cause_and_the_setting(exc: BaseException, action: Action, words: str) -> None:
    hint = connect_hint(exc, action, "wss://feed.example/ws")
    assert words in hint
    if action is R:
        assert hint.endswith("retried with backoff; max_attempts= or max_outage= makes the client give up")
    else:
        assert hint.endswith("not retried")
    assert connect_hint(exc, Action.STOP, "wss://feed.example/ws") == hint.split("; ")[0]
