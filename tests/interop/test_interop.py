"""wsclient against WebSocket servers it did not write, each a real process on loopback.

Every implementation in ``servers.py`` runs the same script: echo, a message
just under ``max_size`` with the server's default compression, server pings,
subprotocol choice, application close codes, graceful shutdown (SIGTERM) and
SIGKILL with a restart on the same port. What each server did is collected
into a matrix printed in pytest's terminal summary (the README's
"Interoperability" section is that matrix).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import fast, until
from servers import IMPLS, PING_INTERVAL, SUBPROTOCOL
from websockets.frames import Frame, Opcode

import wsclient

SCRIPT = Path(__file__).with_name("servers.py")

MAX_SIZE = 2**20
"""wsclient's default ``max_size``."""
NEAR_MAX = MAX_SIZE - 1024

REQUIRES: dict[str, tuple[str, ...]] = {
    "aiohttp": ("aiohttp",),
    "tornado": ("tornado",),
    "uvicorn-websockets-sansio": ("uvicorn", "websockets"),
    "uvicorn-wsproto": ("uvicorn", "wsproto"),
    "uvicorn-websockets": ("uvicorn", "websockets"),
    "hypercorn": ("hypercorn", "wsproto"),
    "picows": ("picows",),
}
"""The distributions each server needs; their versions go into the matrix."""

UVICORN_BACKENDS = {
    "uvicorn-websockets-sansio": "websockets_sansio_impl",
    "uvicorn-wsproto": "wsproto_impl",
    "uvicorn-websockets": "websockets_impl",
}
"""uvicorn's module for each backend: the legacy ``websockets`` one is deprecated and will go."""


def missing(impl: str) -> str | None:
    """Why ``impl`` cannot run here, or ``None``."""
    for dist in REQUIRES[impl]:
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return f"{dist} is not installed (pip install -e '.[interop]')"
    if impl.startswith("uvicorn-"):
        spec = importlib.util.find_spec("uvicorn")
        assert spec is not None
        assert spec.submodule_search_locations
        backends = Path(spec.submodule_search_locations[0], "protocols", "websockets")
        module = UVICORN_BACKENDS[impl]
        if not (backends / f"{module}.py").exists():
            return f"uvicorn {importlib.metadata.version('uvicorn')} has no {impl.removeprefix('uvicorn-')} backend"
    return None


def version(impl: str) -> str:
    return " + ".join(f"{dist} {importlib.metadata.version(dist)}" for dist in REQUIRES[impl])


# The matrix: one row per implementation, filled in by the tests as they observe it.

COLUMNS = {
    "version": "version",
    "compression": "permessage-deflate (server default)",
    "protocol_header": "`Sec-WebSocket-Protocol` sent as",
    "near_max": "1 MiB - 1 KiB random message",
    "shutdown": "close seen on SIGTERM",
    "decision": "wsclient by default",
}
MATRIX: dict[str, dict[str, str]] = {}


def record(impl: str, **observed: str) -> None:
    MATRIX.setdefault(impl, {"version": version(impl)}).update(observed)


