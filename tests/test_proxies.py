"""Proxies: one reading of the environment, and real HTTP CONNECT and SOCKS5 proxies on loopback, on both transports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from helpers import MS, fast, until
from proxy_servers import HttpConnectProxy, Socks5Proxy
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request

import wsclient
import wsclient.sync
from wsclient.proxies import check_proxy, proxy_for_url, proxy_from_environment, redact_proxy
from wsclient.testing import FaultProxy, FlakyServer

SECRET = "S3CRET-pw"
USER = "alice"

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ws_proxy", "wss_proxy", "socks_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no proxy variable set, in either case."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


# Construction: what a proxy URL may be, per transport.


@pytest.mark.parametrize(
    ("proxy", "kind"),
    [
        (True, "websockets"),
        (None, "picows"),
        ("http://127.0.0.1:3128", "websockets"),
        ("http://127.0.0.1:3128", "picows"),
        ("https://user:pw@proxy.example:8443", "picows"),
        ("http://proxy.example", "websockets"),
        ("socks5h://127.0.0.1:1080", "picows"),
        ("socks5://127.0.0.1:1080", "websockets"),
        ("socks4://127.0.0.1:1080", "picows"),
        ("socks4a://127.0.0.1:1080", "websockets"),
    ],
)
def test_accepted_proxies(proxy: object, kind: str) -> None:
    check_proxy(proxy, kind)


@pytest.mark.parametrize(
    ("proxy", "kind", "error", "words"),
    [
        (1, "websockets", TypeError, "proxy must be a proxy URL"),
        (False, "websockets", TypeError, "proxy must be a proxy URL"),
        ("ftp://127.0.0.1:21", "websockets", ValueError, "scheme 'ftp' is not supported"),
        ("127.0.0.1:3128", "websockets", ValueError, "scheme"),
        ("socks4a://127.0.0.1:1080", "picows", ValueError, "transport='picows'"),
        ("socks5://127.0.0.1", "websockets", ValueError, "needs a port"),
        ("http://:3128", "websockets", ValueError, "no host"),
        ("http://127.0.0.1:3128/path", "websockets", ValueError, "without a path"),
        ("http://127.0.0.1:3128/?q=1", "picows", ValueError, "without a path"),
        ("http://127.0.0.1:99999", "websockets", ValueError, "not a valid URL"),
        (f"http://{USER}@127.0.0.1:3128", "websockets", ValueError, "no password"),
        ("http://127.0.0.1:3128\r\nX: y", "picows", ValueError, "control characters"),
    ],
)
def test_refused_proxies(proxy: object, kind: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(")):
        check_proxy(proxy, kind)


def test_a_refused_proxy_never_shows_its_password() -> None:
    with pytest.raises(ValueError, match="without a path") as caught:
        wsclient.Client("ws://127.0.0.1:9/", proxy=f"http://{USER}:{SECRET}@127.0.0.1:3128/path")
    assert SECRET not in str(caught.value)
    assert "[redacted]@127.0.0.1:3128" in str(caught.value)


def test_the_config_repr_never_shows_the_proxy() -> None:
    client = wsclient.Client("ws://127.0.0.1:9/", proxy=f"http://{USER}:{SECRET}@127.0.0.1:3128")
    assert SECRET not in repr(client.config)


@pytest.mark.parametrize(
    ("proxy", "shown"),
    [
        ("http://u:p@h:1", "http://[redacted]@h:1"),
        ("socks5h://h:1080", "socks5h://h:1080"),
        ("http://a@b:c@h:1", "http://[redacted]@h:1"),
        ("h:1", "h:1"),
    ],
)
def test_redact_proxy(proxy: str, shown: str) -> None:
    assert redact_proxy(proxy) == shown


# The environment, read by one function for both transports.


@pytest.mark.parametrize(
    ("variables", "url", "expected"),
    [
        ({}, "wss://feed.example/", None),
        ({"https_proxy": "http://p:1"}, "wss://feed.example/", "http://p:1"),
        ({"https_proxy": "http://p:1"}, "ws://feed.example/", "http://p:1"),
        ({"http_proxy": "http://p:1"}, "wss://feed.example/", None),
        ({"http_proxy": "http://p:1"}, "ws://feed.example/", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1"}, "wss://feed.example/", "http://p:1"),
        ({"all_proxy": "socks5h://p:1080"}, "wss://feed.example/", "socks5h://p:1080"),
        ({"all_proxy": "socks5h://p:1080", "https_proxy": "http://p:1"}, "wss://feed.example/", "http://p:1"),
        ({"wss_proxy": "http://w:1", "https_proxy": "http://p:1"}, "wss://feed.example/", "http://w:1"),
        ({"socks_proxy": "http://s:1080", "https_proxy": "http://p:1"}, "wss://f.example/", "socks5h://s:1080"),
        ({"https_proxy": "http://p:1", "no_proxy": "feed.example"}, "wss://feed.example/", None),
        ({"https_proxy": "http://p:1", "no_proxy": ".example"}, "wss://a.feed.example/", None),
        ({"https_proxy": "http://p:1", "no_proxy": "*"}, "wss://feed.example/", None),
        ({"https_proxy": "http://p:1", "no_proxy": "other.example"}, "wss://feed.example/", "http://p:1"),
    ],
)
def test_proxy_from_environment(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert proxy_from_environment(url) == expected
    assert proxy_for_url(True, url) == expected
    assert proxy_for_url(None, url) is None
    assert proxy_for_url("http://x:1", url) == "http://x:1"


# Real proxies on loopback, on both transports.

KINDS = ["http", "socks5"]


@pytest.fixture(params=KINDS)
async def proxy(request: pytest.FixtureRequest) -> AsyncIterator[HttpConnectProxy | Socks5Proxy]:
    """An HTTP CONNECT or a SOCKS5 proxy on loopback, asking for credentials."""
    relay = HttpConnectProxy if request.param == "http" else Socks5Proxy
    async with relay(credentials=(USER, SECRET)) as running:
        yield running


def proxy_url(relay: HttpConnectProxy | Socks5Proxy) -> str:
    return relay.url(userinfo=f"{USER}:{SECRET}")


async def test_connects_and_echoes_through_the_proxy(
    server: FlakyServer, proxy: HttpConnectProxy | Socks5Proxy, transport: str
) -> None:
    async with wsclient.Client(server.url, proxy=proxy_url(proxy), **fast()) as client:
        await client.send("through")
        assert await client.recv() == "through"
    assert proxy.tunnels == 1
    assert proxy.targets == [("127.0.0.1", int(server.url.rsplit(":", 1)[1]))]


async def test_reconnects_through_the_proxy_after_it_restarts(
    server: FlakyServer, proxy: HttpConnectProxy | Socks5Proxy, transport: str
) -> None:
    async with wsclient.Client(server.url, proxy=proxy_url(proxy), **fast()) as client:
        await proxy.stop()
        await until(lambda: client.state is not wsclient.State.OPEN)
        await until(lambda: client.stats.connect_attempts >= 3)
        await proxy.start()
        await client.wait_open(timeout=5)
        await client.send("back")
        assert await client.recv() == "back"
    assert proxy.tunnels == 2


async def test_reconnects_through_the_proxy_after_the_server_restarts(
    server: FlakyServer, proxy: HttpConnectProxy | Socks5Proxy, transport: str
) -> None:
    async with wsclient.Client(server.url, proxy=proxy_url(proxy), **fast()) as client:
        await server.restart()
        await until(lambda: client.stats.sessions == 2 and client.state is wsclient.State.OPEN)
        await client.send("again")
        assert await client.recv() == "again"
    assert proxy.tunnels >= 2


async def test_fault_proxy_faults_behind_the_proxy(
    server: FlakyServer, proxy: HttpConnectProxy | Socks5Proxy, transport: str
) -> None:
    async with FaultProxy(int(server.url.rsplit(":", 1)[1])) as faults:
        client = wsclient.Client(
            faults.url, proxy=proxy_url(proxy), **fast(heartbeat=wsclient.Heartbeat(50 * MS, 50 * MS))
        )
        async with client:
            faults.reset()
            await until(lambda: client.stats.sessions == 2 and client.state is wsclient.State.OPEN)
            faults.blackhole()
            await until(lambda: client.stats.sessions == 2 and client.state is not wsclient.State.OPEN)
            faults.restore()
            await until(lambda: client.stats.sessions == 3 and client.state is wsclient.State.OPEN)
            await client.send("after faults")
            assert await client.recv() == "after faults"
    assert proxy.tunnels == 3


@pytest.mark.parametrize("userinfo", [f"{USER}:wrong", None])
async def test_wrong_or_missing_credentials_stop_at_once(
    server: FlakyServer, proxy: HttpConnectProxy | Socks5Proxy, transport: str, userinfo: str | None
) -> None:
    client = wsclient.Client(server.url, proxy=proxy.url(userinfo=userinfo), **fast())
    with capture_logs() as events, pytest.raises(wsclient.ProxyRejected) as caught:
        async with client:
            pass
    assert client.stats.connect_attempts == 1
    assert caught.value.status == 407
    assert caught.value.proxy == proxy.url(userinfo="[redacted]" if userinfo else None)
    assert "credentials" in str(caught.value)
    assert proxy.tunnels == 0
    text = repr(events) + str(caught.value) + repr(caught.value) + repr(caught.value.__cause__)
    assert "wrong" not in text


async def test_a_failing_proxy_is_retried(server: FlakyServer, transport: str) -> None:
    async with HttpConnectProxy(status=502) as proxy:
        client = wsclient.Client(server.url, proxy=proxy.url(), **fast())
        await client.start()
        try:
            await until(lambda: client.stats.connect_attempts >= 3)
            assert client.state is wsclient.State.CONNECTING
            proxy.status = None
            await client.wait_open(timeout=5)
        finally:
            await client.close()
        assert proxy.tunnels == 1


async def test_a_proxy_that_refuses_connections_is_retried(server: FlakyServer, transport: str) -> None:
    relay = Socks5Proxy()
    await relay.start()
    await relay.stop()
    client = wsclient.Client(server.url, proxy=relay.url(), **fast())
    await client.start()
    try:
        await until(lambda: client.stats.connect_attempts >= 3)
        await relay.start()
        await client.wait_open(timeout=5)
    finally:
        await client.close()
        await relay.stop()
    assert relay.tunnels == 1


@pytest.mark.parametrize("variable", ["https_proxy", "HTTP_PROXY", "all_proxy"])
async def test_the_environment_is_followed_by_default_and_none_bypasses_it(
    server: FlakyServer, monkeypatch: pytest.MonkeyPatch, variable: str, transport: str
) -> None:
    async with HttpConnectProxy() as relay:
        monkeypatch.setenv(variable, relay.url())
        async with wsclient.Client(server.url, **fast()):
            pass
        assert relay.tunnels == 1
        async with wsclient.Client(server.url, proxy=None, **fast()):
            pass
        assert relay.tunnels == 1
        monkeypatch.setenv("no_proxy", "127.0.0.1")
        async with wsclient.Client(server.url, **fast()):
            pass
        assert relay.tunnels == 1


async def test_a_bad_proxy_in_the_environment_is_fatal_and_named(
    server: FlakyServer, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    monkeypatch.setenv("https_proxy", f"ftp://{USER}:{SECRET}@127.0.0.1:21")
    client = wsclient.Client(server.url, **fast())
    with pytest.raises(wsclient.HandshakeError, match="the proxy from the environment") as caught:
        async with client:
            pass
    assert SECRET not in str(caught.value)
    assert client.stats.connect_attempts == 1


async def test_socks5h_sends_the_host_name(server: FlakyServer, transport: str) -> None:
    url = server.url.replace("127.0.0.1", "localhost")
    async with Socks5Proxy() as relay, wsclient.Client(url, proxy=relay.url(scheme="socks5h"), **fast()):
        pass
    assert relay.names == ["localhost"]


async def test_a_handshake_that_ends_after_open_timeout_leaves_no_connection_open(transport: str) -> None:
    # Each tunnel opens after 0.3 s and the server answers each upgrade 0.35 s later: past open_timeout
    # (0.5 s), yet before a timer started when the tunnel opened would give up on it (0.8 s). Neither
    # the attempt that timed out nor the one close() cancels may leave its late connection open.
    held: set[ServerConnection] = set()
    requests = 0

    async def hold(connection: ServerConnection) -> None:
        held.add(connection)
        try:
            await connection.wait_closed()
        finally:
            held.discard(connection)

    async def answer_late(connection: ServerConnection, request: Request) -> None:
        nonlocal requests
        requests += 1
        await asyncio.sleep(0.35)

    async with (
        serve(hold, "127.0.0.1", 0, process_request=answer_late, ping_interval=None) as upstream,
        HttpConnectProxy(answer_after=0.3) as relay,
    ):
        port = upstream.sockets[0].getsockname()[1]
        client = wsclient.Client(f"ws://127.0.0.1:{port}", proxy=relay.url(), **fast(open_timeout=0.5))
        await client.start()
        try:
            # The second attempt's upgrade reached the server: the first one's answer came and went before.
            await until(lambda: requests >= 2)
        finally:
            await client.close()
        assert client.stats.sessions == 0
        # Every connection ends at both ends: the server's and the client's socket at the proxy.
        await until(lambda: not held and relay.open == 0, timeout=2)


@pytest.fixture
def debug_records() -> Iterator[list[logging.LogRecord]]:
    """Every stdlib log record at DEBUG, the libraries' own loggers included."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler, level = Keep(logging.DEBUG), root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_proxy_credentials_reach_no_log(
    server: FlakyServer, proxy: HttpConnectProxy | Socks5Proxy, transport: str, debug_records: list[logging.LogRecord]
) -> None:
    with capture_logs() as events:
        async with wsclient.Client(server.url, proxy=proxy_url(proxy), **fast()) as client:
            await proxy.stop()
            await until(lambda: client.stats.connect_attempts >= 2)
            await proxy.start()
            await client.wait_open(timeout=5)
    logged = repr(events) + "".join(record.getMessage() + repr(record.args) for record in debug_records)
    assert SECRET not in logged


async def test_the_sync_client_takes_the_same_proxy(server: FlakyServer, transport: str) -> None:
    async with HttpConnectProxy(credentials=(USER, SECRET)) as relay:

        def use() -> str | bytes:
            with wsclient.sync.Client(server.url, proxy=proxy_url(relay), **fast()) as client:
                client.send("sync")
                return client.recv(timeout=5)

        assert await asyncio.to_thread(use) == "sync"
    assert relay.tunnels == 1
