"""The pytest plugin, used the way a user's project uses it: a separate pytest run on an example file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).parent.parent / "examples" / "test_my_bot.py"


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_fixtures_work_in_both_asyncio_modes(pytester: pytest.Pytester, mode: str) -> None:
    shutil.copy(EXAMPLE, pytester.path / "test_my_bot.py")
    result = pytester.runpytest_subprocess(
        f"--asyncio-mode={mode}",
        "-p",
        "no:cacheprovider",
        "-W",
        "error",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(passed=3)


def test_fixtures_are_listed(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", "-o", "asyncio_default_fixture_loop_scope=function")
    result.stdout.fnmatch_lines(["flaky_server -- *pytest_plugin.py*", "fault_proxy -- *pytest_plugin.py*"])
