"""wsclient's pytest plugin: ``flaky_server`` and ``fault_proxy`` fixtures for testing your own bot.

Installed with wsclient (entry point ``pytest11``), so nothing needs to be
imported or listed in ``conftest.py``. The fixtures are declared with
``pytest_asyncio.fixture``, so they work in pytest-asyncio's strict mode as
well as in auto mode; without pytest-asyncio they fail with a message that
says what to install instead of "fixture not found".

They run on the event loop of the test that uses them, whatever its loop
scope (``@pytest.mark.asyncio(loop_scope="module")``, a class or module
mark, or ``asyncio_default_test_loop_scope``): a server started on another
loop than the test's would never answer, since that loop does not run while
the test does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal, TypeAlias

import pytest

from .fault_proxy import FaultProxy
from .flaky_server import FlakyServer

__all__ = ["fault_proxy", "flaky_server"]

LoopScope: TypeAlias = Literal["function", "class", "module", "package", "session"]
LOOP_SCOPES: tuple[LoopScope, ...] = ("function", "class", "module", "package", "session")
"""pytest-asyncio's loop scopes: each has its own version of the fixtures, run on that loop."""


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


def _versions() -> tuple[Callable[[], AsyncIterator[FlakyServer]], Callable[[FlakyServer], AsyncIterator[FaultProxy]]]:
    """New functions for the fixtures of one loop scope (pytest-asyncio marks the function with its scope)."""

    async def serve() -> AsyncIterator[FlakyServer]:
        async with FlakyServer("echo") as server:
            yield server

    async def proxy(flaky_server: FlakyServer) -> AsyncIterator[FaultProxy]:
        async with FaultProxy(flaky_server.port) as proxy:
            yield proxy

    return serve, proxy


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

else:
    # One version of each fixture per loop scope, function-scoped all the same (a fresh server per test).
    for _scope in LOOP_SCOPES:
        _serve, _proxy = _versions()
        globals()[f"_wsclient_flaky_server_{_scope}"] = _async_fixture(
            _serve, loop_scope=_scope, name=f"_wsclient_flaky_server_{_scope}"
        )
        globals()[f"_wsclient_fault_proxy_{_scope}"] = _async_fixture(
            _proxy, loop_scope=_scope, name=f"_wsclient_fault_proxy_{_scope}"
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
