"""Every row of the policy table, end to end against a real server on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator

import pytest
import trustme
from helpers import MS, fast, until
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidMessage

import wsclient
from wsclient.testing import FlakyServer


async def raw_server(on_connect: str, handlers: set[asyncio.Task[object]]) -> asyncio.Server:
    """A TCP server that never completes a WebSocket handshake: it stays silent or hangs up.

    Each connection's task goes into ``handlers``: closing the server does not wait for them.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        if on_connect == "hang_up":
            writer.close()
        else:
            await reader.read()  # until the client gives up and closes
            writer.close()
        await writer.wait_closed()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


# Retried: refused, connect timeout, EOF during handshake, HTTP 5xx/429/408.


async def test_refused_then_server_comes_up(server: FlakyServer) -> None:
    await server.stop()
    client = wsclient.Client(server.url, **fast())
    await client.start()
    try:
        await until(lambda: client.stats.connect_attempts >= 3)
        assert client.state is wsclient.State.CONNECTING
        await server.start()
        await client.wait_open(timeout=5)
        assert client.stats.sessions == 1
    finally:
        await client.close()


@pytest.mark.parametrize("behaviour", ["silent", "hang_up"])
async def test_handshake_timeout_and_eof_are_retried(behaviour: str) -> None:
    handlers: set[asyncio.Task[object]] = set()
    tcp = await raw_server(behaviour, handlers)
    port = tcp.sockets[0].getsockname()[1]
    with capture_logs() as events:
        client = wsclient.Client(f"ws://127.0.0.1:{port}", **fast(open_timeout=0.05, max_attempts=3))
        with pytest.raises(wsclient.GaveUp) as caught:
            async with client:
                pass
    tcp.close()
    await tcp.wait_closed()
    await asyncio.wait(handlers, timeout=5)  # each sees the client's close and closes its end
    assert all(handler.done() for handler in handlers)
    assert caught.value.attempts == 3
    expected = TimeoutError if behaviour == "silent" else InvalidMessage
    assert isinstance(caught.value.__cause__, expected)
    assert [e["action"] for e in events if e["event"] == "connect_failed"] == ["reconnect"] * 3


@pytest.mark.parametrize("status", [500, 502, 503, 429, 408])
async def test_retryable_handshake_statuses(server: FlakyServer, status: int) -> None:
    server.reject_next(status, count=2)
    async with wsclient.Client(server.url, **fast()) as client:
        assert client.stats.connect_attempts == 3
        assert len(server.requests) == 3


# Stop.


