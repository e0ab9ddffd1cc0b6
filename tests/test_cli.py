"""The ``wsclient`` command, run as a subprocess against real servers on loopback."""

from __future__ import annotations

import asyncio
import io
import json
import shlex
import signal
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
import structlog
import trustme
from helpers import fast, until
from proxy_servers import HttpConnectProxy

import wsclient
from wsclient.cli import EXIT_FATAL, EXIT_GAVE_UP, EXIT_OK, EXIT_OUTPUT, EXIT_PIPE, EXIT_USAGE
from wsclient.cli.listen import ListenOptions, UsageError, listen
from wsclient.cli.status_line import StatusLine, configure_logging, describe_client
from wsclient.testing import FaultProxy, FlakyServer

FAST = ["--backoff-initial", "0.01", "--backoff-max", "0.05", "--open-timeout", "2"]


async def run_cli(*args: str, timeout: float = 20.0) -> tuple[int, str, str]:
    """Run ``python -m wsclient ARGS`` to its end; return its exit code, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsclient", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


class Listener:
    """A running ``wsclient listen`` whose stdout lines are collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.lines.append(line.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_for_lines(self, count: int, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.lines) < count:
                self._changed.clear()
                if self._reader.done():
                    raise AssertionError(f"listen ended early after {len(self.lines)} lines")
                await self._changed.wait()

    async def stop(self, signum: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, str]:
        """Send ``signum``; return the exit code and stderr."""
        self.process.send_signal(signum)
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            err = await self.process.stderr.read()
            await self._reader
            code = await self.process.wait()
        return code, err.decode()


@pytest.fixture
async def listener_factory() -> AsyncIterator[list[Listener]]:
    listeners: list[Listener] = []
    yield listeners
    for listener in listeners:
        if listener.process.returncode is None:
            listener.process.kill()
            await listener.process.communicate()
        await asyncio.wait({listener._reader})


async def start_listen(listeners: list[Listener], *args: str) -> Listener:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsclient",
        "listen",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    listener = Listener(process)
    listeners.append(listener)
    return listener


async def test_listen_survives_drops_records_gaps_and_exits_0_on_sigterm(
    tmp_path: Path, listener_factory: list[Listener]
) -> None:
    out = tmp_path / "feed.jsonl"
    subscribe = json.dumps({"op": "subscribe", "channel": "ticks"})
    async with FlakyServer("stream", stream_interval=0.005) as server:
        listener = await start_listen(
            listener_factory, server.url, "--jsonl", "--out", str(out), "--send", subscribe, *FAST
        )
        await server.wait_for_received(1)
        await listener.wait_for_lines(5)
        server.drop()  # abort: no close frame
        await server.wait_for_received(2)  # subscribed again on the fresh session
        await listener.wait_for_lines(len(listener.lines) + 5)
        await server.stop()  # down: connections refused for a while
        await server.start()
        await server.wait_for_received(3)
        await listener.wait_for_lines(len(listener.lines) + 5)
        code, err = await listener.stop(signal.SIGTERM)
    assert code == EXIT_OK, err
    assert server.received == [subscribe] * 3
    assert "stopped" in err
    assert "code=1000" in err
    assert "closed_by=client" in err

    printed = [json.loads(line) for line in listener.lines]
    recorded = [json.loads(line) for line in out.read_text().splitlines()]
    assert printed == recorded
    kinds = [r["type"] for r in recorded]
    gaps = [r for r in recorded if r["type"] == "gap"]
    assert len(gaps) == 2
    assert all(g["cause"] == "connection_lost" and g["start"] <= g["end"] and g["attempts"] >= 1 for g in gaps)
    # Each gap record sits between the last message of one session and the first of the next.
    sessions = []
    for index, record in enumerate(recorded):
        if record["type"] == "gap":
            before, after = recorded[index - 1], recorded[index + 1]
            assert before["type"] == after["type"] == "message"
            assert before["session"] != after["session"]
            assert before["time"] <= record["end"] <= after["time"]
        elif not sessions or sessions[-1] != record["session"]:
            sessions.append(record["session"])
    assert len(sessions) == 3
    assert kinds.count("message") == len(recorded) - 2 >= 12
    # The data itself: the server's sequence numbers, in order.
    seqs = [json.loads(r["data"])["seq"] for r in recorded if r["type"] == "message"]
    assert seqs == sorted(seqs)


async def test_listen_prints_raw_messages_and_stops_at_count_and_on_sigint(
    listener_factory: list[Listener],
) -> None:
    async with FlakyServer("stream", stream_interval=0.005) as server:
        code, out, err = await run_cli("listen", server.url, "--count", "3", *FAST)
        assert code == EXIT_OK, err
        assert [json.loads(line)["seq"] for line in out.splitlines()] == [0, 1, 2]

        listener = await start_listen(listener_factory, server.url, *FAST)
        await listener.wait_for_lines(2)
        code, err = await listener.stop(signal.SIGINT)
    assert code == EXIT_OK, err


async def test_listen_ends_with_0_when_the_server_closes_with_1000(listener_factory: list[Listener]) -> None:
    async with FlakyServer("echo") as server:
        listener = await start_listen(listener_factory, server.url, "--send", "hello", *FAST)
        await listener.wait_for_lines(1)
        await server.close_all(1000, "bye")
        async with asyncio.timeout(10):
            code = await listener.process.wait()
        await listener._reader
    assert listener.lines == ["hello"]
    assert code == EXIT_OK


async def test_listen_gives_up_with_exit_1() -> None:
    server = FlakyServer("echo")
    await server.start()
    await server.stop()  # the port now refuses connections
    code, _, err = await run_cli("listen", server.url, "--max-attempts", "2", *FAST)
    assert code == EXIT_GAVE_UP
    assert "gave up after 2 attempt(s)" in err
    assert "ConnectionRefusedError" in err


async def test_listen_connects_through_a_proxy_and_none_bypasses_the_environment(
    listener_factory: list[Listener],
) -> None:
    async with FlakyServer("echo") as server, HttpConnectProxy(credentials=("u", "pw")) as relay:
        listener = await start_listen(
            listener_factory,
            server.url,
            "--send",
            "hello",
            "--count",
            "1",
            "--proxy",
            relay.url(userinfo="u:pw"),
            *FAST,
        )
        async with asyncio.timeout(10):
            code = await listener.process.wait()
        await listener._reader
        assert (code, listener.lines, relay.tunnels) == (EXIT_OK, ["hello"], 1)
        code, out, _ = await run_cli("listen", server.url, "--send", "x", "--count", "1", "--proxy", "none", *FAST)
        assert (code, out, relay.tunnels) == (EXIT_OK, "x\n", 1)


LISTEN_USAGE = "usage: wsclient listen "


@pytest.mark.parametrize(
    ("args", "message", "usage"),
    [
        ([], "the following arguments are required", "usage: wsclient [-h]"),
        (["listen"], "the following arguments are required: url", LISTEN_USAGE),
        (["listen", "http://127.0.0.1:1"], "url must start with ws:// or wss://", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--header", "no-colon"], "expected NAME:VALUE", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--ping-interval", "0"], "must be > 0", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--max-attempts", "x"], "not an integer", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--backoff-initial", "5", "--backoff-max", "1"], "--backoff-max", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--ca", "/nonexistent/ca.pem"], "no such file", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--out", "/nonexistent/dir/out.jsonl"], "--out", LISTEN_USAGE),
        (
            ["listen", "ws://127.0.0.1:1", "--ping-interval", "inf"],
            "argument --ping-interval: must be > 0",
            LISTEN_USAGE,
        ),
        (
            ["listen", "ws://127.0.0.1:1", "--no-heartbeat", "--ping-interval", "5"],
            "argument --ping-interval: not allowed with --no-heartbeat",
            LISTEN_USAGE,
        ),
        (
            ["listen", "ws://127.0.0.1:1", "--ping-timeout", "5", "--no-heartbeat"],
            "argument --ping-timeout: not allowed with --no-heartbeat",
            LISTEN_USAGE,
        ),
        (["listen", "ws://127.0.0.1:1", "--max-size", "lots"], "argument --max-size: not a size", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--max-size", "0"], "argument --max-size: must be >= 1 byte", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--close-timeout", "-1"], "argument --close-timeout", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--out", "/nonexistent/dir/out.jsonl"], "argument --out", LISTEN_USAGE),
        (["listen", "ws://127.0.0.1:1", "--header", "Bad Name: x"], "argument --header", LISTEN_USAGE),
        (
            ["listen", "ws://127.0.0.1:1", "--proxy", "ftp://u:pw@p:21"],
            "argument --proxy: proxy URL scheme",
            LISTEN_USAGE,
        ),
        (["demo", "--fats"], "unrecognized arguments: --fats", "usage: wsclient [-h]"),
        (["frobnicate"], "invalid choice", "usage: wsclient [-h]"),
    ],
)
async def test_usage_errors_exit_2_naming_the_argument_under_the_commands_usage(
    args: list[str], message: str, usage: str
) -> None:
    code, _, err = await run_cli(*args)
    assert code == EXIT_USAGE
    assert message in err
    assert err.startswith(usage)


