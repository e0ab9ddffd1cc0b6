"""The exceptions wsclient raises to its users.

Every error of the library derives from :class:`WsClientError`. Errors that
reconnecting cannot fix derive from :class:`FatalError` and carry what the
server said (close code, HTTP status) so that the application can act on it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BufferFull",
    "CertificateError",
    "ClientClosed",
    "FatalCloseError",
    "FatalError",
    "GaveUp",
    "HandshakeError",
    "HandshakeRejected",
    "WsClientError",
]


class WsClientError(Exception):
    """Base class of every error raised by wsclient."""


class FatalError(WsClientError):
    """An error that reconnecting cannot fix: raised to the user, never retried."""


class FatalCloseError(FatalError):
    """The connection closed with a code that says retrying is pointless.

    ``closed_by`` is ``"server"`` when the peer sent the close frame and
    ``"client"`` when this side failed the connection (for example a message
    over ``max_size`` gives 1009, invalid UTF-8 gives 1007).
    """

    def __init__(self, code: int, reason: str = "", closed_by: str = "server") -> None:
        self.code = code
        self.reason = reason
        self.closed_by = closed_by
        detail = f": {reason}" if reason else ""
        super().__init__(f"connection closed by the {closed_by} with code {code}{detail}")


class HandshakeRejected(FatalError):
    """The server answered the opening handshake with an HTTP status that will not change."""

    def __init__(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers: Mapping[str, str] = dict(headers or {})
        super().__init__(f"server rejected the WebSocket handshake with HTTP {status}")


class HandshakeError(FatalError):
    """The opening handshake failed in a way retrying cannot fix (bad URL, bad answer)."""


class CertificateError(FatalError):
    """The server's TLS certificate is not trusted; pass an ``ssl`` context that trusts it."""


class GaveUp(WsClientError):
    """Reconnecting stopped: ``max_attempts`` or ``max_outage`` was reached.

    The last error is chained as ``__cause__``.
    """

    def __init__(self, attempts: int, elapsed: float) -> None:
        self.attempts = attempts
        self.elapsed = elapsed
        super().__init__(f"gave up after {attempts} attempt(s) in {elapsed:.1f}s")


class ClientClosed(WsClientError):
    """``recv()`` or ``send()`` on a client that has stopped.

    ``code`` and ``reason`` describe the close that stopped it, when there was one.
    """

    def __init__(self, message: str = "client is closed", code: int | None = None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class BufferFull(WsClientError):
    """``send()`` while disconnected found the outbox full (``max_buffered`` messages)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"outbox is full ({limit} messages buffered while disconnected)")
