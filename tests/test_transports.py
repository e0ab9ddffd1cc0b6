"""One contract on both transports: what picows leaves to its user, wsclient does, as websockets does.

Every test here runs on each transport (``BOTH_TRANSPORTS`` in the conftest).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from helpers import fast, until
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Frame, Opcode

import wsclient
import wsclient.sync
from wsclient.buffers import Inbox
from wsclient.testing import FlakyServer
from wsclient.transports import open_transport

BOUND = 5.0


async def fragments(connection: ServerConnection) -> None:
    """Send one text and one binary message in fragments, then echo."""
    await connection.send(["héllo, ", "frag", "mented"])
    await connection.send([b"\x00\x01", b"\x02"])
    async for message in connection:
        await connection.send(message)


async def test_fragmented_messages_are_reassembled(transport: str) -> None:
    async with FlakyServer(handler=fragments) as server, wsclient.Client(server.url, **fast()) as client:
        async with asyncio.timeout(BOUND):
            assert await client.recv() == "héllo, fragmented"
            assert await client.recv() == b"\x00\x01\x02"
            await client.send("after")
            assert await client.recv() == "after"
        assert client.config.transport == transport
        assert client.stats.messages_in == 3


async def test_max_size_applies_to_the_whole_fragmented_message(transport: str) -> None:
    async def big_in_pieces(connection: ServerConnection) -> None:
        await connection.send(["x" * 600, "x" * 600])  # each fragment fits, the message does not
        await connection.wait_closed()

    async with FlakyServer(handler=big_in_pieces) as server:
        client = wsclient.Client(server.url, max_size=1000, **fast())
        async with asyncio.timeout(BOUND), client:
            with pytest.raises(wsclient.FatalCloseError) as caught:
                await client.recv()
    assert (caught.value.code, caught.value.closed_by) == (1009, "client")
    assert server.accepted == 1


@pytest.mark.parametrize("server_compression", ["deflate", None])
@pytest.mark.parametrize("kind", ["text", "incompressible"])
async def test_max_size_is_exact_whatever_was_negotiated(
    transport: str, server_compression: str | None, kind: str
) -> None:
    limit = 4096

    def message(size: int) -> str | bytes:
        return "x" * size if kind == "text" else os.urandom(size)

    async def exact_then_one_more(connection: ServerConnection) -> None:
        await connection.send(message(limit))
        await connection.send(message(limit + 1))
        await connection.wait_closed()

    async with serve(exact_then_one_more, "127.0.0.1", 0, compression=server_compression) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        client = wsclient.Client(f"ws://127.0.0.1:{port}", max_size=limit, **fast())
        async with asyncio.timeout(BOUND), client:
            assert len(await client.recv()) == limit
            with pytest.raises(wsclient.FatalCloseError) as caught:
                await client.recv()
    assert (caught.value.code, caught.value.closed_by) == (1009, "client")
    assert caught.value.reason == f"message over max_size ({limit} bytes)"
    assert f"max_size ({limit} bytes)" in str(caught.value)
    assert "raise max_size" in str(caught.value)
    assert client.stats.last_close_reason == caught.value.reason


async def test_a_rejected_handshake_keeps_its_status_and_headers(server: FlakyServer, transport: str) -> None:
    server.reject_next(401, {"WWW-Authenticate": "Bearer"})
    with pytest.raises(wsclient.HandshakeRejected) as caught:
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()):
            pass
    assert caught.value.status == 401
    assert caught.value.headers["www-authenticate"] == "Bearer"
    assert server.accepted == 0


async def test_a_503_is_retried_and_the_client_connects(server: FlakyServer, transport: str) -> None:
    server.reject_next(503, {"Retry-After": "0"}, count=2)
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        assert client.stats.connect_attempts == 3
        await client.send("up")
        assert await client.recv() == "up"


async def test_the_chosen_subprotocol_and_response_headers(transport: str) -> None:
    async with (
        FlakyServer(subprotocols=["v2", "v1"]) as server,
        asyncio.timeout(BOUND),
        wsclient.Client(server.url, subprotocols=["v1"], **fast()) as client,
    ):
        assert client.session is not None
        assert client.session.subprotocol == "v1"
        assert client.session.response_headers["sec-websocket-protocol"] == "v1"
        assert client.session.is_open


async def test_an_untrusted_certificate_is_fatal_and_a_trusted_one_connects(transport: str) -> None:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with FlakyServer(ssl=context) as secure:
        client = wsclient.Client(secure.url, **fast())
        with pytest.raises(wsclient.CertificateError):
            async with asyncio.timeout(BOUND), client:
                pass
        assert client.stats.connect_attempts == 1
        async with asyncio.timeout(BOUND), wsclient.Client(secure.url, ssl=trusting, **fast()) as client:
            await client.send("over tls")
            assert await client.recv() == "over tls"


async def test_the_sync_client_passes_the_transport_through(server: FlakyServer, transport: str) -> None:
    def talk() -> wsclient.Data:
        with wsclient.sync.Client(server.url, transport=transport, **fast()) as client:
            client.send("sync")
            return client.recv(timeout=BOUND)

    assert await asyncio.to_thread(talk) == "sync"
    with pytest.raises(ValueError, match="compression='deflate' needs transport='websockets'"):
        wsclient.sync.Client(server.url, transport="picows", compression="deflate")


def test_compression_is_websockets_only(transport: str) -> None:
    assert wsclient.Client("ws://127.0.0.1:9", transport="picows").config.compression is None
    assert wsclient.Client("ws://127.0.0.1:9", transport="websockets").config.compression == "deflate"
    with pytest.raises(ValueError, match="compression='deflate' needs transport='websockets'"):
        wsclient.Client("ws://127.0.0.1:9", transport="picows", compression="deflate")
    with pytest.raises(ValueError, match="transport must be one of websockets, picows"):
        wsclient.Client("ws://127.0.0.1:9", transport="aiohttp")  # type: ignore[call-overload]


BURST = 600
FRAGMENTED = 301  # a multiple of 7: the handler below returns an awaitable for it


async def burst(connection: ServerConnection) -> None:
    """On ``go``, write ``0`` to ``BURST - 1`` at once, so that the client reads many per read; one in fragments."""
    await connection.recv()
    protocol = connection.protocol
    for number in range(BURST):
        text = str(number).encode()
        if number == FRAGMENTED:
            protocol.send_text(text[:1], fin=False)
            protocol.send_continuation(text[1:], fin=True)
        else:
            protocol.send_text(text)
    connection.transport.write(b"".join(protocol.data_to_send()))
    await connection.wait_closed()


@pytest.mark.parametrize("replies", [False, True], ids=["plain", "with_reply_key"])
async def test_a_plain_on_message_gets_every_message_in_order_whatever_it_returns(
    transport: str, replies: bool
) -> None:
    """Failures are counted, and an awaitable it returns is awaited before the next message is handled."""
    seen: list[str] = []

    async def later(number: int) -> None:
        await asyncio.sleep(0)
        seen.append(f"end {number}")

    def handler(message: str) -> object:
        number = int(message)
        seen.append(str(number))
        if number % 11 == 0:
            raise ValueError("handler bug")
        return later(number) if number % 7 == 0 else None

    expected: list[str] = []
    for number in range(BURST):
        expected.append(str(number))
        if number % 7 == 0 and number % 11 != 0:
            expected.append(f"end {number}")
    extra = {"reply_key": lambda message: None} if replies else {}
    async with FlakyServer(handler=burst) as server:
        client = wsclient.Client(server.url, text=True, on_message=handler, **extra, **fast())
        async with asyncio.timeout(BOUND), client:
            await client.send("go")
            await until(lambda: len(seen) >= len(expected))
    assert seen == expected
    assert client.stats.handler_errors == len(range(0, BURST, 11))
    assert client.stats.messages_in == BURST


async def test_a_slow_async_on_message_holds_the_feed_back_in_order(transport: str) -> None:
    """With a small inbox, reading pauses while the handler is behind; nothing is lost or reordered."""
    seen: list[str] = []

    async def handler(message: str) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        seen.append(message)

    async with FlakyServer(handler=burst) as server:
        client = wsclient.Client(server.url, text=True, on_message=handler, inbox_size=4, **fast())
        async with asyncio.timeout(BOUND), client:
            await client.send("go")
            await until(lambda: len(seen) == BURST)
    assert seen == [str(number) for number in range(BURST)]


async def test_messages_that_came_during_on_connect_reach_a_plain_on_message_first(transport: str) -> None:
    seen: list[str] = []
    first: list[str] = []
    sent = asyncio.Event()
    early = 10  # fewer than websockets' max_queue: it stops reading beyond, and the pong would wait

    async def burst_then_note(connection: ServerConnection) -> None:
        await connection.send("hello")
        await connection.recv()
        for number in range(early):
            await connection.send(str(number))
        sent.set()
        await connection.wait_closed()

    async def on_connect(session: wsclient.Session) -> None:
        first.append(str(await session.recv()))
        await session.send("go")
        await sent.wait()
        # The pong comes after the whole burst: every message of it has arrived once it is here.
        await (await session.transport.ping())

    async with FlakyServer(handler=burst_then_note) as server:
        client = wsclient.Client(server.url, text=True, on_connect=on_connect, on_message=seen.append, **fast())
        async with asyncio.timeout(BOUND), client:
            await until(lambda: len(seen) == early)
    assert first == ["hello"]
    assert seen == [str(number) for number in range(early)]


async def test_a_plain_on_message_is_called_from_the_frame_callback_when_the_transport_pushes(
    server: FlakyServer, transport: str
) -> None:
    """On picows no task runs the handler, also after one of its awaitables; websockets' messages come from a task."""
    calls: list[tuple[str, bool]] = []
    awaited = asyncio.Event()

    async def later() -> None:
        await asyncio.sleep(0)
        awaited.set()

    def handler(message: str) -> object:
        calls.append((message, asyncio.current_task() is None))
        return later() if message == "first" else None

    async with asyncio.timeout(BOUND), wsclient.Client(server.url, text=True, on_message=handler, **fast()) as client:
        await client.send("first")
        await awaited.wait()
        await client.send("second")
        await until(lambda: len(calls) == 2)
    pushed = transport == "picows"
    assert calls == [("first", pushed), ("second", pushed)]


