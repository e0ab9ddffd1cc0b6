"""The harness in conftest.py still fails a test for what only the garbage collector finds."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent

# Each leak sits in a reference cycle, so only a collection finds it, after the objects made at import were frozen.
LEAKS = """
import asyncio
import socket


class Cycle:
    def __init__(self, payload: object) -> None:
        self.payload = payload
        self.itself = self


async def test_an_exception_never_retrieved() -> None:
    future = asyncio.get_running_loop().create_future()
    future.set_exception(RuntimeError("lost"))
    Cycle(future)


async def test_a_pending_task_destroyed() -> None:
    loop = asyncio.get_running_loop()
    waiting = loop.create_future()
    task = loop.create_task(asyncio.wait_for(waiting, None))
    await asyncio.sleep(0)
    Cycle((task, waiting))
    waiting.cycle = Cycle(waiting)
    del task, waiting


async def test_a_socket_never_closed() -> None:
    Cycle(socket.socket())


async def test_a_clean_one() -> None:
    await asyncio.sleep(0)
"""


def test_leaks_found_by_the_collector_fail_their_test(pytester: pytest.Pytester) -> None:
    for name in ("conftest.py", "helpers.py"):
        shutil.copy(HERE / name, pytester.path / name)
    pytester.makepyfile(test_leaks=textwrap.dedent(LEAKS))
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=4, errors=3)
    result.stdout.fnmatch_lines_random(
        [
            "*the event loop reported unhandled errors: *Future exception was never retrieved*",
            "*the event loop reported unhandled errors: *Task was destroyed but it is pending!*",
            "*ResourceWarning: unclosed <socket.socket*",
        ]
    )
