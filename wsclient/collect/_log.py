"""The collector's log events: data, through the ``wsclient`` logger, with secrets redacted."""

from __future__ import annotations

import logging
from typing import Any

import structlog

import wsclient

LOGGER_NAME = "wsclient.collect"

_stdlib = logging.getLogger(LOGGER_NAME)


class Log:
    """Binds context and emits events through structlog when the application configured it, else ``logging``."""

    __slots__ = ("_context",)

    def __init__(self, **context: Any) -> None:
        self._context = context

    def bind(self, **values: Any) -> Log:
        """A logger whose events also carry ``values``."""
        return Log(**{**self._context, **values})

    def _emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        values = {**self._context, **fields}
        if structlog.is_configured():
            logger = structlog.get_logger("wsclient").bind(logger=LOGGER_NAME)
            getattr(logger, logging.getLevelName(level).lower())(event, **values)
            return
        if not _stdlib.isEnabledFor(level):
            return
        exc_info = values.pop("exc_info", None)
        clean = wsclient.redact_secrets(None, "", dict(values))
        text = " ".join(f"{key}={value!r}" for key, value in clean.items())
        _stdlib.log(level, f"{event} {text}" if text else event, exc_info=exc_info, extra={"event": event})

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, event, fields)