async def test_a_server_flooding_during_on_connect_is_held_back_not_buffered_without_bound(transport: str) -> None:
    """While on_connect runs, the client stops reading once ``inbox_size`` messages wait (memory stays bounded)."""
    count, seen, paused = 2000, [], []

    async def flood(connection: ServerConnection) -> None:
        for number in range(count):
            await connection.send(f"{number:04d}" + "x" * 1000)
        await connection.wait_closed()

    async def on_connect(session: wsclient.Session) -> None:
        await until(session.transport.reading_paused)
        paused.append(True)
        # More than the queue holds: what was held back follows, and reading goes on.
        seen.extend([str(await session.recv()) for _ in range(20)])

    async with FlakyServer(handler=flood) as server:
        client = wsclient.Client(
            server.url, inbox_size=8, max_queue=8, on_connect=on_connect, on_message=seen.append, **fast()
        )
        async with asyncio.timeout(BOUND), client:
            await until(lambda: len(seen) == count)
    assert paused == [True]
    assert [message[:4] for message in seen] == [f"{number:04d}" for number in range(count)]


async def test_a_close_that_came_behind_a_full_early_queue_is_answered_after_its_messages(transport: str) -> None:
    seen: list[str] = []
    ends: list[wsclient.SessionEnd] = []

    async def flood_then_close(connection: ServerConnection) -> None:
        # In one write, so that the close frame comes in the same read as the messages that overflow.
        protocol = connection.protocol
        for number in range(50):
            protocol.send_text(f"{number:04d}".encode())
        protocol.send_close(4001, "bye")
        connection.transport.write(b"".join(protocol.data_to_send()))
        await connection.wait_closed()

    async def on_connect(session: wsclient.Session) -> None:
        await until(session.transport.reading_paused)

    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        ends.append(end)

    async with FlakyServer(handler=flood_then_close) as server:
        client = wsclient.Client(
            server.url,
            inbox_size=8,
            max_queue=8,
            on_connect=on_connect,
            on_message=seen.append,
            on_disconnect=on_disconnect,
            close_actions={4001: "stop"},
            **fast(),
        )
        async with asyncio.timeout(BOUND):
            await client.start()
            await client.wait_closed()
    assert [message[:4] for message in seen] == [f"{number:04d}" for number in range(50)]
    assert [(end.code, end.reason, end.closed_by) for end in ends] == [(4001, "bye", "server")]
    assert client.stats.messages_in == 50


