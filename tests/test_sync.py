"""The sync client against real servers, from plain threads: no asyncio in the tests' bodies.

The server is a ``FlakyServer`` on an event loop of its own thread
(``ThreadedServer``); every test ends with the thread count back where it
started, and with nothing reported by asyncio's logger (the client's loop
runs in a thread the conftest's ``clean_loop`` does not see).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from helpers import MS, fast
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

import wsclient
import wsclient.sync
from wsclient.testing import FlakyServer

T = TypeVar("T")


class ThreadedServer:
    """A ``FlakyServer`` running on an event loop in its own thread, driven by blocking calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.server = FlakyServer(*args, **kwargs)
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="test-server")
        self._thread.start()
        assert self._ready.wait(10)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.server:
            self._ready.set()
            await self._stop.wait()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def received(self) -> list[str | bytes]:
        return list(self.server.received)

    def run(self, coroutine: Callable[[FlakyServer], Awaitable[T]], timeout: float = 10.0) -> T:
        """Run ``coroutine(server)`` on the server's loop and return its result."""
        assert self._loop is not None

        async def call() -> T:
            return await coroutine(self.server)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(timeout)

    def do(self, action: Callable[[FlakyServer], T]) -> T:
        """Run a plain method of the server on its loop (it touches the loop's transports)."""

        async def call(server: FlakyServer) -> T:
            return action(server)

        return self.run(call)

    def close(self) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every millisecond until it holds; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition still false after {timeout} s")
        time.sleep(MS)


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Fail the test if a thread it started is still running after it, or if asyncio logged an error."""
    before = set(threading.enumerate())
    reported: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            reported.append(record)

    handler = Collect(logging.ERROR)
    logging.getLogger("asyncio").addHandler(handler)
    try:
        yield
        wait_until(lambda: set(threading.enumerate()) <= before, timeout=10)
    finally:
        logging.getLogger("asyncio").removeHandler(handler)
    assert not [r.getMessage() for r in reported]


@pytest.fixture
def echo() -> Iterator[ThreadedServer]:
    server = ThreadedServer("echo")
    yield server
    server.close()


@pytest.fixture
def stream() -> Iterator[ThreadedServer]:
    server = ThreadedServer("stream", stream_interval=2 * MS)
    yield server
    server.close()


def client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("wsclient-")]


# Sending and receiving.


def test_send_recv_and_the_threads_it_takes(echo: ThreadedServer) -> None:
    with wsclient.sync.Client(echo.url, **fast()) as client:
        assert client.state is wsclient.State.OPEN
        assert [t.name for t in client_threads()] == ["wsclient-loop"]  # no callback: no callback thread
        client.send("one")
        client.send(b"two")
        assert client.recv(timeout=5) == "one"
        assert client.recv(timeout=5) == b"two"
    assert client.state is wsclient.State.CLOSED
    assert client.stats.last_close_code == 1000
    assert client.stats.last_closed_by == "client"
    assert client_threads() == []
    with pytest.raises(wsclient.ClientClosed):
        client.recv(timeout=1)
    with pytest.raises(wsclient.ClientClosed):
        client.send("late")


def test_recv_timeout_raises_timeout_error_and_the_stream_goes_on(echo: ThreadedServer) -> None:
    with wsclient.sync.Client(echo.url, **fast()) as client:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            client.recv(timeout=50 * MS)
        assert 40 * MS <= time.monotonic() - started < 2.0
        client.send("after")
        assert client.recv(timeout=5) == "after"


def test_iteration_is_one_stream_across_drops_and_sends_buffer_while_down(echo: ThreadedServer) -> None:
    with wsclient.sync.Client(echo.url, **fast()) as client:
        client.send("1")
        assert client.recv(timeout=5) == "1"
        echo.do(lambda s: s.drop())
        # Once the client saw the drop (a message written into the dying connection would be in flight, lost),
        # it is sent on the next session or buffered for it, never lost.
        wait_until(lambda: client.stats.reconnects >= 1)
        client.send("2")
        assert client.recv(timeout=5) == "2"
        echo.run(lambda s: s.stop())
        wait_until(lambda: client.state is wsclient.State.RECONNECTING)
        client.send("3")
        assert client.unsent() == ["3"]
        echo.run(lambda s: s.start())
        received = []
        for message in client:
            received.append(message)
            break
        assert received == ["3"]
    assert client.stats.reconnects >= 2
    assert [o.cause for o in client.stats.outages][:2] == ["connection_lost", "connection_lost"]


def test_inbox_backpressure_loses_nothing(stream: ThreadedServer) -> None:
    seqs = []
    with wsclient.sync.Client(stream.url, inbox_size=4, **fast()) as client:
        for message in client:
            seqs.append(json.loads(message)["seq"])
            if len(seqs) == 5:
                # A slow reader: the session stops reading while the inbox is full.
                wait_until(lambda: stream.server.seq > seqs[-1] + 20)
            if len(seqs) == 60:
                break
    assert seqs == list(range(seqs[0], seqs[0] + 60))


def test_many_sender_threads_keep_each_threads_order(echo: ThreadedServer) -> None:
    senders, each = 8, 150
    with wsclient.sync.Client(echo.url, **fast()) as client:

        def send_all(thread: int) -> None:
            for i in range(each):
                client.send(f"{thread}:{i}")

        threads = [threading.Thread(target=send_all, args=(n,)) for n in range(senders)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        echo.run(lambda s: s.wait_for_received(senders * each, timeout=10))
    received = [str(m).split(":") for m in echo.received]
    assert len(received) == senders * each
    for n in range(senders):
        assert [int(i) for t, i in received if t == str(n)] == list(range(each))
    assert client.stats.messages_out == senders * each


Via = Literal["websockets", "picows"]
TRANSPORTS = pytest.mark.parametrize("via", ["websockets", "picows"])
"""The sync client's own tests of a path on both transports (it passes ``transport`` itself)."""


