"""wsclient's pytest plugin: ``flaky_server`` and ``fault_proxy`` fixtures for testing your own bot.

Installed with wsclient (entry point ``pytest11``) and active in any project
that has pytest-asyncio; the fixtures are declared with
``pytest_asyncio.fixture``, so they work in its strict mode as well as auto.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .flaky_server import FlakyServer
from .proxy import FaultProxy

__all__ = ["fault_proxy", "flaky_server"]

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - without pytest-asyncio there is no loop to run the fixtures on
    pass
else:

    @pytest_asyncio.fixture
    async def flaky_server() -> AsyncIterator[FlakyServer]:
        """A running echo ``FlakyServer`` on 127.0.0.1; script its faults from the test."""
        async with FlakyServer("echo") as server:
            yield server

    @pytest_asyncio.fixture
    async def fault_proxy(flaky_server: FlakyServer) -> AsyncIterator[FaultProxy]:
        """A ``FaultProxy`` in front of ``flaky_server``: connect the client to ``fault_proxy.url``."""
        async with FaultProxy(flaky_server.port) as proxy:
            yield proxy
