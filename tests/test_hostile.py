"""A hostile or broken server: every case ends in a defined outcome, in bounded time, never a hang."""

from __future__ import annotations

import asyncio
import ssl
import tracemalloc

import pytest
import trustme
from helpers import MS, fast, until
from structlog.testing import capture_logs

import wsclient
from wsclient.testing import FaultProxy, FlakyServer

# Every test here must finish well inside this bound, whatever the server does.
BOUND = 5.0


async def test_accept_then_stall_is_caught_by_the_heartbeat(server: FlakyServer) -> None:
    server.stall_next()
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS)
    async with asyncio.timeout(BOUND):
        async with wsclient.Client(server.url, **fast(heartbeat=heartbeat)) as client:
            await server.wait_for_connections(2)
            await client.wait_open(timeout=BOUND)
            await client.send("second session works")
            assert await client.recv() == "second session works"
    assert client.stats.outages[0].cause == "heartbeat_timeout"


async def test_stalled_handshake_times_out_and_is_retried(server: FlakyServer) -> None:
    server.stall_handshake_next(count=2)
    with capture_logs() as events:
        async with asyncio.timeout(BOUND):
            async with wsclient.Client(server.url, **fast(open_timeout=30 * MS)) as client:
                assert client.stats.connect_attempts == 3
    errors = [e["error"] for e in events if e["event"] == "connect_failed"]
    assert errors == ["TimeoutError: timed out during opening handshake"] * 2


@pytest.mark.parametrize("kind", ["bad_accept", "bad_subprotocol"])
async def test_wrong_handshake_answer_is_fatal_at_once(server: FlakyServer, kind: str) -> None:
    server.corrupt_handshake_next(kind, count=5)  # type: ignore[arg-type]
    async with asyncio.timeout(BOUND):
        with pytest.raises(wsclient.HandshakeError) as caught:
            async with wsclient.Client(server.url, subprotocols=["chat"], **fast()):
                pass
    assert len(server.requests) == 1
    assert ("Sec-WebSocket-Accept" if kind == "bad_accept" else "not-offered") in str(caught.value)


async def test_rejections_with_retry_after_are_retried_within_the_cap(server: FlakyServer) -> None:
    server.reject_next(429, {"Retry-After": "3600"})
    server.reject_next(503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    backoff = wsclient.Backoff(initial=MS, maximum=MS, jitter=False, max_retry_after=10 * MS)
    with capture_logs() as events:
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast(backoff=backoff)):
            pass
    # An hour is capped; a date in the past means now.
    assert [e["delay"] for e in events if e["event"] == "retrying"] == [0.011, 0.001]


async def test_flapping_server_is_not_hammered_and_max_attempts_gives_up(server: FlakyServer) -> None:
    server.flap_next(100)
    backoff = wsclient.Backoff(initial=MS, maximum=8 * MS, multiplier=2.0, jitter=False)
    with capture_logs() as events:
        async with asyncio.timeout(BOUND):
            with pytest.raises(wsclient.GaveUp) as caught:
                async with wsclient.Client(server.url, **fast(backoff=backoff, max_attempts=6)) as client:
                    await client.recv()
    assert caught.value.attempts == 6
    assert server.accepted == 6
    assert [e["delay"] for e in events if e["event"] == "retrying"] == [0.001, 0.002, 0.004, 0.008, 0.008]


async def test_redirect_is_followed(server: FlakyServer) -> None:
    async with FlakyServer() as target:
        server.redirect_next(f"{target.url}/moved")
        async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
            await client.send("moved")
            assert await client.recv() == "moved"
        assert target.requests[0].path == "/moved"


async def test_endless_redirects_are_fatal_not_followed_forever(server: FlakyServer) -> None:
    server.redirect_next(f"{server.url}/again", count=100)
    async with asyncio.timeout(BOUND):
        with pytest.raises(wsclient.HandshakeError, match="more than 10 redirects"):
            async with wsclient.Client(server.url, **fast()):
                pass
    assert len(server.requests) <= 11