async def test_decode_false_delivers_text_as_the_bytes_sent_unchecked(transport: str) -> None:
    """For a parser that reads bytes: no str is made, and text that is not UTF-8 does not end the session."""
    not_utf8 = b"\xff\xfe price"

    async def mixed(connection: ServerConnection) -> None:
        await connection.send("héllo")
        await connection.send(["frag", "mented"])
        await connection.send(b"\x00\x01")
        # A text frame that is not UTF-8: websockets' server would refuse to send it, so it is written raw.
        connection.protocol.send_text(not_utf8)
        connection.transport.write(b"".join(connection.protocol.data_to_send()))
        await connection.send("after")
        await connection.wait_closed()

    async with (
        FlakyServer(handler=mixed) as server,
        asyncio.timeout(BOUND),
        wsclient.Client(server.url, decode=False, **fast()) as client,
    ):
        received = [await client.recv() for _ in range(5)]
        assert client.session is not None
        assert client.session.is_open
    assert received == ["héllo".encode(), b"fragmented", b"\x00\x01", not_utf8, b"after"]
    assert client.stats.messages_in == 5
    assert client.stats.sessions == 1


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([Frame(Opcode.TEXT, b"caf\xc3", fin=False), Frame(Opcode.CONT, b"(")], 1007),
        ([Frame(Opcode.CONT, b"orphan")], 1002),
        ([Frame(Opcode.TEXT, b"one", fin=False), Frame(Opcode.TEXT, b"two")], 1002),
    ],
    ids=["fragmented_text_not_utf8", "continuation_without_a_message", "new_message_inside_another"],
)
async def test_a_broken_fragmented_message_fails_the_connection_from_the_client(
    transport: str, frames: list[Frame], code: int
) -> None:
    """What websockets' server never sends, written as frames: the client fails the session, fatally."""

    async def broken(connection: ServerConnection) -> None:
        await connection.send("before")
        connection.transport.write(b"".join(frame.serialize(mask=False) for frame in frames))
        await connection.wait_closed()

    async with FlakyServer(handler=broken) as server:
        client = wsclient.Client(server.url, **fast())
        async with asyncio.timeout(BOUND), client:
            assert await client.recv() == "before"
            with pytest.raises(wsclient.FatalCloseError) as caught:
                await client.recv()
    assert (caught.value.code, caught.value.closed_by) == (code, "client")
    assert server.accepted == 1


