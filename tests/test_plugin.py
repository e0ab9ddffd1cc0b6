"""The pytest plugin, used the way a user's project uses it: a separate pytest run on an example file."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).parent.parent / "examples" / "test_my_bot.py"
PLAIN = ("-p", "no:cacheprovider", "-W", "error")
"""pytest-asyncio's default settings: no loop scope configured, and any warning fails the run."""


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_fixtures_work_in_both_asyncio_modes(pytester: pytest.Pytester, mode: str) -> None:
    shutil.copy(EXAMPLE, pytester.path / "test_my_bot.py")
    result = pytester.runpytest_subprocess(f"--asyncio-mode={mode}", *PLAIN)
    result.assert_outcomes(passed=4)


@pytest.mark.parametrize(
    ("option", "scope"), [((), "function"), (("-o", "asyncio_default_fixture_loop_scope=module"), "module")]
)
def test_the_loop_scope_a_project_left_unset_is_function_and_a_set_one_is_kept(
    pytester: pytest.Pytester, option: tuple[str, ...], scope: str
) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess(*PLAIN, *option)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*asyncio_default_fixture_loop_scope={scope}*"])
    result.stdout.no_fnmatch_line("*PytestDeprecationWarning*")


def test_the_factory_starts_servers_with_a_handler_and_stops_them_after_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            import wsclient
            from wsclient.testing import FlakyServer, FlakyServerFactory

            started = []

            @pytest.mark.asyncio
            async def test_handler(flaky_server_factory: FlakyServerFactory) -> None:
                async def shout(connection):
                    async for message in connection:
                        server.record(message)
                        await connection.send(message.upper())

                server = await flaky_server_factory(handler=shout)
                silent = await flaky_server_factory("silent")
                started.extend([server, silent])
                async with wsclient.Client(server.url, close_timeout=0.5) as client:
                    await client.send("hello")
                    assert await client.recv() == "HELLO"
                await server.wait_for_received(1)
                assert server.received == ["hello"] and silent.running

            def test_after() -> None:
                assert [server.running for server in started] == [False, False]
            """
        )
    )
    pytester.runpytest_subprocess("--asyncio-mode=strict", *PLAIN).assert_outcomes(passed=2)


def test_fixtures_are_listed_from_the_installed_plugin(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--fixtures", *PLAIN)
    # Each on its own: pytest lists them in the order of their "path:line" as text.
    result.stdout.fnmatch_lines(["flaky_server -- *wsclient?testing?plugin.py*"])
    result.stdout.fnmatch_lines(["fault_proxy -- *wsclient?testing?plugin.py*"])
    result.stdout.fnmatch_lines(["flaky_server_factory -- *wsclient?testing?plugin.py*"])


def test_a_project_fixture_named_server_lives_beside_the_plugin(pytester: pytest.Pytester) -> None:
    # Our own suite has ``server`` and ``stream_server`` fixtures; a user's may too.
    pytester.makeconftest(
        """
        import pytest_asyncio
        from wsclient.testing import FlakyServer

        @pytest_asyncio.fixture
        async def server():
            async with FlakyServer("silent") as flaky:
                yield flaky
        """
    )
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_both(server, flaky_server, fault_proxy):
                assert server.mode == "silent" and flaky_server.mode == "echo"
                assert len({server.port, flaky_server.port, fault_proxy.port}) == 3
            """
        )
    )
    pytester.runpytest_subprocess("--asyncio-mode=strict", *PLAIN).assert_outcomes(passed=1)


def test_without_pytest_asyncio_the_fixtures_say_what_to_install(pytester: pytest.Pytester) -> None:
    # A project without pytest-asyncio: its import fails and its plugin is not loaded.
    blocked = pytester.mkpydir("pytest_asyncio")
    (blocked / "__init__.py").write_text("raise ImportError('pytest-asyncio is not installed')\n")
    pytester.makepyfile("def test_bot(flaky_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:asyncio", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    hint = "install pytest-asyncio (pip install 'wsclient-resilient[[]testing]')"  # [[] is fnmatch's "["
    result.stdout.fnmatch_lines([f"*the flaky_server fixture runs on an event loop: {hint}"])


def test_the_fixtures_run_on_the_loop_of_the_test_whatever_its_scope(pytester: pytest.Pytester) -> None:
    # A fixture on another loop than the test's would leave its server on a loop that is not running: a hang.
    pytester.makepyfile(
        textwrap.dedent(
            """
            import asyncio
            import pytest
            import wsclient

            async def round_trip(flaky_server, fault_proxy):
                assert asyncio.get_running_loop() is flaky_server.loop_of_test
                async with wsclient.Client(fault_proxy.url, heartbeat=None, open_timeout=2) as client:
                    await client.send("hi")
                    assert await client.recv() == "hi"

            @pytest.mark.asyncio(loop_scope="module")
            async def test_module_loop(flaky_server, fault_proxy):
                flaky_server.loop_of_test = asyncio.get_running_loop()
                await round_trip(flaky_server, fault_proxy)

            @pytest.mark.asyncio(loop_scope="module")
            async def test_module_loop_again(flaky_server, fault_proxy):
                flaky_server.loop_of_test = asyncio.get_running_loop()
                await round_trip(flaky_server, fault_proxy)

            @pytest.mark.asyncio(loop_scope="class")
            class TestInAClass:
                async def test_class_loop(self, flaky_server, fault_proxy):
                    flaky_server.loop_of_test = asyncio.get_running_loop()
                    await round_trip(flaky_server, fault_proxy)

            @pytest.mark.asyncio
            async def test_function_loop(flaky_server, fault_proxy):
                flaky_server.loop_of_test = asyncio.get_running_loop()
                await round_trip(flaky_server, fault_proxy)

            @pytest.mark.asyncio(loop_scope="session")
            async def test_session_loop(flaky_server):
                assert flaky_server.port
            """
        )
    )
    result = pytester.runpytest_subprocess("--asyncio-mode=strict", "--timeout=30", *PLAIN, timeout=120)
    result.assert_outcomes(passed=5)


def test_the_test_loop_scope_default_of_the_configuration_is_followed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            import pytest
            import wsclient

            @pytest.mark.asyncio
            async def test_default_loop(flaky_server):
                async with wsclient.Client(flaky_server.url, heartbeat=None, open_timeout=2) as client:
                    await client.send("hi")
                    assert await client.recv() == "hi"
            """
        )
    )
    result = pytester.runpytest_subprocess(
        "--asyncio-mode=auto", "--timeout=30", "-o", "asyncio_default_test_loop_scope=module", *PLAIN, timeout=120
    )
    result.assert_outcomes(passed=1)