async def test_redirect_from_wss_to_ws_is_refused(server: FlakyServer) -> None:
    ca = trustme.CA()
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with FlakyServer(ssl=server_context) as secure:
        secure.redirect_next(f"{server.url}/plaintext")
        async with asyncio.timeout(BOUND):
            with pytest.raises(wsclient.HandshakeError, match="non-secure"):
                async with wsclient.Client(secure.url, ssl=client_context, **fast()):
                    pass
    assert server.requests == []


async def test_flood_of_large_messages_keeps_inbound_memory_bounded(server: FlakyServer) -> None:
    server.flood_next(16384)
    tracemalloc.start()
    try:
        async with asyncio.timeout(BOUND):
            # Reading paused, the client never sees the server's closing frame: a short close_timeout ends the wait.
            settings = fast(inbox_size=4, max_queue=2, compression=None, close_timeout=0.1)
            async with wsclient.Client(server.url, **settings) as client:
                # The application reads nothing: the client stops reading the socket instead of buffering.
                await until(lambda: client.session is not None and client.session.reading_paused())
                baseline = tracemalloc.get_traced_memory()[0]
                await until(lambda: server.flooded > 200)
                grown = tracemalloc.get_traced_memory()[0] - baseline
                assert client.stats.sessions == 1
                assert client.stats.messages_in <= 4 + 2 + 1
    finally:
        tracemalloc.stop()
    # The server wrote 3 MiB and more; the client held on to less than a tenth of it.
    assert server.flooded * 16384 > 3_000_000
    assert grown < 300_000


async def test_message_over_max_size_is_fatal_and_names_the_cause(server: FlakyServer) -> None:
    server.send_oversized_next(4096, count=5)
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, max_size=1024, **fast()) as client:
        with pytest.raises(wsclient.FatalCloseError, match="by the client with code 1009") as caught:
            await client.recv()
    assert (caught.value.code, caught.value.closed_by) == (1009, "client")
    assert server.accepted == 1
    assert client.state is wsclient.State.CLOSED


async def test_invalid_utf8_in_a_text_frame_is_fatal_and_names_the_cause(server: FlakyServer) -> None:
    server.send_invalid_utf8_next(count=5)
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(wsclient.FatalCloseError, match="by the client with code 1007") as caught:
            await client.recv()
    assert (caught.value.code, caught.value.closed_by) == (1007, "client")
    assert server.accepted == 1


@pytest.mark.parametrize("code", [1001, 1011, 1012, 1013, 1014])
async def test_close_codes_that_may_pass_are_reconnected(server: FlakyServer, code: int) -> None:
    server.flap_next(1, code=code, reason="chaos")
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        await server.wait_for_connections(2)
        await client.wait_open(timeout=BOUND)
        assert (client.stats.last_close_code, client.stats.last_closed_by) == (code, "server")
        await client.send("after the close")
        assert await client.recv() == "after the close"
    assert client.stats.outages[0].cause == "closed"
    assert (client.stats.sessions, server.accepted) == (2, 2)


@pytest.mark.parametrize("code", [1000, 4000, 4999])
async def test_normal_and_application_close_codes_stop_the_client(server: FlakyServer, code: int) -> None:
    server.flap_next(5, code=code)
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        assert [message async for message in client] == []
    assert client.state is wsclient.State.CLOSED
    assert (client.stats.last_close_code, server.accepted) == (code, 1)


@pytest.mark.parametrize("code", [1002, 1003, 1007, 1008, 1009, 1010])
async def test_close_codes_that_say_stop_are_fatal(server: FlakyServer, code: int) -> None:
    server.flap_next(5, code=code, reason="go away")
    async with asyncio.timeout(BOUND), wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(wsclient.FatalCloseError) as caught:
            await client.recv()
    assert (caught.value.code, caught.value.reason, caught.value.closed_by) == (code, "go away", "server")
    assert server.accepted == 1