async def test_messages_before_a_close_in_the_same_read_reach_a_waiting_reader(transport: str) -> None:
    """The reader waits in recv() while a read brings messages, a close and more: it gets the messages at once."""
    got: list[wsclient.Data] = []

    async def then_close(connection: ServerConnection) -> None:
        if server.accepted > 1:
            await connection.wait_closed()
            return
        await connection.recv()
        protocol = connection.protocol
        protocol.send_text(b"a")
        protocol.send_text(b"b")
        data = b"".join(protocol.data_to_send())
        protocol.send_close(1012, "restarting")
        data += b"".join(protocol.data_to_send())
        # A frame after the close: the client must ignore it.
        data += Frame(Opcode.TEXT, b"after the close").serialize(mask=False)
        connection.transport.write(data)
        await connection.wait_closed()

    server = FlakyServer(handler=then_close)
    async with server, asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        reading = asyncio.create_task(client.recv())
        await client.send("go")
        got.append(await reading)
        got.append(await client.recv())
        await server.wait_for_connections(2)
    assert got == ["a", "b"]
    assert client.stats.last_close_code == 1012
    assert client.stats.messages_in == 2


async def test_the_messages_before_a_frame_that_cannot_be_parsed_are_delivered(transport: str) -> None:
    """A broken frame after good ones in one write: the reader gets the good ones, the session fails with 1002."""

    async def then_garbage(connection: ServerConnection) -> None:
        if server.accepted > 1:
            await connection.wait_closed()
            return
        await connection.recv()
        good = b"".join(Frame(Opcode.TEXT, text).serialize(mask=False) for text in (b"a", b"b", b"c"))
        connection.transport.write(good + b"\x83\x00")  # opcode 3 is reserved
        await connection.wait_closed()

    server = FlakyServer(handler=then_garbage)
    async with (
        server,
        asyncio.timeout(BOUND),
        wsclient.Client(server.url, close_actions={1002: "reconnect"}, **fast()) as client,
    ):
        reading = asyncio.create_task(client.recv())
        await client.send("go")
        first = await reading
        await server.wait_for_connections(2)
        rest = [await client.recv() for _ in range(client.stats.messages_in - 1)]
    assert [first, *rest] in (["a"], ["a", "b"], ["a", "b", "c"])
    assert client.stats.last_close_code == 1002


