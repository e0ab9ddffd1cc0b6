"""The exceptions wsclient raises to its users.

Every error of the library derives from :class:`WsClientError`. Errors that
reconnecting cannot fix derive from :class:`FatalError` and carry what the
server said (close code, HTTP status) so that the application can act on it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from websockets.datastructures import Headers

from .redact import describe_error

__all__ = [
    "BufferFull",
    "CallbackError",
    "CertificateError",
    "ClientClosed",
    "FatalCloseError",
    "FatalError",
    "GaveUp",
    "HandshakeError",
    "HandshakeRejected",
    "ProxyRejected",
    "Reconnect",
    "RequestInterrupted",
    "RequestTimeout",
    "WsClientError",
    "fresh_error",
]


class WsClientError(Exception):
    """Base class of every error raised by wsclient."""

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuild from the attributes the constructor took, so that ``copy.copy`` gives an equal error.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[WsClientError], args: tuple[object, ...], state: dict[str, object]) -> WsClientError:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


def fresh_error(error: BaseException) -> BaseException:
    """A new exception equal to ``error``, with the same ``__cause__``, for raising a stored error again.

    Raising the same object again and again would grow its traceback with every raise.
    """
    try:
        fresh = copy.copy(error)
    except Exception:  # pragma: no cover - an exception type that cannot be copied
        fresh = WsClientError(str(error))
    if fresh is error:  # pragma: no cover - a type whose copy returns itself
        fresh = WsClientError(str(error))
    fresh.__traceback__ = None
    fresh.__cause__ = error.__cause__
    fresh.__suppress_context__ = True
    return fresh


class FatalError(WsClientError):
    """An error that reconnecting cannot fix: raised to the user, never retried."""


class FatalCloseError(FatalError):
    """The connection closed with a code that says retrying is pointless.

    ``closed_by`` is ``"server"`` when the peer sent the close frame and
    ``"client"`` when this side failed the connection (for example a message
    over ``max_size`` gives 1009, invalid UTF-8 gives 1007).

    Args:
        code: The close code that mattered.
        reason: The close reason.
        closed_by: ``"server"`` or ``"client"``: the side that closed.
    """

    def __init__(self, code: int, reason: str = "", closed_by: str = "server") -> None:
        self.code = code
        self.reason = reason
        self.closed_by = closed_by
        detail = f": {reason}" if reason else ""
        if code == 1009 and closed_by == "client":
            detail += "; raise max_size to accept larger messages, or None for no limit"
        super().__init__(f"connection closed by the {closed_by} with code {code}{detail}")


class HandshakeRejected(FatalError):
    """The server answered the opening handshake with an HTTP status that will not change.

    ``headers`` are the response's headers, looked up case-insensitively
    (``headers.get("WWW-Authenticate")`` finds ``www-authenticate``).

    Args:
        status: The HTTP status, such as 401 or 404.
        headers: The response's headers.
    """

    def __init__(self, status: int, headers: Mapping[str, str] | Headers | None = None) -> None:
        self.status = status
        self.headers: Headers = Headers(headers.raw_items() if isinstance(headers, Headers) else (headers or {}))
        hint = _REJECTION_HINTS.get(status, "")
        super().__init__(f"server rejected the WebSocket handshake with HTTP {status}{hint}")


_REJECTION_HINTS = {
    400: ": check the url, headers= and subprotocols=",
    401: ": check the credentials in headers= (or the url's user:password)",
    403: ": check the credentials in headers= and the Origin the server expects",
    404: ": check the path of the url",
    426: ": the server wants another protocol version or TLS (wss://)",
}


class ProxyRejected(FatalError):
    """The proxy refused to open the tunnel with an HTTP status that will not change (407, 403, ...).

    ``proxy`` is the proxy's URL without its credentials; ``headers`` are its
    response's headers (``Proxy-Authenticate`` says which scheme it wants).
    A 502, 503 or 504 from the proxy is retried like a server's. A SOCKS5
    proxy that refuses the credentials (or wants some) is reported as 407 too.

    Args:
        status: The proxy's HTTP status, such as 407 or 403.
        proxy: The proxy's URL, without its credentials.
        headers: The proxy's response headers.
    """

    def __init__(self, status: int, proxy: str, headers: Mapping[str, str] | Headers | None = None) -> None:
        self.status = status
        self.proxy = proxy
        self.headers: Headers = Headers(headers.raw_items() if isinstance(headers, Headers) else (headers or {}))
        hint = ": check the credentials in proxy= (or in the proxy environment variables)" if status == 407 else ""
        super().__init__(f"proxy {proxy} rejected the tunnel with HTTP {status}{hint}")


class HandshakeError(FatalError):
    """The opening handshake failed in a way retrying cannot fix (bad URL, bad answer)."""


class CertificateError(FatalError):
    """The server's TLS certificate is not trusted; pass an ``ssl`` context that trusts it."""


