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
found".

They run on the event loop of the test that uses them, whatever its loop
scope (``@pytest.mark.asyncio(loop_scope="module")``, a class or module
mark, or ``asyncio_default_test_loop_scope``): a server started on another
loop than the test's would never answer, since that loop does not run while
the test does.

When a project leaves pytest-asyncio's ``asyncio_default_fixture_loop_scope``
unset, the plugin sets it to ``"function"`` (the value pytest-asyncio
recommends, and its future default), so its deprecation warning does not
appear; a value set in the project's configuration or with ``-o`` is left alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeAlias

import pytest

from .fault_proxy import FaultProxy
from .flaky_server import FlakyServer, FlakyServerFactory, Handler, Mode

__all__ = ["fault_proxy", "flaky_server", "flaky_server_factory"]

LoopScope: TypeAlias = Literal["function", "class", "module", "package", "session"]
LOOP_SCOPES: tuple[LoopScope, ...] = ("function", "class", "module", "package", "session")
"""pytest-asyncio's loop scopes: each has its own version of the fixtures, run on that loop."""

_FIXTURE_LOOP_SCOPE = "asyncio_default_fixture_loop_scope"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Give pytest-asyncio's fixture loop scope its recommended value when the project left it unset."""
    try:
        scope = config.getini(_FIXTURE_LOOP_SCOPE)
    except ValueError:  # pytest-asyncio is not installed, or too old to have the option
        return
    if not scope:
        # pytest has no public setter for a configuration value; getini() reads this cache first.
        config._inicache[_FIXTURE_LOOP_SCOPE] = "function"


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


def _loop_scope(request: pytest.FixtureRequest) -> str:
    """The loop scope of the requesting test, as pytest-asyncio decides it: its closest mark, else the default."""
    marker = request.node.get_closest_marker("asyncio")
    scope = None if marker is None else marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    if scope is None:
        try:
            scope = request.config.getini("asyncio_default_test_loop_scope")
        except ValueError:  # a pytest-asyncio older than the option: function scope
            scope = None
    return scope if scope in LOOP_SCOPES else "function"


def _versions() -> tuple[
    Callable[[], AsyncIterator[FlakyServer]],
    Callable[[FlakyServer], AsyncIterator[FaultProxy]],
    Callable[[], AsyncIterator[FlakyServerFactory]],
]:
    """New functions for the fixtures of one loop scope (pytest-asyncio marks the function with its scope)."""

    async def serve() -> AsyncIterator[FlakyServer]:
        async with FlakyServer("echo") as server:
            yield server

    async def proxy(flaky_server: FlakyServer) -> AsyncIterator[FaultProxy]:
        async with FaultProxy(flaky_server.port) as proxy:
            yield proxy

    async def factory() -> AsyncIterator[FlakyServerFactory]:
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

    return serve, proxy, factory


try:
    from pytest_asyncio import fixture as _async_fixture
except ImportError:

    @_needs_pytest_asyncio
    async def flaky_server() -> AsyncIterator[FlakyServer]:
        """A running echo ``FlakyServer`` on 127.0.0.1; script its faults from the test."""
        yield  # type: ignore[misc]  # pragma: no cover - never called

    @_needs_pytest_asyncio
    async def fault_proxy() -> AsyncIterator[FaultProxy]:
        """A ``FaultProxy`` in front of ``flaky_server``: connect the client to ``fault_proxy.url``."""
        yield  # type: ignore[misc]  # pragma: no cover - never called

    @_needs_pytest_asyncio
    async def flaky_server_factory() -> AsyncIterator[FlakyServerFactory]:
        """An async function that starts a ``FlakyServer`` with your ``handler``; each is stopped after the test."""
        yield  # type: ignore[misc]  # pragma: no cover - never called

else:
    # One version of each fixture per loop scope, function-scoped all the same (a fresh server per test).
    for _scope in LOOP_SCOPES:
        _serve, _proxy, _factory = _versions()
        globals()[f"_wsclient_flaky_server_{_scope}"] = _async_fixture(
            _serve, loop_scope=_scope, name=f"_wsclient_flaky_server_{_scope}"
        )
        globals()[f"_wsclient_fault_proxy_{_scope}"] = _async_fixture(
            _proxy, loop_scope=_scope, name=f"_wsclient_fault_proxy_{_scope}"
        )
        globals()[f"_wsclient_flaky_server_factory_{_scope}"] = _async_fixture(
            _factory, loop_scope=_scope, name=f"_wsclient_flaky_server_factory_{_scope}"
        )

    @pytest.fixture
    def flaky_server(request: pytest.FixtureRequest) -> FlakyServer:
        """A running echo ``FlakyServer`` on 127.0.0.1; script its faults from the test."""
        server: FlakyServer = request.getfixturevalue(f"_wsclient_flaky_server_{_loop_scope(request)}")
        return server

    @pytest.fixture
    def fault_proxy(request: pytest.FixtureRequest, flaky_server: FlakyServer) -> FaultProxy:
        """A ``FaultProxy`` in front of ``flaky_server``: connect the client to ``fault_proxy.url``."""
        proxy: FaultProxy = request.getfixturevalue(f"_wsclient_fault_proxy_{_loop_scope(request)}")
        return proxy

    @pytest.fixture
    def flaky_server_factory(request: pytest.FixtureRequest) -> FlakyServerFactory:
        """An async function that starts a ``FlakyServer`` with your ``handler``; each is stopped after the test.

        ``server = await flaky_server_factory(handler=my_handler)`` takes
        ``FlakyServer``'s arguments and returns it running.
        """
        factory: FlakyServerFactory = request.getfixturevalue(f"_wsclient_flaky_server_factory_{_loop_scope(request)}")
        return factory