@pytest.mark.parametrize("through_sink", [False, True], ids=["into_queue", "through_a_sink"])
async def test_pump_fills_a_queue_in_order_and_waits_while_it_is_full(transport: str, through_sink: bool) -> None:
    """The interface itself, as a session drives it: both transports pump, the websockets one by pulling."""
    count = 40

    async def numbers(connection: ServerConnection) -> None:
        for number in range(count):
            await connection.send(str(number))
        await connection.close()

    queue: Inbox[wsclient.Data] = Inbox(4)
    stats = wsclient.Stats()
    taken: list[wsclient.Data] = []

    def sink(message: wsclient.Data) -> bool:
        taken.append(message)
        return queue.push(message)

    async with FlakyServer(handler=numbers) as server:
        config = wsclient.Client(server.url, **fast()).config
        opened = await open_transport(config, server.url, None, None)
        pumping = asyncio.create_task(opened.pump(queue, sink if through_sink else None, stats))
        received = []
        async with asyncio.timeout(BOUND):
            while len(received) < count:
                received.append(await queue.get())
            await pumping
            await opened.wait_closed()
    assert received == [str(number) for number in range(count)]
    assert stats.messages_in == count
    assert taken == (received if through_sink else [])


# Writing without a coroutine (the send path of Client.send and request())


async def test_plain_writes_keep_their_order_among_the_librarys_own_sends(transport: str) -> None:
    """``write()`` is a plain call; mixed with ``send()`` and pings, the frames reach the server in call order."""
    got: list[wsclient.Data] = []

    async def collect(connection: ServerConnection) -> None:
        async for message in connection:
            got.append(message)

    async with FlakyServer(handler=collect) as server:
        config = wsclient.Client(server.url, **fast()).config
        opened = await open_transport(config, server.url, None, None)
        assert opened.write is not None
        try:
            for number in range(30):
                if number % 3 == 0:
                    await opened.send(str(number).encode(), text=True)
                elif number % 3 == 1:
                    assert opened.write(str(number).encode(), True) is False  # far below the write buffer's limit
                else:
                    assert opened.write(str(number).encode(), False) is False
                    await opened.ping()
            await until(lambda: len(got) == 30, BOUND)
        finally:
            await opened.close(1000, "")
    assert got == [str(n) if n % 3 != 2 else str(n).encode() for n in range(30)]