@TRANSPORTS
def test_sends_that_do_not_wait_keep_their_order_and_are_counted(echo: ThreadedServer, via: Via) -> None:
    # Small ASCII str and bytes go to the loop without waiting for the write; the rest wait as before.
    messages: list[str | bytes] = []
    for i in range(300):
        messages.append(f"{i}" if i % 3 else f"{i}".encode())
    messages += ["é non-ASCII", bytes(70_000), "x" * 70_000]
    with wsclient.sync.Client(echo.url, transport=via, max_size=None, **fast()) as client:
        for message in messages:
            client.send(message)
        received = [client.recv(timeout=5) for _ in messages]
    assert received == messages
    assert client.stats.messages_out == len(messages)
    assert client.unsent() == []


@TRANSPORTS
def test_sends_that_do_not_wait_are_still_checked_in_the_caller(echo: ThreadedServer, via: Via) -> None:
    with wsclient.sync.Client(echo.url, transport=via, **fast()) as client:
        with pytest.raises(ValueError, match="ttl"):
            client.send("ok", ttl=-1.0)
        with pytest.raises(UnicodeEncodeError):
            client.send("\ud800")
        with pytest.raises(TypeError):
            client.send(1)  # type: ignore[arg-type]
        client.send("after", ttl=5.0)
        assert client.recv(timeout=5) == "after"
    assert echo.received == ["after"]


@contextlib.contextmanager
def loop_held(client: wsclient.sync.Client[Any]) -> Iterator[None]:
    """Keep the client's event loop busy in a callback until the block ends: it takes nothing handed to it."""
    loop = client._portal.loop
    assert loop is not None
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        holding.set()
        release.wait(5)

    loop.call_soon_threadsafe(hold)
    assert holding.wait(5)
    try:
        yield
    finally:
        release.set()


@TRANSPORTS
def test_sends_that_do_not_wait_are_bounded_then_send_waits_again(echo: ThreadedServer, via: Via) -> None:
    # Memory stays bounded: with 16 messages on their way and none taken, the next send() waits for its own.
    with wsclient.sync.Client(echo.url, transport=via, **fast()) as client:
        with loop_held(client):
            for i in range(16):
                started = time.monotonic()
                client.send(f"{i}", timeout=5)
                assert time.monotonic() - started < 1
            with pytest.raises(TimeoutError):
                client.send("waits", timeout=0.2)
        got = [client.recv(timeout=5) for _ in range(16)]
        client.send("after", timeout=5)
        assert client.recv(timeout=5) == "after"
    assert got == [f"{i}" for i in range(16)]
    assert echo.received == [*got, "after"]  # the one that timed out before the loop took it never went