async def test_listen_help_shows_the_defaults() -> None:
    code, out, _ = await run_cli("listen", "--help")
    assert code == 0
    text = " ".join(out.split())  # argparse wraps lines
    for default in (
        "heartbeat every S seconds (default: 20.0)",
        "dead after S seconds silent (default: 10.0)",
        "first reconnect delay (default: 0.5)",
        "longest reconnect delay (default: 30.0)",
        "handshake timeout (default: 10.0)",
        "(default: never)",
    ):
        assert default in text


async def test_handshake_rejected_exits_3_naming_the_status() -> None:
    async with FlakyServer("echo") as server:
        server.reject_next(401)
        code, _, err = await run_cli("listen", server.url, "--header", "Authorization: Bearer s3cret", *FAST)
    assert code == EXIT_FATAL
    assert "fatal: server rejected the WebSocket handshake with HTTP 401" in err
    assert "s3cret" not in err
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"


async def test_wss_with_a_private_ca_needs_ca_and_exits_3_without_it(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    async with FlakyServer("stream", stream_interval=0.005, ssl=server_context) as server:
        code, _, err = await run_cli("listen", server.url, *FAST)
        assert code == EXIT_FATAL
        assert "certificate not trusted" in err
        code, out, err = await run_cli("listen", server.url, "--ca", str(ca_file), "--count", "2", *FAST)
    assert code == EXIT_OK, err
    assert len(out.splitlines()) == 2


async def test_help_lists_both_commands_and_the_exit_codes() -> None:
    code, out, _ = await run_cli("--help")
    assert code == EXIT_OK
    assert "listen" in out
    assert "demo" in out
    codes = [line.split()[0] for line in out.split("exit codes:\n")[1].splitlines()]
    assert codes == ["0", "1", "2", "3", "4", "130", "141", "143"]
    assert "2    usage error" in out
    assert "143  SIGTERM (demo)" in out
    for command in ("listen", "demo"):
        code, help_text, _ = await run_cli(command, "--help")
        assert code == EXIT_OK
        assert "exit codes:" in help_text
        assert "4    output failed" in help_text


async def test_wait_closed_returns_on_a_clean_close_and_raises_what_stopped_the_client(server: FlakyServer) -> None:
    received: list[wsclient.Data] = []
    client = wsclient.Client(server.url, on_message=received.append, **fast())
    async with client:
        await client.send("one")
        await server.wait_for_received(1)
        await server.close_all(1000)
        async with asyncio.timeout(5):
            await client.wait_closed()
    assert received == ["one"]

    server.reject_next(403)
    client = wsclient.Client(server.url, on_message=received.append, **fast())
    await client.start()
    with pytest.raises(wsclient.HandshakeRejected):
        await client.wait_closed()
    await client.close()


async def test_status_line_redraws_in_place_and_prints_log_events_above_itself() -> None:
    stream = io.StringIO()
    status = StatusLine(stream, lambda: "open | 3 msgs", interval=0.001)
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    try:
        configure_logging(stream, status=status)
        status.draw()
        structlog.get_logger("wsclient").info("connected", session_id="s1")
        task = asyncio.create_task(status.run())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.wait({task})
    finally:
        # configure() also marks structlog configured: the library would then log through it in later tests.
        if was_configured:
            structlog.configure(**saved)
        else:
            structlog.reset_defaults()
    text = stream.getvalue()
    first, event, last = text.split("\r\x1b[K")[1:4]
    assert first == "open | 3 msgs"
    assert event.endswith("\n")
    assert "connected" in event
    assert "session_id=s1" in event
    assert last == "open | 3 msgs"
    assert text.endswith("open | 3 msgs\n")  # the last status stays on its own line


async def test_describe_client_says_state_messages_reconnects_last_close_and_uptime() -> None:
    client = wsclient.Client("ws://127.0.0.1:1")
    client.stats.messages_in = 12
    client.stats.reconnects = 2
    client.stats.last_close_code = 1006
    assert describe_client(client, started=100.0, now=3761.0 + 100.0) == (
        "idle | 12 msgs | 2 reconnects | last close 1006 | up 1:02:41"
    )


async def test_listen_in_process_writes_messages_then_gaps_where_they_happened(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    stdout = io.StringIO()
    async with FlakyServer("stream", stream_interval=0.005) as server:
        options = ListenOptions(
            url=server.url,
            out=out,
            jsonl=True,
            count=20,
            heartbeat=None,
            backoff=wsclient.Backoff(initial=0.001, maximum=0.01),
        )
        listening = asyncio.create_task(listen(options, stdout=stdout))
        await until(lambda: stdout.getvalue().count("\n") >= 5)
        server.drop()
        async with asyncio.timeout(10):
            await listening
    recorded = [json.loads(line) for line in out.read_text().splitlines()]
    assert [json.loads(line) for line in stdout.getvalue().splitlines()] == recorded
    assert [r["type"] for r in recorded].count("message") == 20
    (gap,) = [r for r in recorded if r["type"] == "gap"]
    assert gap["cause"] == "connection_lost"
    assert gap["attempts"] >= 1


async def test_listen_refuses_a_bad_url_as_a_usage_error() -> None:
    with pytest.raises(UsageError, match="url must start with ws:// or wss://"):
        await listen(ListenOptions(url="http://127.0.0.1:1"))


# Output that cannot be written: a full disk, a closed descriptor, a reader that went away.


@pytest.fixture
def full_disk() -> Iterator[BinaryIO]:
    """``/dev/full``, opened for writing: every write fails with ENOSPC."""
    with open("/dev/full", "wb") as full:
        yield full


async def run_with(
    *args: str, stdout: Any = asyncio.subprocess.PIPE, stderr: Any = asyncio.subprocess.PIPE, timeout: float = 20.0
) -> tuple[int, str, str]:
    """Run ``python -m wsclient ARGS`` with the given stdout and stderr (a pipe, a file); return code, out, err."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsclient", *args, stdout=stdout, stderr=stderr
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, (out or b"").decode(), (err or b"").decode()


async def run_in_shell(script: str, *args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """Run ``python -m wsclient ARGS`` inside a bash ``script`` (``$W`` runs it, ``pipefail`` is on)."""
    wsclient_command = f"{shlex.quote(sys.executable)} -m wsclient"
    return await run_process(
        "bash", "-c", f"set -o pipefail; W='{wsclient_command}'; {script}", "bash", *args, timeout=timeout
    )


async def run_process(*command: str, timeout: float = 30.0) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_listen_stops_with_4_and_says_so_when_out_cannot_be_written() -> None:
    async with FlakyServer("stream", stream_interval=0.005) as server:
        code, out, err = await run_cli("listen", server.url, "--out", "/dev/full", *FAST)
    assert code == EXIT_OUTPUT, err
    assert "wsclient: --out /dev/full: cannot write: No space left on device" in err
    assert "Traceback" not in err
    assert "on_message_failed" not in err
    # The records the file did not get were printed: none is lost silently.
    seqs = [json.loads(line)["seq"] for line in out.splitlines()]
    assert seqs == list(range(len(seqs)))
    assert len(seqs) >= 1
    assert f"{len(seqs)} record(s) not written to it" in err


async def test_listen_stops_with_4_when_stdout_is_a_full_disk(full_disk: BinaryIO) -> None:
    async with FlakyServer("stream", stream_interval=0.005) as server:
        code, _, err = await run_with("listen", server.url, *FAST, stdout=full_disk)
    assert code == EXIT_OUTPUT, err
    assert "wsclient: stdout: cannot write: No space left on device" in err
    assert "Traceback" not in err
    assert "on_message_failed" not in err


async def test_listen_with_stdout_closed_stops_at_once_with_4() -> None:
    async with FlakyServer("stream", stream_interval=0.005) as server:
        code, _, err = await run_in_shell('$W "$@" >&-', "listen", server.url, *FAST)
    assert code == EXIT_OUTPUT, err
    assert "wsclient: stdout: cannot write: stdout is closed" in err
    assert "Traceback" not in err
    assert "on_message_failed" not in err
    assert server.accepted == 0  # it stopped before connecting


async def test_listen_ends_quietly_with_141_when_the_reader_of_stdout_goes_away() -> None:
    async with FlakyServer("stream", stream_interval=0.005) as server:
        code, out, err = await run_in_shell('$W "$@" | head -1', "listen", server.url, *FAST)
    assert json.loads(out)["seq"] == 0
    assert code == EXIT_PIPE, err
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    assert "wsclient: " not in err  # quiet: nothing to say about it


async def test_a_full_stderr_changes_neither_give_up_nor_signals(full_disk: BinaryIO) -> None:
    server = FlakyServer("echo")
    await server.start()
    await server.stop()  # refuses connections
    code, _, _ = await run_with("listen", server.url, "--max-attempts", "3", *FAST, stderr=full_disk, timeout=10)
    assert code == EXIT_GAVE_UP

    async with FlakyServer("stream", stream_interval=0.005) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wsclient",
            "listen",
            server.url,
            *FAST,
            stdout=asyncio.subprocess.PIPE,
            stderr=full_disk,
        )
        listener = Listener(process)
        try:
            await listener.wait_for_lines(3)
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                await listener._reader
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await asyncio.wait({listener._reader})
    assert code == EXIT_OK


async def test_demo_stops_with_4_when_stdout_is_a_full_disk(full_disk: BinaryIO) -> None:
    code, _, err = await run_with("demo", "--fast", stdout=full_disk, timeout=30)
    assert code == EXIT_OUTPUT, err
    assert "wsclient: stdout: cannot write: No space left on device" in err
    assert "Traceback" not in err
    assert "Exception ignored" not in err


async def test_demo_ends_quietly_with_141_when_the_reader_of_stdout_goes_away() -> None:
    code, out, err = await run_in_shell('$W "$@" | head -1', "demo", "--fast")
    assert out.startswith("wsclient demo:")
    assert code == EXIT_PIPE, err
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    assert "wsclient: " not in err


# Stopping on a dead connection: --close-timeout bounds the close, a second signal ends it at once.


async def listen_through_a_blackhole(proxy: FaultProxy, *args: str) -> asyncio.subprocess.Process:
    """A ``listen`` through ``proxy`` that received a few messages, after which the proxy went silent."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsclient",
        "listen",
        proxy.url,
        "--no-heartbeat",
        *args,
        *FAST,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    async with asyncio.timeout(10):
        for _ in range(3):
            await process.stdout.readline()
    proxy.blackhole()
    return process


async def read_stderr_until(process: asyncio.subprocess.Process, text: str, seen: list[str]) -> None:
    assert process.stderr is not None
    async with asyncio.timeout(10):
        while not any(text in line for line in seen):
            line = await process.stderr.readline()
            if not line:
                raise AssertionError(f"stderr ended without {text!r}: {seen}")
            seen.append(line.decode())


async def end_of(process: asyncio.subprocess.Process, timeout: float) -> tuple[int, float]:
    """Wait for ``process`` to end (draining its output); its exit code and how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        await process.communicate()
        code = await process.wait()
    return code, time.monotonic() - started


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
async def test_a_second_signal_drops_a_dead_connection_at_once(second: signal.Signals) -> None:
    async with FlakyServer("stream", stream_interval=0.005) as server, FaultProxy(server.port) as proxy:
        process = await listen_through_a_blackhole(proxy, "--close-timeout", "30")
        try:
            process.send_signal(signal.SIGTERM)
            seen: list[str] = []
            await read_stderr_until(process, "stopping", seen)
            assert "again to drop the connection at once" in seen[-1]
            process.send_signal(second)
            code, took = await end_of(process, timeout=10)
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    assert code == EXIT_OK
    assert took < 3  # not the 30 s of --close-timeout


async def test_close_timeout_bounds_the_close_of_a_dead_connection() -> None:
    async with FlakyServer("stream", stream_interval=0.005) as server, FaultProxy(server.port) as proxy:
        process = await listen_through_a_blackhole(proxy, "--close-timeout", "0.5")
        try:
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            seen: list[str] = []
            await read_stderr_until(process, "close_timeout", seen)
            code, _ = await end_of(process, timeout=10)
            took = time.monotonic() - started
        finally:
            if process.returncode is None:
                process.kill()
                await process.communicate()
    assert code == EXIT_OK
    assert 0.5 <= took < 5


# Arguments: every error is exit code 2 and names the option.


async def test_ca_without_a_certificate_or_with_a_ws_url_is_a_usage_error_naming_ca(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    code, _, err = await run_cli("listen", "wss://127.0.0.1:1", "--ca", str(empty))
    assert code == EXIT_USAGE
    assert err.startswith(LISTEN_USAGE)
    assert f"argument --ca: no PEM certificate in {empty}" in err

    ca_file = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca_file))
    code, _, err = await run_cli("listen", "ws://127.0.0.1:1", "--ca", str(ca_file))
    assert code == EXIT_USAGE
    assert err.startswith(LISTEN_USAGE)
    assert "argument --ca: only for wss:// URLs" in err
    assert "ssl" not in err


async def test_max_size_lets_a_big_message_through() -> None:
    big = 3 * 2**20
    async with FlakyServer("echo") as server:
        server.send_oversized_next(big)
        code, _, err = await run_cli("listen", server.url, *FAST)
        assert code == EXIT_FATAL
        assert "1009" in err
        server.send_oversized_next(big)
        code, out, err = await run_cli("listen", server.url, "--max-size", "4MiB", "--count", "1", *FAST)
    assert code == EXIT_OK, err
    assert out == "x" * big + "\n"


async def test_collect_is_a_command_of_wsclient_and_names_a_bad_config(tmp_path: Path) -> None:
    code, _, err = await run_cli("collect", str(tmp_path / "missing.toml"), "--redis", "redis://127.0.0.1:1")
    assert code == EXIT_USAGE
    assert "wsclient collect:" in err
    assert "missing.toml" in err
