"""A live one-line status on a terminal, with log lines printed above it.

The command line tools show where a client is (state, messages, reconnects,
last close code, uptime) on one line that redraws in place; log events and
messages printed meanwhile scroll above it instead of garbling it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from typing import Any, TextIO

import structlog

from ..client import Client
from ..logs import redact_secrets

__all__ = ["StatusLine", "configure_logging", "describe_client", "format_duration"]

_CLEAR = "\r\x1b[K"


def format_duration(seconds: float) -> str:
    """``seconds`` as ``H:MM:SS``."""
    total = int(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def describe_client(client: Client, started: float, now: float | None = None) -> str:
    """One line about ``client``: state, messages, reconnects, last close code and uptime."""
    stats = client.stats
    now = time.monotonic() if now is None else now
    last = "-" if stats.last_close_code is None else str(stats.last_close_code)
    return (
        f"{client.state.value} | {stats.messages_in} msgs | {stats.reconnects} reconnects | "
        f"last close {last} | up {format_duration(now - started)}"
    )


class StatusLine:
    """One line on ``stream`` (a terminal) that :meth:`run` redraws every ``interval`` seconds."""

    def __init__(self, stream: TextIO, render: Callable[[], str] = str, *, interval: float = 0.25) -> None:
        self._stream = stream
        self.render = render
        """What the line says: called at every redraw."""
        self._interval = interval
        self._drawn = False

    def draw(self) -> None:
        """Redraw the line in place, cut to the terminal's width."""
        width = shutil.get_terminal_size().columns - 1
        self._stream.write(_CLEAR + self.render()[:width])
        self._stream.flush()
        self._drawn = True

    def clear(self) -> None:
        """Erase the line, so that the next output starts on a clean line."""
        if self._drawn:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self._drawn = False

    def print_above(self, text: str) -> None:
        """Print ``text`` as a line of its own above the status line."""
        self.clear()
        self._stream.write(text + "\n")
        self.draw()

    async def run(self) -> None:
        """Redraw until cancelled, then leave the last status on its own line."""
        try:
            while True:
                self.draw()
                await asyncio.sleep(self._interval)
        finally:
            if self._drawn:
                self.draw()
                self._stream.write("\n")
                self._stream.flush()
                self._drawn = False


class _AboveStatusLogger:
    """A structlog logger that prints each rendered event above the status line."""

    def __init__(self, status: StatusLine) -> None:
        self._status = status

    def msg(self, message: str) -> None:
        self._status.print_above(message)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg


def configure_logging(
    stream: TextIO, *, level: int = logging.INFO, json: bool = False, status: StatusLine | None = None
) -> None:
    """Send structlog events to ``stream``: console lines (or JSON), above ``status`` when there is one.

    This is the command line's choice as an application; the library itself
    never configures structlog.
    """
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    )
    factory: Any = (
        structlog.PrintLoggerFactory(file=stream) if status is None else (lambda *_args: _AboveStatusLogger(status))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            *([structlog.processors.format_exc_info] if json else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
