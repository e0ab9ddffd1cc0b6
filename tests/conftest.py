"""Test harness: every test runs on a fresh loop that must end clean.

A test fails when it leaves a task running, when the loop reports an error
nobody handled ("Task was destroyed but it is pending", "exception was never
retrieved"), or when a warning is raised (``filterwarnings = error``, which
also turns ResourceWarning and un-awaited coroutines into failures).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import structlog
from helpers import MS
from xdist.scheduler import LoadScopeScheduling

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


BOTH_TRANSPORTS = {
    "test_recovery.py",
    "test_client_policy.py",
    "test_exit_paths.py",
    "test_proxies.py",
    "test_soak.py",
    "test_transports.py",
}
"""Test files whose every test runs on each transport: the policy, the exit paths and the chaos soak."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "websockets_only(reason): the test is about the websockets transport by nature")
    # A shell starts a background job with SIGINT ignored, and a child inherits that: the tests that
    # interrupt a program (the demo, the sync client, the examples) would see it run on. A handler of
    # our own is reset to the default in every child, so they get Ctrl+C as from a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


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
    _plugins_before_the_tests.update(id(plugin) for plugin in session.config.pluginmanager.get_plugins())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Any:
    """Run the soak with nothing frozen, so that the collector's automatic full collections keep their rhythm.

    Python starts a full collection when the objects that survived the younger
    generations reach a quarter of the old generation; frozen objects do not
    count, so with them frozen those collections come far more often, and the
    soak's timing is not the one its bounds were set with.
    """
    if item.path.name != "test_soak.py":
        return (yield)
    gc.unfreeze()
    try:
        return (yield)
    finally:
        gc.collect()
        gc.freeze()


ONE_WORKER = {"test_soak.py", "test_interop.py"}
"""Test files that run whole on one worker under ``-n``.

The soak's two runs take turns, as without ``-n``; each interop server process
starts once, and the interop matrix is filled in one place.
"""

LAST = "test_soak.py"
"""The file handed out last under ``-n``: the soak then shares the machine only with the last few tests.

Its fault and reconnect floors assume most of a core; beside a busy worker it fired close to the floor.
"""


class _Scheduling(LoadScopeScheduling):
    """xdist's ``load`` scheduling (each test to the next free worker), but each file of ``ONE_WORKER`` whole.

    xdist hands out the largest units first, so the interop tests start at once; the soak waits for the rest.
    """

    def _split_scope(self, nodeid: str) -> str:
        path = nodeid.split("::", 1)[0]
        return path if path.rpartition("/")[2] in ONE_WORKER else nodeid

    def _assign_work_unit(self, node: Any) -> None:
        first = next(iter(self.workqueue))
        if len(self.workqueue) > 1 and first.rpartition("/")[2] == LAST:
            self.workqueue.move_to_end(first)
        super()._assign_work_unit(node)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return _Scheduling(config, log) if config.getvalue("dist") == "load" else None


# Summaries across pytest-xdist workers. A test may register a plugin whose
# ``pytest_terminal_summary`` reports what it saw (the soak's summary line, the
# interop matrix). Under ``-n`` it is registered in a worker, where no terminal
# summary is written: after each test the worker runs it against a recorder and
# sends what it wrote in the report, and the controller writes it in its own
# summary (the last version of each plugin's, in the order they first came).

_plugins_before_the_tests: set[int] = set()
_relayed_summaries: dict[str, list[tuple[str, ...]]] = {}


class _SummaryRecorder:
    """Stands in for the terminal reporter on a worker: keeps the calls a summary makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def write_sep(self, sep: str, title: str = "") -> None:
        self.calls.append(("write_sep", sep, title))

    def write_line(self, line: str) -> None:
        self.calls.append(("write_line", line))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.when == "teardown" and hasattr(item.config, "workerinput"):
        for name, plugin in item.config.pluginmanager.list_name_plugin():
            if id(plugin) not in _plugins_before_the_tests and hasattr(plugin, "pytest_terminal_summary"):
                recorder = _SummaryRecorder()
                plugin.pytest_terminal_summary(terminalreporter=recorder)
                report.user_properties.append(("terminal_summary", (name, recorder.calls)))
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == "terminal_summary":
            name, calls = value
            _relayed_summaries[name] = calls


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for calls in _relayed_summaries.values():
        for method, *args in calls:
            getattr(terminalreporter, method)(*args)


@pytest.fixture(autouse=True)
def structlog_as_found() -> Iterator[None]:
    """Undo what structlog's ``capture_logs()`` leaves: structlog marked configured, so later logs go to stdout."""
    configured = structlog.is_configured()
    yield
    if not configured and structlog.is_configured():
        structlog.reset_defaults()


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
