"""The ``wsclient`` logger and the redaction of secrets.

The library logs key-value events and never configures logging: rendering is
the application's choice. Each event goes through the application's structlog
pipeline when it configured structlog, and otherwise to the standard library
logger ``logging.getLogger("wsclient")``, as Python expects of a library;
the choice is made per event, so configuring either after creating a client
works. Secrets are redacted before a value is bound to an event, and
:func:`redact_secrets` is a structlog processor for applications that log URLs
or headers themselves; the redaction itself lives in :mod:`wsclient.redact`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from .redact import REDACTED, describe_error, redact_headers, redact_secrets, redact_url

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


_sink_failure_reported = False


def _sink_failed(exc: Exception) -> None:
    """Report the first log event that could not be written, once per process, straight to ``sys.stderr``.

    The report is a single line without the event (whose fields may be
    secrets); if stderr cannot be written either, nothing more is tried.
    """
    global _sink_failure_reported
    if _sink_failure_reported:
        return
    _sink_failure_reported = True
    try:
        stream = sys.stderr
        if stream is not None:
            stream.write(
                f"wsclient: a log event could not be written ({describe_error(exc)}); "
                "events that cannot be written are dropped from now on\n"
            )
            stream.flush()
    except Exception:  # the sink of last resort failed too: nothing is left to tell
        pass


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
        # As pairs, not a dict: a tuple of one pair is half the size of a dict of one key.
        self._context: tuple[tuple[str, Any], ...] = tuple(context.items())

    def bind(self, **values: Any) -> Logger:
        """A logger whose events also carry ``values`` (this one, if it carries them already)."""
        context = dict(self._context)
        if all(key in context and context[key] == value for key, value in values.items()):
            return self
        return Logger({**context, **values})

    def _emit(self, method_name: str, event: str, fields: dict[str, Any]) -> None:
        # Logging never stops the client: an event that cannot be written (a full disk, a closed pipe,
        # a processor or handler that raises) is dropped, and the first such failure reported once.
        try:
            if structlog.is_configured():
                logger = structlog.get_logger(LOGGER_NAME).bind(logger=LOGGER_NAME, **dict(self._context))
                getattr(logger, method_name)(event, **fields)
            else:
                getattr(_STDLIB_LOGGER, method_name)(event, **dict(self._context, **fields))
        except Exception as exc:
            _sink_failed(exc)

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