async def test_secrets_never_reach_the_logs_under_any_fault(server: FlakyServer) -> None:
    url = "ws://bot:pa55word@127.0.0.1:{port}/feed?token=t0ken&api_key=k3y"
    secrets = ("pa55word", "t0ken", "k3y", "Bearer s3cret")
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS)
    server.reject_next(503, {"Retry-After": "0", "Set-Cookie": "id=s3cret"})
    server.stall_handshake_next()
    server.stall_next()
    server.flap_next(2, code=1013)
    async with FaultProxy(server.port) as proxy:
        with capture_logs() as events:
            client = wsclient.Client(
                url.format(port=proxy.port),
                headers={"Cookie": "Bearer s3cret"},
                **fast(heartbeat=heartbeat, open_timeout=50 * MS),
            )
            async with asyncio.timeout(BOUND), client:
                await until(lambda: any(e["event"] == "heartbeat_timeout" for e in events))
                await until(lambda: client.stats.sessions >= 4)
                proxy.reset()
                await until(lambda: client.stats.reconnects >= 1 and client.state is wsclient.State.OPEN)
                server.corrupt_handshake_next("bad_accept")
                proxy.reset()
                with pytest.raises(wsclient.HandshakeError):
                    await client.recv()
    names = {e["event"] for e in events}
    assert {"connect_failed", "retrying", "heartbeat_timeout", "disconnected", "fatal"} <= names
    dump = repr(events)
    for secret in secrets:
        assert secret not in dump


async def test_a_write_blocked_when_the_network_dies_is_counted_as_interrupted(server: FlakyServer) -> None:
    # A blackhole under backpressure: a send waits on a full buffer until the heartbeat ends the session.
    payload = bytes(range(256)) * 400  # 100 KiB that compression cannot shrink
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS)
    handed = 0
    async with FaultProxy(server.port) as proxy:
        settings = fast(heartbeat=heartbeat, compression=None, open_timeout=50 * MS)
        async with asyncio.timeout(BOUND), wsclient.Client(proxy.url, **settings) as client:
            await client.wait_open(timeout=BOUND)
            proxy.blackhole()
            # Send until a message had to be buffered: the session is gone.
            while client.stats.buffered == 0:
                await client.send(payload)
                handed += 1
            await until(lambda: client.stats.outages_total == 1)
            stats = client.stats
            # Written, interrupted or still buffered: no message handed to send() is unaccounted for.
            assert stats.messages_out + stats.sends_interrupted + stats.buffered == handed
            assert stats.sends_interrupted == 1
            assert stats.outages[0].cause == "heartbeat_timeout"
            proxy.restore()
            await client.wait_open(timeout=BOUND)


@pytest.mark.parametrize("idle_timeout", [None, 20 * MS])
async def test_close_1000_without_a_tcp_close_stays_a_deliberate_close(idle_timeout: float | None) -> None:
    """A server that closes with 1000 but never closes TCP: no hang, and no watchdog renames the close."""
    from websockets.frames import Close, Frame, Opcode
    from websockets.http11 import Request
    from websockets.server import ServerProtocol

    connections: list[asyncio.StreamWriter] = []
    received: list[wsclient.Data] = []

    async def close_and_linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        protocol = ServerProtocol()
        while not (events := protocol.events_received()):
            protocol.receive_data(await reader.read(65536))
        request = events[0]
        assert isinstance(request, Request)
        protocol.send_response(protocol.accept(request))
        writer.writelines(protocol.data_to_send())
        writer.write(Frame(Opcode.CLOSE, Close(1000, "done").serialize()).serialize(mask=False))
        await reader.read()  # the client's close frame, then its own TCP close once close_timeout ran out

    server = await asyncio.start_server(close_and_linger, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with capture_logs() as events:
            async with asyncio.timeout(BOUND):
                client = wsclient.Client(
                    f"ws://127.0.0.1:{port}",
                    **fast(idle_timeout=idle_timeout, close_timeout=200 * MS, on_message=received.append),
                )
                async with client:
                    await client.wait_closed()
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert client.state is wsclient.State.CLOSED
    assert client.stats.sessions == 1
    assert (client.stats.last_close_code, client.stats.last_closed_by) == (1000, "server")
    assert client.stats.last_cause == "closed"
    assert "idle_timeout" not in [e["event"] for e in events]
    assert received == []