@TRANSPORTS
def test_a_send_the_client_refuses_after_it_was_handed_over_stays_unsent(echo: ThreadedServer, via: Via) -> None:
    with capture_logs() as logs:
        client = wsclient.sync.Client(echo.url, transport=via, **fast())
        with client:
            loop = client._portal.loop
            assert loop is not None
            closing: list[asyncio.Task[None]] = []

            def close_now() -> None:
                # Started as the send after it will be (eagerly on Python 3.12+), so the close goes first.
                if sys.version_info >= (3, 12):
                    closing.append(asyncio.Task(client._client.close(), loop=loop, eager_start=True))
                else:
                    closing.append(loop.create_task(client._client.close()))

            with loop_held(client):
                # The client stops on its own (as when the server ends it) before the loop takes the message.
                loop.call_soon_threadsafe(close_now)
                assert client.state is wsclient.State.OPEN
                client.send("late")  # handed over without waiting: the state was still open
            wait_until(lambda: bool(closing) and closing[0].done())
    assert client.unsent() == ["late"]
    assert [log["error"] for log in logs if log["event"] == "send_failed"] == ["ClientClosed"]


def test_close_from_another_thread_ends_iteration(stream: ThreadedServer) -> None:
    client = wsclient.sync.Client(stream.url, **fast())
    client.start()
    client.wait_open(timeout=5)
    count = 0
    closer = threading.Timer(0.1, client.close)
    closer.start()
    for _ in client:
        count += 1
    closer.join(5)
    assert count > 0
    assert client.state is wsclient.State.CLOSED
    assert client.stats.last_close_code == 1000


def test_unsent_messages_after_closing_while_the_server_is_down(echo: ThreadedServer) -> None:
    client = wsclient.sync.Client(echo.url, **fast())
    with client:
        echo.run(lambda s: s.stop())
        wait_until(lambda: client.state is wsclient.State.RECONNECTING)
        client.send("a")
        client.send("b")
    assert client.unsent() == ["a", "b"]
    echo.run(lambda s: s.start())


# Close codes and refusals: the asyncio client's policy, seen through the sync client.


@pytest.mark.parametrize(
    ("code", "action"),
    [(1000, "stop"), (1001, "reconnect"), (1011, "reconnect"), (1008, "fatal"), (4000, "stop"), (4001, "fatal")],
)
def test_server_close_codes(stream: ThreadedServer, code: int, action: str) -> None:
    with wsclient.sync.Client(stream.url, close_actions={4001: "fatal"}, **fast()) as client:
        next(iter(client))
        stream.run(lambda s: s.close_all(code, "bye"))
        if action == "reconnect":  # the stream goes on
            wait_until(lambda: client.stats.sessions == 2)
            assert client.recv(timeout=5)
            return
        if action == "stop":  # iteration ends cleanly, recv() says why
            assert sum(1 for _ in client) >= 0
            with pytest.raises(wsclient.ClientClosed) as closed:
                client.recv(timeout=5)
            assert closed.value.code == code
        else:  # fatal: iteration raises it
            with pytest.raises(wsclient.FatalCloseError) as fatal:
                for _ in client:
                    pass
            assert (fatal.value.code, fatal.value.closed_by) == (code, "server")
            with pytest.raises(wsclient.FatalCloseError):
                client.wait_closed(timeout=5)
    assert client.state is wsclient.State.CLOSED


def test_entering_raises_handshake_rejected(echo: ThreadedServer) -> None:
    echo.do(lambda s: s.reject_next(401))
    client = wsclient.sync.Client(echo.url, **fast())
    with pytest.raises(wsclient.HandshakeRejected) as rejected, client:
        pytest.fail("entered a client whose handshake was rejected")
    assert rejected.value.status == 401
    assert isinstance(rejected.value, wsclient.FatalError)
    assert client.state is wsclient.State.CLOSED


def test_entering_gives_up_on_a_refused_port() -> None:
    server = ThreadedServer("echo")
    url = server.url
    server.close()  # the port is now refused
    with pytest.raises(wsclient.GaveUp) as gave_up, wsclient.sync.Client(url, **fast(max_attempts=3)):
        pytest.fail("entered a client that could not connect")
    assert gave_up.value.attempts == 3
    assert isinstance(gave_up.value.__cause__, OSError)


def test_refused_then_the_server_comes_up(echo: ThreadedServer) -> None:
    echo.run(lambda s: s.stop())
    client = wsclient.sync.Client(echo.url, **fast())
    client.start()
    wait_until(lambda: client.stats.connect_attempts >= 3)
    echo.run(lambda s: s.start())
    client.wait_open(timeout=5)
    client.send("up")
    assert client.recv(timeout=5) == "up"
    client.close()