def matrix_lines() -> list[str]:
    lines = [
        "| server | " + " | ".join(COLUMNS.values()) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for impl in IMPLS:
        if impl in MATRIX:
            row = MATRIX[impl]
            lines.append(f"| {impl} | " + " | ".join(row.get(key, "-") for key in COLUMNS) + " |")
    return lines


class MatrixAtTheEnd:
    """Writes the interop matrix in pytest's terminal summary, as a Markdown table."""

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if MATRIX:
            terminalreporter.write_sep("-", "interop matrix")
            for line in matrix_lines():
                terminalreporter.write_line(line)


# The server processes.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One implementation's server as a child process, restartable on the same port."""

    def __init__(self, impl: str, port: int, log: Path) -> None:
        self.impl = impl
        self.port = port
        self.url = f"ws://127.0.0.1:{port}/"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start the server and return once it printed that it listens (blocking: run it in a thread)."""
        assert not self.running
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), "--impl", self.impl, "--port", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        with self.proc.stdout as stdout:
            line = b""
            deadline = time.monotonic() + timeout
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                readable, _, _ = select.select([stdout], [], [], max(0.0, remaining))
                chunk = os.read(stdout.fileno(), 256) if readable else b""
                if not chunk:
                    self.kill()
                    raise RuntimeError(f"{self.impl} server did not start:\n{self.log.read_text()[-3000:]}")
                line += chunk
        assert line.split() == [b"READY", str(self.port).encode()], line

    def stop(self, signum: int, timeout: float = 10.0) -> int:
        """Send ``signum`` to the server and wait for it to exit; return its exit status."""
        assert self.proc is not None
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the server and anything it started."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


IMPL_PARAMS = [
    pytest.param(impl, marks=[pytest.mark.skip(reason=why)] if (why := missing(impl)) else []) for impl in IMPLS
]


@pytest.fixture(scope="module", params=IMPL_PARAMS)
def server_process(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server process per implementation, shared by the tests that leave it running."""
    if request.config.pluginmanager.get_plugin("wsclient-interop-matrix") is None:
        request.config.pluginmanager.register(MatrixAtTheEnd(), "wsclient-interop-matrix")
    impl: str = request.param
    server = ServerProcess(impl, free_port(), tmp_path_factory.mktemp("interop") / f"{impl}.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def server(server_process: ServerProcess) -> ServerProcess:
    """The implementation's server, started again if an earlier test left it down."""
    if not server_process.running:
        server_process.kill()
        server_process.start()
    return server_process


class Connects:
    """An ``on_connect`` that counts the sessions it ran on."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, session: wsclient.Session) -> None:
        self.count += 1


def response_header(client: wsclient.Client, name: str) -> tuple[str, str] | None:
    """The handshake response header ``name`` as the server spelled it, and its value."""
    assert client.session is not None
    assert client.session.connection.response is not None
    for key, value in client.session.connection.response.headers.raw_items():
        if key.lower() == name.lower():
            return key, value
    return None


def describe_deflate(extensions: str | None) -> str:
    """``off``, or the window the server compresses with, from its ``Sec-WebSocket-Extensions``."""
    if extensions is None:
        return "off"
    params = dict(
        (param.strip().partition("=")[::2] for param in extensions.split(";")[1:]),
    )
    return f"on, window 2^{params.get('server_max_window_bits') or 15}"


# The script.


async def test_echo_text_and_binary(server: ServerProcess) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await client.send("hello")
        assert await client.recv() == "hello"
        await client.send(b"\x00\xff\x00")
        assert await client.recv() == b"\x00\xff\x00"
        extensions = response_header(client, "Sec-WebSocket-Extensions")
        record(server.impl, compression=describe_deflate(None if extensions is None else extensions[1]))


async def test_message_just_under_max_size_with_server_compression(server: ServerProcess) -> None:
    """``max_size`` limits the message, not its compressed frame: random data grows a little when deflated."""
    payload = os.urandom(NEAR_MAX)
    # aiohttp drops a connection whose pong is 0.1 s late with its 0.2 s heartbeat: a pong behind a megabyte
    # deflated at both ends missed that on a loaded machine, and the echo was lost with the session. Pings are
    # another test's subject: here aiohttp's come every 5 s. Bounded: a session dropped must fail, not wait.
    url = server.url + "?heartbeat=5"
    async with asyncio.timeout(30), wsclient.Client(url, **fast(max_size=MAX_SIZE)) as client:
        try:
            await client.send(payload)
            echoed = await client.recv()
            await client.send(f"big:{NEAR_MAX}")
            data = await client.recv()
            digest = await client.recv()
        except wsclient.WsClientError:
            stats = client.stats
            record(server.impl, near_max=f"fatal {stats.last_close_code} (closed by the {stats.last_closed_by})")
            raise
        record(server.impl, near_max="arrives")
        assert echoed == payload
        assert isinstance(data, bytes)
        assert len(data) == NEAR_MAX
        assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
        assert client.state is wsclient.State.OPEN
        assert client.stats.sessions == 1


class PingCounter(logging.Handler):
    """Counts the pings websockets received, from its frame-level debug log."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.pings = 0

    def emit(self, record: logging.LogRecord) -> None:
        frame = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if record.msg == "< %s" and isinstance(frame, Frame) and frame.opcode is Opcode.PING:
            self.pings += 1


@contextlib.contextmanager
def counting_pings() -> Iterator[PingCounter]:
    """Count the pings of connections opened inside the block (websockets decides to log at connect)."""
    logger = logging.getLogger("websockets.client")
    counter = PingCounter()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(counter)
    try:
        yield counter
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)


async def test_server_pings_keep_the_session_open(server: ServerProcess) -> None:
    with counting_pings() as counter:
        async with wsclient.Client(server.url, **fast()) as client:
            await until(lambda: counter.pings >= 5, timeout=40 * PING_INTERVAL)
            assert client.state is wsclient.State.OPEN
            assert client.stats.sessions == 1
            assert client.stats.last_close_code is None
            await client.send("still here")
            assert await client.recv() == "still here"


async def test_subprotocol_choice(server: ServerProcess) -> None:
    async with wsclient.Client(server.url, **fast(subprotocols=["chat.v1", SUBPROTOCOL])) as client:
        assert client.session is not None
        header = response_header(client, "Sec-WebSocket-Protocol")
        record(server.impl, protocol_header="-" if header is None else f"`{header[0]}`")
        assert client.session.subprotocol == SUBPROTOCOL
        assert client.session.response_headers.get("Sec-WebSocket-Protocol") == SUBPROTOCOL


async def test_application_close_code_stops_by_default(server: ServerProcess) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await client.send("close:4001:bye")
        async with asyncio.timeout(5):
            await client.wait_closed()
        assert client.state is wsclient.State.CLOSED
        assert (client.stats.last_close_code, client.stats.last_close_reason) == (4001, "bye")
        assert client.stats.last_closed_by == "server"
        assert client.stats.sessions == 1
        with pytest.raises(wsclient.ClientClosed):
            await client.recv()


async def test_application_close_code_can_reconnect(server: ServerProcess) -> None:
    connects = Connects()
    async with wsclient.Client(server.url, on_connect=connects, close_actions={4001: "reconnect"}, **fast()) as client:
        await client.send("close:4001:bye")
        await until(lambda: connects.count == 2)
        assert (client.stats.last_close_code, client.stats.last_close_reason) == (4001, "bye")
        await client.send("again")
        assert await client.recv() == "again"


async def test_graceful_shutdown_and_restart(server: ServerProcess) -> None:
    """Record what the server's own shutdown sends and what the default policy does; then the stream goes on."""
    if server.impl == "hypercorn" and sys.version_info >= (3, 12):
        # hypercorn's serve() awaits asyncio's Server.wait_closed() before its graceful_timeout: since Python
        # 3.12 that waits for every open connection, so with a client holding its WebSocket open the server
        # never finishes shutting down (hypercorn 0.18, hypercorn/asyncio/run.py). Nothing a client can change.
        pytest.skip("hypercorn does not finish its shutdown on Python >= 3.12 while a WebSocket is open")
    default_connects, opted_in_connects = Connects(), Connects()
    async with (
        wsclient.Client(server.url, on_connect=default_connects, **fast()) as default,
        wsclient.Client(server.url, on_connect=opted_in_connects, reconnect_on_normal_close=True, **fast()) as opted_in,
    ):
        await opted_in.send("before")
        assert await opted_in.recv() == "before"

        await asyncio.to_thread(server.stop, signal.SIGTERM)
        await until(lambda: default.state in (wsclient.State.CLOSED, wsclient.State.RECONNECTING))
        await until(lambda: opted_in.state is not wsclient.State.OPEN)
        stats = default.stats
        decision = "stop" if default.state is wsclient.State.CLOSED else "reconnect"
        seen = str(stats.last_close_code)
        if stats.last_close_reason:
            seen += f' "{stats.last_close_reason}"'
        if stats.last_closed_by != "server":
            seen += f" ({stats.last_cause}: no close frame)"
        record(server.impl, shutdown=seen, decision=decision)
        # The documented default: a deliberate close (1000, 1005) stops, anything a shutdown sends else reconnects.
        assert decision == ("stop" if stats.last_close_code in (1000, 1005) else "reconnect")

        during = [f"during-{i}" for i in range(3)]
        for message in during:
            await opted_in.send(message)  # buffered: no session is open
        await asyncio.to_thread(server.start)
        await until(lambda: opted_in_connects.count == 2)
        after = [f"after-{i}" for i in range(3)]
        for message in after:
            await opted_in.send(message)
        assert [await opted_in.recv() for _ in range(6)] == during + after

        if decision == "reconnect":
            await until(lambda: default_connects.count == 2)
            await default.send("back")
            assert await default.recv() == "back"
        else:
            async with asyncio.timeout(5):
                await default.wait_closed()
            assert default_connects.count == 1
            with pytest.raises(wsclient.ClientClosed):
                await default.recv()


async def test_sigkill_and_restart(server: ServerProcess) -> None:
    connects = Connects()
    async with wsclient.Client(server.url, on_connect=connects, **fast()) as client:
        await client.send("before")
        assert await client.recv() == "before"
        await asyncio.to_thread(server.kill)
        await until(lambda: client.state is wsclient.State.RECONNECTING)
        assert client.stats.last_close_code == 1006
        assert client.stats.last_cause == "connection_lost"
        await asyncio.to_thread(server.start)
        await until(lambda: connects.count == 2)
        await client.send("after")
        assert await client.recv() == "after"


@pytest.mark.parametrize("server_process", [p for p in IMPL_PARAMS if "tornado" in p.values], indirect=True)
async def test_tornado_closes_a_late_pong_with_1000(server: ServerProcess) -> None:
    """An application that stops reading pauses wsclient's reading: pings wait unread behind data.

    tornado's keepalive then closes with ``1000 "ping timed out"``, a normal
    close, so the default policy stops the client.
    """
    async with (
        wsclient.Client(server.url, inbox_size=1, max_queue=1, **fast()) as slow,
        wsclient.Client(server.url, **fast()) as observer,
    ):
        for _ in range(40):
            await slow.send("big:100000")  # 4 MB the application does not read yet

        async def terminated() -> int:
            await observer.send("terminated")
            reply = await observer.recv()
            assert isinstance(reply, str)
            return int(reply.removeprefix("terminated:"))

        async with asyncio.timeout(40 * PING_INTERVAL):
            while not await terminated():
                pass
        received = [message async for message in slow]
        assert received, "what the server sent before its close frame is delivered"
        assert slow.state is wsclient.State.CLOSED
        assert (slow.stats.last_close_code, slow.stats.last_close_reason) == (1000, "ping timed out")
        assert slow.stats.last_closed_by == "server"
        assert slow.stats.sessions == 1
