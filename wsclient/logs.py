"""The ``wsclient`` logger and the redaction of secrets.

The library logs key-value events and never configures logging: rendering is
the application's choice. Each event goes through the application's structlog
pipeline when it configured structlog, and otherwise to the standard library
logger ``logging.getLogger("wsclient")``, as Python expects of a library;
the choice is made per event, so configuring either after creating a client
works. Secrets are redacted before a value is bound to an event, and
:func:`redact_secrets` is a structlog processor for applications that log URLs
or headers themselves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

__all__ = [
    "LOGGER_NAME",
    "REDACTED",
    "Logger",
    "describe_error",
    "get_logger",
    "redact_headers",
    "redact_secrets",
    "redact_url",
]

LOGGER_NAME = "wsclient"

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"token|key|secret|sig|signature|pass|password|pwd|auth|credential|session|cookie|jwt|bearer|code",
    re.IGNORECASE,
)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
_URL_IN_TEXT = re.compile(r"\bwss?://[^\s'\"<>]+", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with its userinfo and the values of secret-looking query parameters redacted.

    Redacting an already redacted URL changes nothing, so a URL bound to an
    event can go through :func:`redact_secrets` again.

    Args:
        url: Any URL.

    Returns:
        The URL, safe to log.
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
    """Return a copy of ``headers`` with credentials (``Authorization``, ``Cookie``, tokens) redacted.

    Args:
        headers: HTTP headers, by name.

    Returns:
        A new mapping, safe to log.
    """
    return {
        name: REDACTED if name.lower() in _SECRET_HEADERS or _SECRET_NAME.search(name) else value
        for name, value in headers.items()
    }


def redact_secrets(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A structlog processor: redact ``url``/``uri`` values and ``headers`` mappings in an event.

    Add it to your own processors to redact your events as wsclient redacts its own.

    Args:
        logger: The wrapped logger (unused, as structlog passes it).
        method_name: The name of the log method (unused, as structlog passes it).
        event_dict: The event; changed in place.

    Returns:
        The same event, redacted.
    """
    for key in ("url", "uri", "location"):
        value = event_dict.get(key)
        if isinstance(value, str):
            event_dict[key] = redact_url(value)
    headers = event_dict.get("headers")
    if isinstance(headers, Mapping):
        event_dict["headers"] = redact_headers(headers)
    return event_dict


# A standard LogRecord's own attributes: an event field with one of these names
# cannot be passed in ``extra`` and is prefixed instead.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_LOGFMT = structlog.processors.LogfmtRenderer(bool_as_flag=False)


def _to_record(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Turn an event into ``logging`` call arguments: a one-line message, the fields in ``extra``.

    A plain handler prints ``connected url=ws://... session_id=s1``; a structured
    one (a JSON formatter, structlog's ``ProcessorFormatter`` with ``ExtraAdder``)
    finds ``event`` and every field as attributes of the record.
    """
    kwargs: dict[str, Any] = {key: event_dict.pop(key) for key in ("exc_info", "stack_info") if key in event_dict}
    event = str(event_dict.pop("event", ""))
    message = f"{event} {_LOGFMT(logger, method_name, event_dict)}" if event_dict else event
    extra = {f"wsclient_{key}" if key in _RECORD_ATTRIBUTES else key: value for key, value in event_dict.items()}
    extra["event"] = event
    kwargs["extra"] = extra
    return (message,), kwargs


_STDLIB_LOGGER = structlog.stdlib.BoundLogger(
    logging.getLogger(LOGGER_NAME),
    [
        structlog.stdlib.filter_by_level,
        structlog.contextvars.merge_contextvars,
        redact_secrets,
        _to_record,
    ],
    {},
)


class Logger:
    """wsclient's logger: binds context like a structlog logger and routes each event when it is logged.

    If the application configured structlog (``structlog.is_configured()``), the
    event goes through its pipeline as ``structlog.get_logger("wsclient")``
    with ``logger="wsclient"`` bound; otherwise to ``logging.getLogger("wsclient")``,
    whose level and handlers apply (with none configured, logging's last resort
    prints warnings and errors to stderr).
    """

    __slots__ = ("_context",)

    def __init__(self, context: dict[str, Any]) -> None:
        # Only the context is kept, not a bound structlog logger: every client and session has a logger.
        self._context = context

    def bind(self, **values: Any) -> Logger:
        """A logger whose events also carry ``values`` (this one, if it carries them already)."""
        context = self._context
        if all(key in context and context[key] == value for key, value in values.items()):
            return self
        return Logger({**context, **values})

    def _emit(self, method_name: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            logger = structlog.get_logger(LOGGER_NAME).bind(logger=LOGGER_NAME, **self._context)
            getattr(logger, method_name)(event, **fields)
        else:
            getattr(_STDLIB_LOGGER, method_name)(event, **{**self._context, **fields})

    def debug(self, event: str, **fields: Any) -> None:
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit("critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """Log an error with the exception being handled (``exc_info=True`` unless given)."""
        fields.setdefault("exc_info", True)
        self._emit("error", event, fields)


def get_logger() -> Logger:
    """The library's logger, named ``wsclient`` on both paths."""
    return Logger({})