@pytest.mark.parametrize("status", [429, 503])
def test_retryable_handshake_statuses(echo: ThreadedServer, status: int) -> None:
    echo.do(lambda s: s.reject_next(status, count=2))
    with wsclient.sync.Client(echo.url, **fast()) as client:
        assert client.stats.connect_attempts == 3


def test_wait_open_timeout(echo: ThreadedServer) -> None:
    echo.do(lambda s: s.stall_handshake_next(count=100))
    client = wsclient.sync.Client(echo.url, **fast(open_timeout=5.0))
    client.start()
    with pytest.raises(TimeoutError):
        client.wait_open(timeout=50 * MS)
    client.close()


# Callbacks.


def test_on_connect_runs_on_every_session_with_a_blocking_session(echo: ThreadedServer) -> None:
    seen: list[tuple[str, str, str]] = []

    def on_connect(session: wsclient.sync.Session) -> None:
        session.send(f"hello {session.id}")
        reply = session.recv(timeout=5)
        seen.append((session.id, str(reply), threading.current_thread().name))
        with pytest.raises(TimeoutError):
            session.recv(timeout=10 * MS)

    with wsclient.sync.Client(echo.url, on_connect=on_connect, **fast()) as client:
        assert sorted(t.name for t in client_threads()) == ["wsclient-callbacks", "wsclient-loop"]
        for sessions in (2, 3):
            echo.do(lambda s: s.drop())
            wait_until(lambda: client.stats.sessions == sessions and client.state is wsclient.State.OPEN)  # noqa: B023
        client.send("data")
        assert client.recv(timeout=5) == "data"  # the hook's replies never reached the stream
    assert len(seen) == 3
    assert [reply for _, reply, _ in seen] == [f"hello {sid}" for sid, _, _ in seen]
    assert len({sid for sid, _, _ in seen}) == 3
    assert {thread for _, _, thread in seen} == {"wsclient-callbacks"}


def test_on_connect_failure_is_retried_and_a_fatal_error_stops(echo: ThreadedServer) -> None:
    calls = []

    def on_connect(session: wsclient.sync.Session) -> None:
        calls.append(session.id)
        if len(calls) == 1:
            raise wsclient.Reconnect("first time fails")
        if len(calls) == 3:
            raise wsclient.FatalError("stop here")

    with wsclient.sync.Client(echo.url, on_connect=on_connect, **fast()) as client:
        assert len(calls) == 2
        echo.do(lambda s: s.drop())
        with pytest.raises(wsclient.FatalError, match="stop here"):
            client.wait_closed(timeout=5)


def test_a_bug_in_a_plain_on_connect_stops_the_client_at_once(echo: ThreadedServer) -> None:
    def on_connect(session: wsclient.sync.Session) -> None:
        {}["missing"]

    with (
        pytest.raises(wsclient.CallbackError) as caught,
        wsclient.sync.Client(echo.url, on_connect=on_connect, **fast()),
    ):
        pass
    assert isinstance(caught.value.__cause__, KeyError)


def test_what_stopped_the_client_keeps_its_cause_whichever_call_reports_it(echo: ThreadedServer) -> None:
    # wait_open() that reaches the loop after the client stopped reports the same error: its cause intact.
    def on_connect(session: wsclient.sync.Session) -> None:
        {}["missing"]

    client = wsclient.sync.Client(echo.url, on_connect=on_connect, **fast())
    client.start()
    try:
        with pytest.raises(wsclient.CallbackError) as first:
            client.wait_closed(timeout=5)
        with pytest.raises(wsclient.CallbackError) as late:
            client.wait_open(timeout=5)
        with pytest.raises(wsclient.CallbackError) as again:
            client.wait_closed(timeout=5)
    finally:
        client.close()
    assert first.value is late.value is again.value
    assert isinstance(again.value.__cause__, KeyError)


def test_on_message_runs_in_order_in_one_thread_and_may_send(echo: ThreadedServer) -> None:
    got: list[str] = []
    threads: set[str] = set()
    done = threading.Event()

    def on_message(message: wsclient.Data) -> None:
        threads.add(threading.current_thread().name)
        got.append(str(message))
        if message == "9":
            client.send("last")
        if message == "last":
            done.set()
        if message == "3":
            raise ValueError("a failing handler is logged, not fatal")

    client = wsclient.sync.Client(echo.url, on_message=on_message, **fast())
    with client:
        for i in range(10):
            client.send(str(i))
        assert done.wait(5)
        with pytest.raises(RuntimeError, match="on_message"):
            client.recv()
    assert got == [str(i) for i in range(10)] + ["last"]
    assert threads == {"wsclient-callbacks"}


