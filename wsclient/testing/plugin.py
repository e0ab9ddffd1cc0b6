"""wsclient's pytest plugin: ``flaky_server`` and ``fault_proxy`` fixtures for testing your own bot.

Installed with wsclient (entry point ``pytest11``), so nothing needs to be
imported or listed in ``conftest.py``. The fixtures are declared with
``pytest_asyncio.fixture``, so they work in pytest-asyncio's strict mode as
well as in auto mode; without pytest-asyncio they fail with a message that
says what to install instead of "fixture not found".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from .fault_proxy import FaultProxy
from .flaky_server import FlakyServer

__all__ = ["fault_proxy", "flaky_server"]


def _needs_pytest_asyncio(function: Callable[..., Any]) -> Any:
    """Stand in for an async fixture when pytest-asyncio is missing: fail, naming the fix."""
    name = function.__name__

    def unavailable() -> None:
        pytest.fail(
            f"the {name} fixture runs on an event loop: install pytest-asyncio"
            " (pip install 'wsclient-resilient[testing]')",
            pytrace=False,
        )

    unavailable.__doc__ = function.__doc__
    return pytest.fixture(unavailable, name=name)


try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:
    _async_fixture = _needs_pytest_asyncio  # type: ignore[assignment]


@_async_fixture
async def flaky_server() -> AsyncIterator[FlakyServer]:
    """A running echo ``FlakyServer`` on 127.0.0.1; script its faults from the test."""
    async with FlakyServer("echo") as server:
        yield server


@_async_fixture
async def fault_proxy(flaky_server: FlakyServer) -> AsyncIterator[FaultProxy]:
    """A ``FaultProxy`` in front of ``flaky_server``: connect the client to ``fault_proxy.url``."""
    async with FaultProxy(flaky_server.port) as proxy:
        yield proxy
