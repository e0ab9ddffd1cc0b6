"""Redaction of secrets: the one place that knows what a credential looks like.

Pure functions over strings, mappings and exceptions, used wherever a URL,
a header or an error can reach an output: wsclient's log events, the
``repr`` of a client's configuration, the errors raised to the application
(and their ``__cause__`` chains), and the records that websockets and picows
log through the loggers wsclient gives them (:class:`RedactingLogger`).

A credential is userinfo in a URL (``ws://user:password@host``), the value of a
query parameter or header whose name looks secret (``token``,
``access_token``, ``key``, ``secret``, ``signature``, ``password``, ``auth``,
``session``, ``cookie``...), and the headers ``Authorization``,
``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie``. Message payloads are
not redacted: websockets logs the first bytes of each frame at DEBUG, so an
application that sends credentials in messages should keep that logger above DEBUG.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "REDACTED",
    "RedactingLogger",
    "describe_error",
    "redact_error",
    "redact_headers",
    "redact_secrets",
    "redact_text",
    "redact_url",
]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"token|key|secret|sig|signature|pass|password|pwd|auth|credential|session|cookie|jwt|bearer|code",
    re.IGNORECASE,
)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_URL_IN_TEXT = re.compile(r"\b(?:wss?|https?)://[^\s'\"<>]+", re.IGNORECASE)
# A "name: value" header line inside a larger text (a raw HTTP request or response): after a line break,
# so that the first line of an error's text ("KeyError: 'x'") is never taken for a header.
_HEADER_LINE = re.compile(r"(?<=\n)([-!#$%&'*+.^_`|~0-9a-zA-Z]+)([ \t]*:[ \t]*)([^\r\n]*)")
# A query parameter anywhere: after "?" or "&", up to the next separator.
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#\s'\"<>]+)=([^&;#\s'\"<>]*)")


def _secret_name(name: str) -> bool:
    return name.lower() in _SECRET_HEADERS or _SECRET_NAME.search(name) is not None


def redact_url(url: str) -> str:
    """Return ``url`` with its userinfo and the values of secret-looking query parameters redacted.

    Redacting an already redacted URL changes nothing, so a URL bound to an
    event can go through :func:`redact_secrets` again.

    Args:
        url: any URL; one that cannot be parsed becomes ``[redacted]`` as a whole.

    Returns:
        The URL without credentials, and without its ``#fragment``.
    """
    # The userinfo is cut off before parsing: a redacted one ("[redacted]@")
    # would read as a malformed IPv6 host.
    scheme, separator, rest = url.partition("://")
    had_userinfo = False
    if separator:
        end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
        authority = rest[:end]
        if "@" in authority:
            had_userinfo = True
            url = f"{scheme}://{authority.rpartition('@')[2]}{rest[end:]}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return REDACTED
    netloc = f"{REDACTED}@{parts.netloc}" if had_userinfo else parts.netloc
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _SECRET_NAME.search(k) else v) for k, v in pairs], safe="[]")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``headers`` with credentials (``Authorization``, ``Cookie``, tokens) redacted.

    Args:
        headers: header names and values.

    Returns:
        A new ``dict``; a secret-looking header keeps its name and gets ``[redacted]`` as its value.
    """
    return {name: REDACTED if _secret_name(name) else value for name, value in headers.items()}


def redact_text(text: str) -> str:
    """Redact every credential found in free text: URLs, ``name: value`` header lines, query parameters.

    For texts that were not built to be logged: an exception's message, a raw
    HTTP request or response, a request target such as ``/feed?token=...``.

    Args:
        text: any text.

    Returns:
        The text with credentials replaced by ``[redacted]``.
    """
    text = _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)
    text = _HEADER_LINE.sub(
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}" if _secret_name(m.group(1)) else m.group(0), text
    )
    return _QUERY_PARAM.sub(
        lambda m: f"{m.group(1)}{m.group(2)}={REDACTED}" if _SECRET_NAME.search(m.group(2)) else m.group(0), text
    )


def describe_error(exc: BaseException | None) -> str | None:
    """A one-line description of ``exc`` for a log event, with any credential in it redacted.

    The exception's ``repr`` is avoided on purpose: an HTTP rejection's repr
    carries the response headers, ``Set-Cookie`` included.

    Args:
        exc: the exception, or ``None``.

    Returns:
        ``"TypeName: message"``, or ``None`` for ``None``.
    """
    if exc is None:
        return None
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return redact_text(text)


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("latin-1")).encode("latin-1")
    return value