def test_plain_url_and_headers_callables_run_before_every_attempt(echo: ThreadedServer) -> None:
    calls: list[str] = []

    def url() -> str:
        calls.append(threading.current_thread().name)
        return echo.url

    def headers() -> dict[str, str]:
        return {"X-Attempt": str(len(calls))}

    with wsclient.sync.Client(url, headers=headers, **fast()) as client:
        echo.do(lambda s: s.drop())
        wait_until(lambda: client.stats.sessions == 2)
    assert calls == ["wsclient-callbacks", "wsclient-callbacks"]
    assert [r.headers["X-Attempt"] for r in echo.server.requests] == ["1", "2"]


def test_a_callback_may_close_the_client(echo: ThreadedServer) -> None:
    def on_message(message: wsclient.Data) -> None:
        client.close()

    client = wsclient.sync.Client(echo.url, on_message=on_message, **fast())
    with client:
        client.send("close please")
        client.wait_closed(timeout=5)
    assert client.stats.last_close_code == 1000


def test_bad_arguments_fail_at_construction_naming_them() -> None:
    async def on_connect(session: wsclient.Session) -> None:
        pass

    with pytest.raises(TypeError, match="on_connect must be a plain function"):
        wsclient.sync.Client("ws://127.0.0.1:1", on_connect=on_connect)
    with pytest.raises(TypeError, match="on_message must be callable"):
        wsclient.sync.Client("ws://127.0.0.1:1", on_message="print")
    with pytest.raises(ValueError, match="max_attempts"):
        wsclient.sync.Client("ws://127.0.0.1:1", max_attempts=0)
    with pytest.raises(ValueError, match="url"):
        wsclient.sync.Client("http://127.0.0.1:1")
    client = wsclient.sync.Client("ws://127.0.0.1:1")
    with pytest.raises(RuntimeError, match="not started"):
        client.recv()
    client.close()  # never started: closes without a thread
    assert client.state is wsclient.State.CLOSED


# Threads, event loops, exits.


def test_works_from_a_thread_that_already_runs_an_event_loop(echo: ThreadedServer) -> None:
    """As in Jupyter: the blocking API called directly from a coroutine, on a running loop's thread."""

    async def notebook_cell() -> wsclient.Data:
        with wsclient.sync.Client(echo.url, **fast()) as client:
            client.send("from a notebook")
            return client.recv(timeout=5)

    assert asyncio.run(notebook_cell()) == "from a notebook"


def test_a_forgotten_client_is_closed_when_collected(echo: ThreadedServer) -> None:
    client = wsclient.sync.Client(echo.url, **fast())
    client.start()
    client.wait_open(timeout=5)
    del client
    gc.collect()
    wait_until(lambda: client_threads() == [])
    echo.run(lambda s: s.wait_disconnected())


SCRIPT = """
import logging, sys
import structlog
import wsclient
from wsclient.sync import Client

structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
client = Client(sys.argv[1], heartbeat=None)
if sys.argv[2] == "interrupt":
    try:
        with client:
            for message in client:
                print("ready", flush=True)
    except KeyboardInterrupt:
        print("interrupted", client.state.value, flush=True)
else:
    client.start()
    client.wait_open(timeout=5)
    print("ready", flush=True)  # and leave without closing
"""


def run_script(url: str, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), url, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent,
    )


