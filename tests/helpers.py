"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import wsclient

MS = 0.001
"""One millisecond: every interval in the tests is a multiple of it, so timing scales in one place."""


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` holds, checking every millisecond; ``TimeoutError`` after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - counters have no event; the poll is bounded
            await asyncio.sleep(MS)


def fast(**overrides: Any) -> dict[str, Any]:
    """Client arguments with millisecond backoff, for tests that reconnect."""
    settings: dict[str, Any] = {
        "backoff": wsclient.Backoff(initial=MS, maximum=10 * MS, overload_delay=MS, stable_after=60.0),
        "heartbeat": None,
        "open_timeout": 2.0,
        "close_timeout": 1.0,
    }
    settings.update(overrides)
    return settings


async def refused(port: int) -> bool:
    """Whether a TCP connection to ``port`` on loopback is refused (nothing listens)."""
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return False