def _redact_one(exc: BaseException) -> BaseException:
    """``exc`` itself when its text holds no credential, else a copy of the same type whose text holds none."""
    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidStatus, InvalidURI
    from websockets.http11 import Response

    if isinstance(exc, InvalidStatus):
        # Its repr shows the response's headers: the server's cookies stay out of the text.
        response = exc.response
        headers = Headers(
            (name, REDACTED if _secret_name(name) else value) for name, value in response.headers.raw_items()
        )
        return InvalidStatus(Response(response.status_code, response.reason_phrase, headers, response.body))
    if isinstance(exc, InvalidURI):
        return InvalidURI(redact_url(exc.uri), exc.msg)
    try:
        text, shown = str(exc), repr(exc)
    except Exception:  # pragma: no cover - a broken __str__ or __repr__
        return exc
    if redact_text(text) == text and redact_text(shown) == shown:
        return exc
    try:
        fresh = copy.copy(exc)
        fresh.args = tuple(_redact_value(arg) for arg in exc.args)
        if redact_text(str(fresh)) == str(fresh) and redact_text(repr(fresh)) == repr(fresh):
            return fresh
    except Exception:
        pass
    # Its text comes from attributes that cannot be rewritten: keep the type's name, redact the text.
    return RedactedError(f"{type(exc).__name__}: {redact_text(text)}")


class RedactedError(Exception):
    """Stands in a ``__cause__`` chain for an error whose text held a credential and could not be copied safely."""


def redact_error(exc: BaseException) -> BaseException:
    """``exc``, or a copy of the same type whose ``str``, ``repr`` and chain hold no credential.

    The copy keeps the traceback, and its ``__cause__`` and ``__context__`` are
    redacted the same way: raise an error ``from redact_error(exc)`` when
    ``exc`` may carry a URL or headers.

    Args:
        exc: the error to raise or chain.

    Returns:
        ``exc`` itself when nothing in its chain needed redacting.
    """
    return _redact_chain(exc, {})


def _redact_chain(exc: BaseException, seen: dict[int, BaseException]) -> BaseException:
    if id(exc) in seen:
        return seen[id(exc)]
    seen[id(exc)] = exc  # a cycle refers back to the original: cut below
    fresh = _redact_one(exc)
    seen[id(exc)] = fresh
    cause = None if exc.__cause__ is None else _redact_chain(exc.__cause__, seen)
    context = None if exc.__context__ is None else _redact_chain(exc.__context__, seen)
    if fresh is exc and cause is exc.__cause__ and context is exc.__context__:
        return exc
    if fresh is exc:
        fresh = copy.copy(exc)
        seen[id(exc)] = fresh
    fresh.__traceback__ = exc.__traceback__
    fresh.__cause__ = cause
    fresh.__context__ = context
    fresh.__suppress_context__ = exc.__suppress_context__
    return fresh


def redact_secrets(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: redact ``url``/``uri``/``location`` values and ``headers`` mappings in an event.

    Args:
        logger: structlog's wrapped logger (unused).
        method_name: the log method's name (unused).
        event_dict: the event.

    Returns:
        The same event, redacted in place.
    """
    for key in ("url", "uri", "location"):
        value = event_dict.get(key)
        if isinstance(value, str):
            event_dict[key] = redact_url(value)
    headers = event_dict.get("headers")
    if isinstance(headers, Mapping):
        event_dict["headers"] = redact_headers(headers)
    return event_dict


class RedactingLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger for websockets (``logger=``) and picows (``logger_name=``) whose records hold no credential.

    Both libraries log the handshake's request and response at DEBUG: the
    request line with its query string, ``Authorization`` and ``Cookie``, the
    server's ``Set-Cookie``. This adapter redacts the message arguments
    before a record is made, so every handler of the library's own logger
    (``websockets.client``, ``picows.client``) sees them redacted.
    """

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Log ``msg % args`` with credentials redacted from ``msg`` and ``args``."""
        if not self.isEnabledFor(level):
            return
        header = len(args) == 2 and isinstance(msg, str) and msg.endswith("%s: %s") and isinstance(args[0], str)
        if header and _secret_name(str(args[0])):
            # websockets' handshake headers, one record each: "> %s: %s" with (name, value).
            args = (args[0], REDACTED)
        args = tuple(_redact_value(arg) for arg in args)
        if isinstance(msg, str):
            msg = redact_text(msg)
        # No ``process()``: the extra that websockets' own adapter adds (``websocket``) passes through.
        self.logger.log(level, msg, *args, **kwargs)