class ClosingServer(ThreadedServer):
    """Streams ticks to each connection and records the close code each one ended with."""

    def __init__(self) -> None:
        self.closes: list[int | None] = []
        super().__init__(handler=self.tick)

    async def tick(self, connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await connection.send("tick")
                await asyncio.sleep(2 * MS)
        await connection.wait_closed()
        self.closes.append(connection.close_code)


@pytest.fixture
def closing() -> Iterator[ClosingServer]:
    server = ClosingServer()
    yield server
    server.close()


def finish(process: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_ctrl_c_during_iteration_closes_cleanly(closing: ClosingServer) -> None:
    process = run_script(closing.url, "interrupt")
    assert process.stdout is not None
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGINT)
    out, err = finish(process)
    assert process.returncode == 0, err
    assert out.splitlines()[-1] == "interrupted closed"
    assert "Traceback" not in err
    assert "Exception in thread" not in err
    wait_until(lambda: closing.closes == [1000])


def test_nothing_keeps_running_at_interpreter_exit(closing: ClosingServer) -> None:
    process = run_script(closing.url, "leave")
    out, err = finish(process)
    assert (process.returncode, out) == (0, "ready\n"), err
    assert "Traceback" not in err
    wait_until(lambda: closing.closes == [1001])  # the exit closed it as "going away"


# Requests, deadlines and the disconnect hook.


def test_requests_from_several_threads_get_their_own_replies(echo: ThreadedServer) -> None:
    replies: dict[int, Any] = {}

    def ask(n: int) -> None:
        replies[n] = json.loads(client.request(json.dumps({"id": n, "n": n}), key=n, timeout=5))

    with wsclient.sync.Client(echo.url, reply_key=wsclient.json_field("id"), **fast()) as client:
        threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        client.send("not a reply")
        assert client.recv(timeout=5) == "not a reply"
    assert replies == {n: {"id": n, "n": n} for n in range(8)}
    assert client.stats.replies == 8


def test_a_request_that_times_out_while_buffered_is_never_sent(echo: ThreadedServer) -> None:
    echo.run(lambda server: server.stop())
    client = wsclient.sync.Client(echo.url, reply_key=wsclient.json_field("id"), **fast())
    client.start()
    try:
        with pytest.raises(wsclient.RequestTimeout) as caught:
            client.request(json.dumps({"id": "gone"}), key="gone", timeout=50 * MS)
        assert caught.value.sent is False
        client.send("stale", ttl=20 * MS)
        client.send("kept")
        wait_until(lambda: client.stats.expired == 2)
        assert client.unsent() == ["kept"]
        echo.run(lambda server: server.start())
        assert client.recv(timeout=5) == "kept"
    finally:
        client.close()
    assert echo.received == ["kept"]
    with pytest.raises(wsclient.ClientClosed):
        client.request("{}", key=1)


def test_plain_on_disconnect_and_a_blocking_session_request_in_on_connect(echo: ThreadedServer) -> None:
    ends: list[tuple[wsclient.SessionEnd, str]] = []
    acks: list[Any] = []

    def on_connect(session: wsclient.sync.Session) -> None:
        acks.append(json.loads(session.request(json.dumps({"id": session.id}), key=session.id, timeout=5)))

    def on_disconnect(end: wsclient.SessionEnd) -> None:
        ends.append((end, threading.current_thread().name))

    async def hook(end: wsclient.SessionEnd) -> None:
        pass

    with pytest.raises(TypeError, match="on_disconnect must be a plain function"):
        wsclient.sync.Client(echo.url, on_disconnect=hook)
    client = wsclient.sync.Client(
        echo.url, reply_key=wsclient.json_field("id"), on_connect=on_connect, on_disconnect=on_disconnect, **fast()
    )
    with client:
        echo.do(lambda s: s.drop())
        wait_until(lambda: client.stats.sessions == 2 and client.state is wsclient.State.OPEN)
        client.send("data")
        assert client.recv(timeout=5) == "data"  # the acks never reached the stream
    assert [end.cause for end, _ in ends] == [wsclient.Cause.CONNECTION_LOST, wsclient.Cause.USER_CLOSE]
    assert {thread for _, thread in ends} == {"wsclient-callbacks"}
    assert len(acks) == 2
    assert acks[0]["id"] != acks[1]["id"]


# Timeouts, checked as the asyncio client checks them, before anything is scheduled.

BAD_TIMEOUTS = [
    (float("nan"), ValueError),
    (0, ValueError),
    (-1.0, ValueError),
    ("1", TypeError),
    (True, TypeError),
]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS)
def test_a_bad_timeout_is_refused_before_anything_is_scheduled(
    echo: ThreadedServer, timeout: Any, error: type[Exception]
) -> None:
    calls: dict[str, Callable[[wsclient.sync.Client], object]] = {
        "recv": lambda client: client.recv(timeout=timeout),
        "send": lambda client: client.send("never", timeout=timeout),
        "request": lambda client: client.request(json.dumps({"id": 1}), key=1, timeout=timeout),
        "wait_open": lambda client: client.wait_open(timeout=timeout),
        "wait_closed": lambda client: client.wait_closed(timeout=timeout),
        "close": lambda client: client.close(timeout=timeout),
    }
    with wsclient.sync.Client(echo.url, reply_key=wsclient.json_field("id"), **fast()) as client:
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(error, match="timeout must be") as caught:
                call(client)
            assert time.monotonic() - started < 1.0, name
            assert caught.value.__traceback__ is not None
        assert client.state is wsclient.State.OPEN  # close(timeout=...) changed nothing either
        client.send("after")
        assert client.recv(timeout=5) == "after"
    assert echo.received == ["after"]
    assert client.stats.messages_out == 1


