"""A log sink that fails (a full disk, a closed pipe, a handler that raises) never stops or speeds up the client.

Each failing sink below stops failing after ``SPIN_LIMIT`` writes: a client
that turned its failures into a busy loop then gets out of it, and the test
fails on the count instead of hanging the loop it runs on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from tenacity import RetryCallState
from tenacity.wait import wait_base

import wsclient
import wsclient.logs
from wsclient.logs import LOGGER_NAME
from wsclient.testing import FlakyServer

SPIN_LIMIT = 2000
"""Failures after which a sink lets writes through: far more than a run of a few attempts logs."""


class FullStream:
    """A text stream whose ``write`` fails like a full disk (or a closed pipe), ``SPIN_LIMIT`` times."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        self.failures = 0

    def write(self, text: str) -> int:
        if self.failures < SPIN_LIMIT:
            self.failures += 1
            raise self.error
        return len(text)

    def flush(self) -> None:
        pass


class RaisingHandler(logging.Handler):
    """A ``logging`` handler whose ``emit`` raises (a broken custom handler), ``SPIN_LIMIT`` times."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        if self.failures < SPIN_LIMIT:
            self.failures += 1
            raise OSError(28, "No space left on device")


@pytest.fixture(autouse=True)
def report_not_yet_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first sink failure is reported once per process: each test starts as a fresh process would."""
    monkeypatch.setattr(wsclient.logs, "_sink_failure_reported", False)


@pytest.fixture
async def refused_url() -> str:
    """A loopback URL whose port refuses connections."""
    server = FlakyServer("echo")
    await server.start()
    await server.stop()
    return server.url


@pytest.fixture
def structlog_to(request: pytest.FixtureRequest) -> Iterator[FullStream]:
    """structlog configured to print every event to a stream that fails."""
    stream = FullStream(request.param)
    saved = structlog.get_config()
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(stream),  # type: ignore[arg-type]
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    try:
        yield stream
    finally:
        structlog.configure(**saved)
        structlog.reset_defaults()


@pytest.fixture
def stdlib_handler() -> Iterator[RaisingHandler]:
    """The standard library path (structlog not configured) with a handler that raises."""
    assert not structlog.is_configured()
    handler = RaisingHandler()
    logger = logging.getLogger(LOGGER_NAME)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


async def backs_off_and_gives_up(url: str) -> float:
    """Run a client with three attempts 50 ms apart against ``url`` to its ``GaveUp``; return how long it took."""
    backoff = wsclient.Backoff(initial=0.05, maximum=0.05, jitter=False)
    client = wsclient.Client(url, max_attempts=3, backoff=backoff, heartbeat=None)
    started = time.monotonic()
    await client.start()
    try:
        with pytest.raises(wsclient.GaveUp, match="after 3 attempt"):
            async with asyncio.timeout(10):
                await client.wait_closed()
    finally:
        await client.close()
    assert client.stats.connect_attempts == 3
    return time.monotonic() - started


async def close_stops_it_while_it_retries(url: str) -> None:
    """A client that retries forever still closes promptly, and the loop keeps serving other tasks meanwhile."""
    backoff = wsclient.Backoff(initial=0.01, maximum=0.01, jitter=False)
    client = wsclient.Client(url, backoff=backoff, heartbeat=None, close_timeout=1.0)
    await client.start()
    try:
        async with asyncio.timeout(5):
            while client.stats.connect_attempts < 3:  # noqa: ASYNC110 - a counter; the wait is bounded
                await asyncio.sleep(0.005)
    finally:
        async with asyncio.timeout(2):
            await client.close()
    assert client.state is wsclient.State.CLOSED


SINK_ERRORS = [
    pytest.param(OSError(28, "No space left on device"), id="full-disk"),
    pytest.param(BrokenPipeError(32, "Broken pipe"), id="broken-pipe"),
]


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
@pytest.mark.parametrize("structlog_to", SINK_ERRORS, indirect=True)
async def test_a_failing_structlog_sink_changes_neither_backoff_nor_give_up(
    structlog_to: FullStream, refused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    elapsed = await backs_off_and_gives_up(refused_url)
    assert elapsed >= 0.1  # two waits of 50 ms: no attempt skipped its backoff
    assert 0 < structlog_to.failures < 20
    await close_stops_it_while_it_retries(refused_url)
    assert structlog_to.failures < 50
    reported = capsys.readouterr().err.splitlines()
    assert len(reported) == 1  # once, not per event
    assert reported[0].startswith("wsclient: a log event could not be written")
    assert "No space left on device" in reported[0] or "Broken pipe" in reported[0]


async def test_a_raising_stdlib_handler_changes_neither_backoff_nor_give_up(
    stdlib_handler: RaisingHandler, refused_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    elapsed = await backs_off_and_gives_up(refused_url)
    assert elapsed >= 0.1
    assert 0 < stdlib_handler.failures < 20
    await close_stops_it_while_it_retries(refused_url)
    assert stdlib_handler.failures < 50
    reported = capsys.readouterr().err.splitlines()
    assert len(reported) == 1
    assert reported[0].startswith("wsclient: a log event could not be written")


class RaisingWait(wait_base):
    """A wait strategy that raises (a bug in the retry machinery itself), ``SPIN_LIMIT`` times."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, retry_state: RetryCallState) -> float:
        self.calls += 1
        if self.calls <= SPIN_LIMIT:
            raise RuntimeError("wait strategy failed")
        return 0.01


class BrokenBackoff(wsclient.Backoff):
    """Backoff whose wait strategy raises."""

    def wait(self) -> Any:
        return self.__dict__.setdefault("_strategy", RaisingWait())


async def test_an_error_of_the_retry_loop_itself_stops_the_client_instead_of_spinning(refused_url: str) -> None:
    backoff = BrokenBackoff()
    client = wsclient.Client(refused_url, backoff=backoff, heartbeat=None)
    await client.start()
    try:
        with pytest.raises(RuntimeError, match="wait strategy failed"):
            async with asyncio.timeout(5):
                await client.wait_closed()
    finally:
        await client.close()
    strategy = backoff.wait()
    assert isinstance(strategy, RaisingWait)
    assert strategy.calls == 1
    assert client.stats.connect_attempts == 1