async def test_server_close_1000_stops_cleanly(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await client.send("last")
        assert await client.recv() == "last"
        await server.close_all(1000, "bye")
        received = [message async for message in client]
        assert received == []
        with pytest.raises(wsclient.ClientClosed) as caught:
            await client.recv()
        assert (caught.value.code, caught.value.reason) == (1000, "bye")
        assert client.state is wsclient.State.CLOSED
        assert client.stats.last_closed_by == "server"
    assert server.accepted == 1


async def test_reconnect_on_normal_close(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, reconnect_on_normal_close=True, **fast()) as client:
        await server.close_all(1000)
        await server.wait_for_connections(2)
        await client.send("again")
        assert await client.recv() == "again"
        assert client.stats.reconnects == 1


async def test_our_close_sends_1000_and_stops(server: FlakyServer) -> None:
    closes: list[int | None] = []

    async def record_close(connection: ServerConnection) -> None:
        await connection.wait_closed()
        closes.append(connection.close_code)

    server.handler = record_close
    async with wsclient.Client(server.url, **fast()) as client:
        pass
    await server.wait_disconnected()
    assert closes == [1000]
    assert client.state is wsclient.State.CLOSED
    assert (client.stats.last_close_code, client.stats.last_closed_by, client.stats.last_cause) == (
        1000,
        "client",
        "user_close",
    )


@pytest.mark.parametrize("code", [3000, 4000, 4999])
async def test_application_codes_stop(server: FlakyServer, code: int) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await server.close_all(code, "kicked")
        with pytest.raises(wsclient.ClientClosed) as caught:
            await client.recv()
        assert caught.value.code == code
    assert server.accepted == 1


async def test_application_code_override_reconnects(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, close_actions={4001: "reconnect"}, **fast()) as client:
        await server.close_all(4001, "rebalance")
        await server.wait_for_connections(2)
        await client.send("still here")
        assert await client.recv() == "still here"


# Reconnect.


@pytest.mark.parametrize("code", [1006, 1001, 1011, 1012, 1013, 1014])
async def test_broken_or_temporary_closes_reconnect(server: FlakyServer, code: int) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        if code == 1006:
            server.drop()
        else:
            await server.close_all(code, "later")
        await server.wait_for_connections(2)
        await client.send("after")
        assert await client.recv() == "after"
        assert client.stats.last_close_code == code
        assert client.stats.last_closed_by == ("nobody" if code == 1006 else "server")
        assert client.stats.reconnects == 1


# Fatal.


@pytest.mark.parametrize("code", [1002, 1003, 1007, 1008, 1009, 1010])
async def test_fatal_close_codes_raise(server: FlakyServer, code: int) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        await server.close_all(code, "you did wrong")
        with pytest.raises(wsclient.FatalCloseError) as caught:
            await client.recv()
        assert (caught.value.code, caught.value.reason, caught.value.closed_by) == (code, "you did wrong", "server")
        with pytest.raises(wsclient.FatalCloseError):
            async for _ in client:
                pass
        assert client.state is wsclient.State.CLOSED
    assert server.accepted == 1


async def test_message_over_max_size_is_fatal_not_a_reconnect_loop(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, max_size=1024, **fast()) as client:
        await server.send_all("x" * 2048)
        with pytest.raises(wsclient.FatalCloseError) as caught:
            await client.recv()
    assert (caught.value.code, caught.value.closed_by) == (1009, "client")
    assert server.accepted == 1


async def test_invalid_utf8_from_the_server_is_fatal() -> None:
    async def bad_text(connection: ServerConnection) -> None:
        # A text frame whose payload is not UTF-8, written through websockets' own protocol object.
        connection.protocol.send_text(b"\xff\xfe bad")
        connection.send_data()
        await connection.wait_closed()

    async with FlakyServer(handler=bad_text) as server, wsclient.Client(server.url, **fast()) as client:
        with pytest.raises(wsclient.FatalCloseError) as caught:
            await client.recv()
    assert (caught.value.code, caught.value.closed_by) == (1007, "client")


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_client_error_statuses_are_fatal_at_once(server: FlakyServer, status: int) -> None:
    server.reject_next(status, {"WWW-Authenticate": "Bearer"}, count=5)
    with pytest.raises(wsclient.HandshakeRejected) as caught:
        async with wsclient.Client(server.url, **fast()):
            pass
    assert caught.value.status == status
    assert len(server.requests) == 1


async def test_refused_subprotocol_is_fatal() -> None:
    async with FlakyServer(subprotocols=["v2"]) as server:
        with pytest.raises(wsclient.FatalError) as caught:
            async with wsclient.Client(server.url, subprotocols=["v1"], **fast()):
                pass
        assert len(server.requests) == 1
    assert "400" in str(caught.value)


@pytest.fixture
async def tls_server() -> AsyncIterator[tuple[str, trustme.CA]]:
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    async with serve(echo, "127.0.0.1", 0, ssl=context, ping_interval=None) as server:
        yield f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}", ca


async def test_untrusted_certificate_is_fatal(tls_server: tuple[str, trustme.CA]) -> None:
    url, _ = tls_server
    with pytest.raises(wsclient.CertificateError, match="not trusted"):
        async with wsclient.Client(url, **fast()):
            pass


async def test_certificate_trusted_through_the_ssl_argument(tls_server: tuple[str, trustme.CA]) -> None:
    url, ca = tls_server
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with wsclient.Client(url, ssl=context, **fast()) as client:
        await client.send("secure")
        assert await client.recv() == "secure"


async def test_invalid_url_from_a_callable_is_fatal() -> None:
    with pytest.raises(wsclient.CallbackError, match="ws:// or wss://") as caught:
        async with wsclient.Client(lambda: "http://127.0.0.1:1/", **fast()):
            pass
    assert caught.value.callback == "url"
    assert isinstance(caught.value.__cause__, ValueError)


# on_connect.


