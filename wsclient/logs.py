"""The ``wsclient`` structlog logger and the redaction of secrets.

The library logs key-value events and never calls ``structlog.configure()``:
rendering is the application's choice. Secrets are redacted before a value
is bound to an event, and :func:`redact_secrets` is a structlog processor for
applications that log URLs or headers themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

__all__ = ["REDACTED", "describe_error", "get_logger", "redact_headers", "redact_secrets", "redact_url"]

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"token|key|secret|sig|signature|pass|password|pwd|auth|credential|session|cookie|jwt|bearer|code",
    re.IGNORECASE,
)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_URL_IN_TEXT = re.compile(r"\bwss?://[^\s'\"<>]+", re.IGNORECASE)


def get_logger() -> Any:
    """The library's logger: ``structlog.get_logger("wsclient")``."""
    return structlog.get_logger("wsclient")


def redact_url(url: str) -> str:
    """Return ``url`` with its userinfo and the values of secret-looking query parameters redacted."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{REDACTED}@{host}" + (f":{port}" if port is not None else "")
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _SECRET_NAME.search(k) else v) for k, v in pairs], safe="[]")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def describe_error(exc: BaseException | None) -> str | None:
    """A one-line description of ``exc`` for a log event, with any URL in it redacted.

    The exception's ``repr`` is avoided on purpose: an HTTP rejection's repr
    carries the response headers, ``Set-Cookie`` included.
    """
    if exc is None:
        return None
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of ``headers`` with credentials (``Authorization``, ``Cookie``, tokens) redacted."""
    return {
        name: REDACTED if name.lower() in _SECRET_HEADERS or _SECRET_NAME.search(name) else value
        for name, value in headers.items()
    }


def redact_secrets(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: redact ``url``/``uri`` values and ``headers`` mappings in an event."""
    for key in ("url", "uri", "location"):
        value = event_dict.get(key)
        if isinstance(value, str):
            event_dict[key] = redact_url(value)
    headers = event_dict.get("headers")
    if isinstance(headers, Mapping):
        event_dict["headers"] = redact_headers(headers)
    return event_dict
