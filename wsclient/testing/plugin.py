"""wsclient's pytest plugin: fixtures for testing your own bot against real faults.

Installed with wsclient (entry point ``pytest11``), so nothing needs to be
imported or listed in ``conftest.py``:

- ``flaky_server``: a running echo :class:`~wsclient.testing.FlakyServer`;
- ``fault_proxy``: a :class:`~wsclient.testing.FaultProxy` in front of it;
- ``flaky_server_factory``: an async function that starts a ``FlakyServer``
  with your own ``handler`` (or any other argument); the fixture stops every
  server it started when the test ends.

The fixtures are declared with ``pytest_asyncio.fixture``, so they work in
pytest-asyncio's strict mode as well as in auto mode; without pytest-asyncio
they fail with a message that says what to install instead of "fixture not
found". When a project leaves pytest-asyncio's
``asyncio_default_fixture_loop_scope`` unset, the plugin sets it to
``"function"`` (the value pytest-asyncio recommends, and its future default),
so its deprecation warning does not appear; a value set in the project's
configuration or with ``-o`` is left alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from .fault_proxy import FaultProxy
from .flaky_server import FlakyServer, FlakyServerFactory, Handler, Mode

__all__ = ["fault_proxy", "flaky_server", "flaky_server_factory"]

_LOOP_SCOPE = "asyncio_default_fixture_loop_scope"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give pytest-asyncio's fixture loop scope its recommended value when the project left it unset."""
    try:
        scope = config.getini(_LOOP_SCOPE)
    except ValueError:  # pytest-asyncio is not installed, or too old to have the option
        return
    if not scope:
        # pytest has no public setter for a configuration value; getini() reads this cache first.
        config._inicache[_LOOP_SCOPE] = "function"


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


@_async_fixture
async def flaky_server_factory() -> AsyncIterator[FlakyServerFactory]:
    """An async function that starts a ``FlakyServer`` with your ``handler``; each is stopped after the test.

    ``server = await flaky_server_factory(handler=my_handler)`` takes
    ``FlakyServer``'s arguments and returns it running.
    """
    servers: list[FlakyServer] = []

    async def start(
        mode: Mode = "echo",
        *,
        handler: Handler | None = None,
        stream_interval: float = 0.01,
        subprotocols: list[str] | None = None,
        **options: Any,
    ) -> FlakyServer:
        server = FlakyServer(
            mode, handler=handler, stream_interval=stream_interval, subprotocols=subprotocols, **options
        )
        servers.append(server)
        await server.start()
        return server

    try:
        yield start
    finally:
        for server in reversed(servers):
            await server.stop()
