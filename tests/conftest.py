"""Test harness: every test runs on a fresh loop that must end clean.

A test fails when it leaves a task running, when the loop reports an error
nobody handled ("Task was destroyed but it is pending", "exception was never
retrieved"), or when a warning is raised (``filterwarnings = error``, which
also turns ResourceWarning and un-awaited coroutines into failures).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import MS

import wsclient
from wsclient.testing import FlakyServer


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wsclient soak")
    group.addoption(
        "--soak-seconds",
        type=float,
        default=45.0,
        help="how long the chaos soak runs, shared by the two transports (default 45)",
    )
    group.addoption(
        "--soak-seed",
        type=int,
        default=None,
        help="seed of the soak's faults (default: a fresh one per run, printed at the start and in the summary)",
    )


BOTH_TRANSPORTS = {"test_client_policy.py", "test_exit_paths.py", "test_soak.py", "test_transports.py"}
"""Test files whose every test runs on each transport: the policy, the exit paths and the chaos soak."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "websockets_only(reason): the test is about the websockets transport by nature")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.path.name in BOTH_TRANSPORTS and "transport" in metafunc.fixturenames:
        metafunc.parametrize("transport", ["websockets", "picows"], indirect=True)


@pytest.fixture(autouse=True)
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The transport of every ``Client`` the test makes: both in turn in ``BOTH_TRANSPORTS``, else websockets.

    A test that is about websockets by nature marks itself ``websockets_only`` with the reason.
    """
    name: str = getattr(request, "param", "websockets")
    if name != "websockets":
        marker = request.node.get_closest_marker("websockets_only")
        if marker is not None:
            pytest.skip(f"websockets only: {marker.args[0]}")
        defaults = wsclient.Client.__init__.__kwdefaults__
        assert defaults is not None
        monkeypatch.setitem(defaults, "transport", name)
    return name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give the soak a time limit that grows with ``--soak-seconds``, so a long run is not cut short."""
    limit = config.getoption("--soak-seconds") + 60
    for item in items:
        if item.path.name == "test_soak.py" and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(limit))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move what the imports and the collection made out of the collector's sight, once.

    ``clean_loop`` collects garbage after every test; without this, each of those
    collections walks every module, class and parametrized case again (about 50 ms).
    Objects the tests make are not frozen, so their cycles are collected and
    reported as before.
    """
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
async def clean_loop() -> AsyncIterator[None]:
    """Fail the test if it leaks a task or leaves an error the loop had to report."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    before = asyncio.all_tasks()
    yield
    # Let callbacks of just-finished tasks run, then collect what was dropped.
    for _ in range(3):
        await asyncio.sleep(0)
    gc.collect()
    leaked = [t for t in asyncio.all_tasks() - before if t is not asyncio.current_task() and not t.done()]
    loop.set_exception_handler(previous)
    for task in leaked:
        task.cancel()
    if leaked:
        await asyncio.wait(leaked, timeout=1)
    assert not leaked, f"tasks leaked by the test: {leaked}"
    assert not reported, f"the event loop reported unhandled errors: {[c.get('message') for c in reported]}"


@pytest.fixture
async def server() -> AsyncIterator[FlakyServer]:
    """An echo server on loopback."""
    async with FlakyServer("echo") as flaky:
        yield flaky


@pytest.fixture
async def stream_server() -> AsyncIterator[FlakyServer]:
    """A server streaming ``{"seq": n}`` every 5 ms."""
    async with FlakyServer("stream", stream_interval=5 * MS) as flaky:
        yield flaky