async def test_a_plain_write_reports_a_full_buffer_and_drained_waits_for_the_peer(transport: str) -> None:
    """Backpressure: once the peer stops reading, ``write()`` returns True and ``drained()`` waits until it reads."""
    reading = asyncio.Event()
    got: list[int] = []

    async def slow(connection: ServerConnection) -> None:
        await reading.wait()
        async for message in connection:
            got.append(len(message))

    chunk = os.urandom(256 * 1024)
    async with FlakyServer(handler=slow) as server, asyncio.timeout(BOUND):
        config = wsclient.Client(server.url, **fast(compression=None)).config
        opened = await open_transport(config, server.url, None, None)
        assert opened.write is not None
        try:
            written = 0
            while True:
                written += 1
                assert written < 400, "the write buffer never filled"
                if opened.write(chunk, False):
                    break
                await asyncio.sleep(0)  # let the loop move bytes into the socket, as a sender between messages does
            draining = asyncio.create_task(opened.drained())
            for _ in range(20):
                await asyncio.sleep(0)
            assert not draining.done()
            reading.set()
            await draining
            assert opened.is_open
            await until(lambda: len(got) == written)
        finally:
            await opened.close(1000, "")
    assert got == [len(chunk)] * written


@pytest.mark.websockets_only("a fragmented message sent through websockets' own connection object")
async def test_a_write_during_a_fragmented_message_waits_for_its_last_fragment() -> None:
    gate = asyncio.Event()
    got: list[wsclient.Data] = []

    async def collect(connection: ServerConnection) -> None:
        async for message in connection:
            got.append(message)

    async def pieces() -> AsyncIterator[str]:
        yield "frag"
        await gate.wait()
        yield "mented"

    async with FlakyServer(handler=collect) as server, asyncio.timeout(BOUND):
        config = wsclient.Client(server.url, **fast()).config
        opened = await open_transport(config, server.url, None, None)
        assert opened.write is not None
        try:
            fragmented = asyncio.create_task(opened.raw.send(pieces()))
            await until(lambda: opened.raw.protocol.expect_continuation_frame)
            # Not written between two fragments (a protocol error): left to drained(), which sends it after.
            assert opened.write(b"after", True) is True
            draining = asyncio.create_task(opened.drained())
            gate.set()
            await asyncio.gather(fragmented, draining)
            await until(lambda: len(got) == 2)
        finally:
            await opened.close(1000, "")
    assert got == ["fragmented", "after"]


@pytest.mark.websockets_only("a socket write that raises, on the websockets transport's own write path")
async def test_a_write_that_fails_in_the_socket_ends_the_session_and_counts_the_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FlakyServer() as server, asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        await client.wait_open(timeout=BOUND)
        session = client.session
        assert session is not None

        def fails(data: object) -> None:
            raise OSError("the socket refused the write")

        monkeypatch.setattr(session.transport.raw.transport, "write", fails)
        await client.send("lost")  # what websockets' send() would raise is taken as the session's end
        assert client.stats.sends_interrupted == 1
        assert client.stats.messages_out == 0
        assert not session.is_open
        await until(lambda: client.session is not None and client.session is not session)
        await client.wait_open(timeout=BOUND)
        await client.send("after")
        assert await client.recv() == "after"
    assert client.stats.messages_out == 1


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_an_idle_connection_waits_without_a_pending_recv_and_pongs_do_not_wake_it(
    transport: str, compression: str | None
) -> None:
    """While nothing arrives, the consumer holds one future, not websockets' recv() and its coroutines."""
    speak = asyncio.Event()

    async def later(connection: ServerConnection) -> None:
        for text in ("first", "second"):
            await speak.wait()
            speak.clear()
            await connection.send(text)
        await connection.wait_closed()

    beat = wsclient.Heartbeat(interval=0.01, timeout=1.0)
    settings = fast(heartbeat=beat, compression=compression) if transport == "websockets" else fast(heartbeat=beat)
    async with FlakyServer(handler=later) as server, wsclient.Client(server.url, **settings) as client:
        session = client.session
        assert session is not None
        timer = session._timers[0]
        assert isinstance(timer, wsclient.heartbeat.HeartbeatTimer)
        async with asyncio.timeout(BOUND):
            for text in ("first", "second"):
                # Pongs came meanwhile: control frames leave the consumer waiting where it was.
                beats = timer.beats
                await until(lambda beats=beats: timer.beats >= beats + 3)  # type: ignore[misc]
                if transport == "websockets":
                    assert not session.connection.recv_messages.get_in_progress
                speak.set()
                assert await client.recv() == text
            assert session.is_open
        assert client.stats.messages_in == 2