@pytest.mark.parametrize("timeout", [float("inf"), 1e300])
def test_a_timeout_beyond_what_a_thread_can_wait_is_no_limit(echo: ThreadedServer, timeout: float) -> None:
    with wsclient.sync.Client(echo.url, reply_key=wsclient.json_field("id"), **fast()) as client:
        client.wait_open(timeout=timeout)
        client.send("one", timeout=timeout)
        assert client.recv(timeout=timeout) == "one"
        assert json.loads(client.request(json.dumps({"id": 1}), key=1, timeout=timeout)) == {"id": 1}
        client.close(timeout=timeout)
        client.wait_closed(timeout=timeout)
    assert echo.received == ["one", json.dumps({"id": 1})]  # each once: nothing sent twice
    assert client.stats.messages_out == 2


def test_a_blocking_session_checks_its_timeouts_too(echo: ThreadedServer) -> None:
    refused: list[str] = []

    def on_connect(session: wsclient.sync.Session) -> None:
        for name, call in (
            ("send", lambda: session.send("never", timeout=float("nan"))),
            ("recv", lambda: session.recv(timeout="1")),  # type: ignore[arg-type]
            ("request", lambda: session.request("{}", key=1, timeout=float("nan"))),
        ):
            try:
                call()
            except (TypeError, ValueError) as exc:
                refused.append(f"{name}: {exc}")
        session.send("ok", timeout=float("inf"))

    with wsclient.sync.Client(echo.url, reply_key=wsclient.json_field("id"), on_connect=on_connect, **fast()) as client:
        assert client.recv(timeout=5) == "ok"
    assert [entry.split(":")[0] for entry in refused] == ["send", "recv", "request"]
    assert all("timeout must be" in entry for entry in refused)
    assert echo.received == ["ok"]


async def test_the_asyncio_wait_open_checks_its_timeout(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(ValueError, match="timeout must be"):
            await client.wait_open(timeout=float("nan"))
        with pytest.raises(TypeError, match="timeout must be"):
            await client.wait_open(timeout="1")  # type: ignore[arg-type]
        await client.wait_open(timeout=float("inf"))


# Fork.

FORK_SCRIPT = """
import json, os, sys, time
import wsclient
from wsclient.sync import Client

client = Client(sys.argv[1], heartbeat=None)
client.start()
client.wait_open(timeout=5)
pid = os.fork()
if pid == 0:
    outcome = {}
    started = time.monotonic()
    try:
        client.close(timeout=2)
        outcome["close"] = "returned"
    except BaseException as exc:
        outcome["close"] = type(exc).__name__
    outcome["close_seconds"] = time.monotonic() - started
    for name, call in (("send", lambda: client.send("from the child")), ("recv", lambda: client.recv(timeout=1))):
        try:
            call()
            outcome[name] = "returned"
        except BaseException as exc:
            outcome[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(outcome), flush=True)
    os._exit(0)
deadline = time.monotonic() + 10
while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
    time.sleep(0.01)
if waited == (0, 0):
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    print(json.dumps({"child": "still running after 10 s"}), flush=True)
client.send("parent after the fork")
print(json.dumps({"parent": client.recv(timeout=5), "state": client.state.value}), flush=True)
client.close(timeout=5)
"""


def test_after_fork_the_childs_close_is_bounded_and_leaves_the_parents_connection(echo: ThreadedServer) -> None:
    # In a process of its own: forking the test runner, with its threads, is not safe.
    process = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", textwrap.dedent(FORK_SCRIPT), echo.url],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    child, parent = (json.loads(line) for line in process.stdout.splitlines())
    assert child["close"] == "returned"
    assert child["close_seconds"] < 1.0
    assert child["send"].startswith("RuntimeError: this client belongs to process")
    assert child["recv"].startswith("RuntimeError: this client belongs to process")
    assert parent == {"parent": "parent after the fork", "state": "open"}
    assert echo.received == ["parent after the fork"]