@pytest.mark.parametrize(
    "error",
    [wsclient.Reconnect("subscription service not ready"), ConnectionResetError("upstream reset"), TimeoutError()],
    ids=lambda error: type(error).__name__,
)
async def test_a_connection_error_or_reconnect_in_on_connect_is_retried(server: FlakyServer, error: Exception) -> None:
    calls = 0

    async def flaky_subscribe(session: wsclient.Session) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise error
        await session.send("subscribed")

    with capture_logs() as events:
        async with wsclient.Client(server.url, on_connect=flaky_subscribe, **fast()) as client:
            assert await client.recv() == "subscribed"
    assert calls == 3
    failures = [e for e in events if e["event"] == "on_connect_failed"]
    assert len(failures) == 2
    assert failures[0]["log_level"] == "warning"
    assert failures[0]["error"].startswith(type(error).__name__)
    assert client.stats.sessions == 1
    assert server.accepted == 3


async def test_a_bug_in_on_connect_stops_the_client_after_one_attempt(server: FlakyServer) -> None:
    async def buggy(session: wsclient.Session) -> None:
        {}["missing"]

    with capture_logs() as events, pytest.raises(wsclient.CallbackError) as caught:
        async with asyncio.timeout(5), wsclient.Client(server.url, on_connect=buggy, **fast()):
            pass
    assert caught.value.callback == "on_connect"
    assert isinstance(caught.value.__cause__, KeyError)
    assert isinstance(caught.value, wsclient.FatalError)
    assert server.accepted == 1
    failures = [e for e in events if e["event"] == "callback_failed"]
    assert len(failures) == 1
    assert failures[0]["callback"] == "on_connect"
    assert isinstance(failures[0]["exc_info"], KeyError)


async def test_fatal_error_in_on_connect_stops(server: FlakyServer) -> None:
    async def bad_credentials(session: wsclient.Session) -> None:
        raise wsclient.FatalError("login refused")

    with pytest.raises(wsclient.FatalError, match="login refused"):
        async with wsclient.Client(server.url, on_connect=bad_credentials, **fast()):
            pass
    assert server.accepted == 1


async def test_retry_after_on_503_lengthens_the_next_delay(server: FlakyServer) -> None:
    server.reject_next(503, {"Retry-After": "30"})
    backoff = wsclient.Backoff(initial=MS, maximum=MS, jitter=False, max_retry_after=40 * MS)
    with capture_logs() as events:
        async with wsclient.Client(server.url, **fast(backoff=backoff)):
            pass
    # Retry-After: 30 s, capped by max_retry_after, on top of the 1 ms backoff.
    assert [e["delay"] for e in events if e["event"] == "retrying"] == [0.041]


async def test_close_1013_lengthens_the_next_delay(server: FlakyServer) -> None:
    backoff = wsclient.Backoff(initial=MS, maximum=MS, jitter=False, overload_delay=20 * MS)
    with capture_logs() as events:
        async with wsclient.Client(server.url, **fast(backoff=backoff)) as client:
            await server.close_all(1013, "try again later")
            await server.wait_for_connections(2)
            await client.wait_open(timeout=5)
    assert [e["delay"] for e in events if e["event"] == "retrying"] == [0.021]


async def test_a_host_that_does_not_resolve_is_named_with_the_settings_that_stop_it(transport: str) -> None:
    client = wsclient.Client("ws://no-such-host.invalid:9/", max_attempts=2, **fast())
    with capture_logs() as events, pytest.raises(wsclient.GaveUp) as caught:
        async with asyncio.timeout(10), client:
            pass
    hints = [e["hint"] for e in events if e["event"] == "connect_failed"]
    assert len(hints) == 2
    assert all("'no-such-host.invalid' could not be resolved" in hint for hint in hints)
    assert all("max_attempts= or max_outage=" in hint for hint in hints)
    assert caught.value.limit == "max_attempts=2"
    assert "(max_attempts=2 reached)" in str(caught.value)
    assert "gaierror" in str(caught.value)
    gave_up = next(e for e in events if e["event"] == "gave_up")
    assert gave_up["limit"] == "max_attempts=2"


async def test_giving_up_on_max_outage_names_it(transport: str) -> None:
    client = wsclient.Client("ws://127.0.0.1:9/", max_outage=0.05, **fast())
    with pytest.raises(wsclient.GaveUp, match=r"\(max_outage=0.05 reached\)") as caught:
        async with asyncio.timeout(10), client:
            pass
    assert caught.value.limit == "max_outage=0.05"