class CallbackError(FatalError):
    """A callable of the application raised: a bug to fix, not a fault to retry.

    ``callback`` names it (``"on_connect"``, ``"url"``, ``"headers"``,
    ``"Heartbeat.message"``, ``"classify_error"``, ``"close_actions"``); the
    original exception is chained as ``__cause__``.

    Args:
        callback: The name of the callable that raised.
        error: What it raised.
    """

    def __init__(self, callback: str, error: BaseException) -> None:
        self.callback = callback
        # The error's text may hold what the callable returned (a URL with a token): credentials are redacted.
        detail = describe_error(error) or type(error).__name__
        super().__init__(f"{callback} raised {detail}")


class Reconnect(WsClientError):
    """Raise it in ``on_connect`` to drop this session and reconnect with backoff.

    Any other exception from ``on_connect`` that is not a connection error
    (``ConnectionClosed``, ``OSError``, ``TimeoutError``) stops the client
    with a :class:`CallbackError`.
    """


class GaveUp(WsClientError):
    """Reconnecting stopped: ``max_attempts`` or ``max_outage`` was reached.

    The last error is chained as ``__cause__``.

    Args:
        attempts: Failed attempts in a row.
        elapsed: Seconds since the outage began.
        limit: The setting that was reached, as ``"max_attempts=5"`` or ``"max_outage=60"``.
        last_error: A one-line description of the last error, credentials redacted.
    """

    def __init__(self, attempts: int, elapsed: float, limit: str = "", last_error: str = "") -> None:
        self.attempts = attempts
        self.elapsed = elapsed
        self.limit = limit
        """The setting that was reached, as ``"max_attempts=5"`` or ``"max_outage=60"``."""
        reached = f" ({limit} reached)" if limit else ""
        last = f"; last error: {last_error}" if last_error else ""
        super().__init__(f"gave up after {attempts} attempt(s) in {elapsed:.1f}s{reached}{last}")


class ClientClosed(WsClientError):
    """``recv()`` or ``send()`` on a client that has stopped.

    ``code`` and ``reason`` describe the close that stopped it, when there was one.

    Args:
        message: What the error says.
        code: The close code that stopped the client, if any.
        reason: The close reason that stopped the client.
    """

    def __init__(self, message: str = "client is closed", code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class BufferFull(WsClientError):
    """``send()`` while disconnected found the outbox full (``max_buffered`` messages).

    Args:
        limit: ``max_buffered``: how many messages the outbox holds.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"outbox is full ({limit} messages buffered while disconnected)")


class RequestTimeout(WsClientError, TimeoutError):
    """No reply to a request came within its ``timeout``.

    ``sent`` tells whether the message was handed to a connection: when it was
    still buffered, it was removed from the outbox and is never sent. A reply
    that arrives later is not lost: it flows to ``recv()``/``on_message``.

    Args:
        key: The request's key.
        timeout: The timeout that ran out, in seconds.
        sent: Whether the message was handed to a connection.
    """

    def __init__(self, key: object, timeout: float, sent: bool) -> None:
        self.key = key
        self.timeout = timeout
        self.sent = sent
        where = "sent" if sent else "still buffered, removed unsent"
        super().__init__(f"no reply to request {key!r} within {timeout}s ({where})")


class RequestInterrupted(WsClientError):
    """The session that carried a request ended before its reply came.

    The server may or may not have acted on the request: only an application
    acknowledgement proves it. ``end`` is how the session ended (a
    :class:`~wsclient.SessionEnd`) and ``session_id`` which one it was. Raised
    from ``on_connect``, it reconnects like a lost connection does.

    Args:
        key: The request's key.
        session_id: The session that carried it, such as ``"s3"``.
        end: How the session ended: a :class:`~wsclient.SessionEnd`, or ``None`` when unknown.
    """

    def __init__(self, key: object, session_id: str, end: object = None) -> None:
        self.key = key
        self.session_id = session_id
        self.end = end
        how = "" if end is None else f" ({getattr(end, 'cause', '')}, code {getattr(end, 'code', '')})"
        super().__init__(
            f"session {session_id} ended before the reply to request {key!r}{how}: "
            "the server may or may not have acted on it"
        )
