"""What reaches the wire: URLs, headers and subprotocols checked once, sent the same way by both transports."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import MS, fast

import wsclient
from wsclient.testing import FlakyServer
from wsclient.wire import check_header, check_subprotocols, check_url, handshake_target

BOTH = pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)

# The pure checks, row by row.


@pytest.mark.parametrize(
    ("key", "value"),
    [("X-A", "v"), ("x_a", ""), ("X-Token", "Bearer abc.def"), ("A", "a \tb"), ("!#$%&'*+-.^_`|~", "~")],
)
def test_valid_header(key: str, value: str) -> None:
    check_header(key, value)


@pytest.mark.parametrize(
    ("key", "value", "error", "message"),
    [
        ("X A", "v", ValueError, r"headers\['X A'\]: a header name"),
        ("", "v", ValueError, "header name"),
        ("X-A\r\nX-Injected", "yes", ValueError, "header name"),
        ("X:A", "v", ValueError, "header name"),
        ("X-A", "v\r\nX-Injected: yes", ValueError, r"headers\['X-A'\]: a header value"),
        ("X-A", "v\nb", ValueError, "header value"),
        ("X-A", "v\x00", ValueError, "header value"),
        ("X-A", "caf\u00e9", ValueError, "ASCII"),
        ("X-A", " v", ValueError, "whitespace"),
        ("X-A", "v ", ValueError, "whitespace"),
        ("Host", "evil", ValueError, "the handshake sets it"),
        ("sec-websocket-key", "k", ValueError, "the handshake sets it"),
        ("Sec-WebSocket-Protocol", "chat", ValueError, "subprotocols="),
        ("X-A", 5, TypeError, r"headers\['X-A'\]: header values must be str, got int"),
        ("X-A", None, TypeError, "got NoneType"),
        ("X-A", b"raw", TypeError, "got bytes"),
        (b"X-A", "v", TypeError, "header names must be str"),
    ],
)
def test_invalid_header(key: Any, value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        check_header(key, value)


@pytest.mark.parametrize(
    ("protocols", "error"),
    [
        (["chat", "v2.json"], None),
        ([], None),
        (["a,b"], ValueError),
        ([""], ValueError),
        (["a b"], ValueError),
        (["chat\r\nX: y"], ValueError),
        ("chat", TypeError),
        ([b"chat"], TypeError),
    ],
)
def test_subprotocols(protocols: Any, error: type[Exception] | None) -> None:
    if error is None:
        assert check_subprotocols(protocols) == list(protocols)
    else:
        with pytest.raises(error, match="subprotocols"):
            check_subprotocols(protocols)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ws://h/", None),
        ("wss://h:443/a/b?c=d&e", None),
        ("ws://u:p@h/", None),
        ("ws://[::1]:80/", None),
        ("ws://h/#top", "fragment"),
        ("ws://h/a b", "space"),
        ("ws://h/\r\nX-Injected: yes", "control"),
        ("ws://h/caf\u00e9", "non-ASCII"),
        ("http://h/", "ws:// or wss://"),
        ("ws:///path", "no host"),
        ("ws://h:99999/", "not a valid URL"),
    ],
)
def test_urls(url: str, message: str | None) -> None:
    if message is None:
        assert check_url(url) == url
    else:
        with pytest.raises(ValueError, match=message):
            check_url(url)


@pytest.mark.parametrize(
    ("url", "headers", "expected"),
    [
        ("ws://h/x?q=1", None, ("ws://h/x?q=1", None)),
        ("ws://h/", {"X": "1"}, ("ws://h/", {"X": "1"})),
        ("ws://alice:S3CRET@h:8/x?q", None, ("ws://h:8/x?q", {"Authorization": "Basic YWxpY2U6UzNDUkVU"})),
        ("ws://a%40b:p%3Aw@h/", {"X": "1"}, ("ws://h/", {"X": "1", "Authorization": "Basic YUBiOnA6dw=="})),
        ("ws://alice@h/", None, ("ws://h/", {"Authorization": "Basic YWxpY2U6"})),
    ],
)
def test_userinfo_becomes_basic_authorization(url: str, headers: Any, expected: Any) -> None:
    assert handshake_target(url, headers) == expected


def test_userinfo_and_an_authorization_header_conflict() -> None:
    with pytest.raises(ValueError, match="Authorization"):
        handshake_target("ws://a:b@h/", {"authorization": "Bearer x"})
    with pytest.raises(ValueError, match="Authorization"):
        wsclient.Client("ws://a:b@h/", headers={"Authorization": "Bearer x"})


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"headers": {"X-A": "v\r\nX-Injected: yes"}}, ValueError, "headers"),
        ({"headers": {"X-A\r\nX-Injected": "yes"}}, ValueError, "headers"),
        ({"headers": {"X-A": 1}}, TypeError, r"headers\['X-A'\]"),
        ({"headers": {"Host": "other"}}, ValueError, r"headers\['Host'\]"),
        ({"subprotocols": ["chat\r\nX-Injected: sp"]}, ValueError, "subprotocols"),
        ({"subprotocols": ["a,b"]}, ValueError, "subprotocols"),
        ({"url": "ws://127.0.0.1:1/#fragment"}, ValueError, "fragment"),
        ({"url": "ws://127.0.0.1:1/a b"}, ValueError, "url"),
        ({"close_timeout": float("inf")}, ValueError, "close_timeout"),
    ],
)
def test_the_client_refuses_at_construction(arguments: dict[str, Any], error: type[Exception], message: str) -> None:
    url = arguments.pop("url", "ws://127.0.0.1:1/")
    with pytest.raises(error, match=message):
        wsclient.Client(url, **arguments)


def test_the_config_repr_hides_credentials() -> None:
    client = wsclient.Client(
        "ws://alice:S3CRET@h/x?token=T0K&access_token=T0K&signature=T0K&page=2",
        headers={"Cookie": "C00K", "X-Auth-Token": "T0K", "Accept": "text/plain"},
    )
    shown = repr(client.config)
    for secret in ("S3CRET", "T0K", "C00K", "alice"):
        assert secret not in shown
    assert "page=2" in shown
    assert "'Accept': 'text/plain'" in shown


# The wire itself: a raw TCP listener sees the exact request.


@pytest.fixture
async def raw_listener() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A TCP listener that records the first bytes of each connection and hangs up."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


@BOTH
async def test_userinfo_goes_as_basic_authorization_never_in_host(raw_listener: tuple[int, list[bytes]]) -> None:
    port, seen = raw_listener
    client = wsclient.Client(f"ws://alice:S3CRET@127.0.0.1:{port}/feed", **fast(max_attempts=1))
    with pytest.raises(wsclient.WsClientError):
        async with asyncio.timeout(5), client:
            pass
    request = seen[0].decode("ascii").split("\r\n")
    assert request[0] == "GET /feed HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in request
    assert "Authorization: Basic YWxpY2U6UzNDUkVU" in request
    assert b"S3CRET" not in seen[0]
    assert b"alice" not in seen[0]


async def test_both_transports_send_the_same_header_lines(raw_listener: tuple[int, list[bytes]]) -> None:
    port, seen = raw_listener
    headers = {"X-Plain": "v 1\t2", "x-lower": "!#~", "X-Empty": "", "Cookie": "a=b; c=d"}
    for transport in ("websockets", "picows"):
        client = wsclient.Client(
            f"ws://u:p@127.0.0.1:{port}/a?b=c",
            headers=headers,
            subprotocols=["v1", "v2"],
            transport=transport,
            compression=None,
            **fast(max_attempts=1),
        )
        with pytest.raises(wsclient.WsClientError):
            async with asyncio.timeout(5), client:
                pass
    mine = {"x-plain", "x-lower", "x-empty", "cookie", "authorization", "host", "sec-websocket-protocol"}
    lines = [
        sorted(line for line in request.decode("ascii").split("\r\n") if line.partition(":")[0].lower() in mine)
        for request in seen
    ]
    assert len(lines) == 2
    assert lines[0] == lines[1]
    assert f"Host: 127.0.0.1:{port}" in lines[0]
    assert "X-Plain: v 1\t2" in lines[0]
    assert [request.split(b"\r\n")[0] for request in seen] == [b"GET /a?b=c HTTP/1.1"] * 2


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@BOTH
@pytest.mark.parametrize(
    ("returned", "callback"),
    [
        ({"X-A": "v\r\nX-Injected: yes"}, "headers"),
        ({"X-Tok": 5}, "headers"),
        ({"X-Tok": None}, "headers"),
        ({"Host": "evil"}, "headers"),
        ("not a mapping", "headers"),
    ],
)
async def test_a_headers_callable_returning_what_cannot_be_sent_is_a_callback_error(
    server: FlakyServer, returned: Any, callback: str
) -> None:
    before = _fds()
    client = wsclient.Client(server.url, headers=lambda: returned, **fast(max_attempts=3))
    with pytest.raises(wsclient.CallbackError) as caught:
        async with asyncio.timeout(5), client:
            pass
    assert caught.value.callback == callback
    assert isinstance(caught.value.__cause__, TypeError | ValueError)
    assert client.stats.connect_attempts == 1
    assert server.requests == []
    assert _fds() == before


@BOTH
@pytest.mark.parametrize("url", ["ws://127.0.0.1:1/#x", "ws://127.0.0.1:1/a b", 5])
async def test_a_url_callable_returning_what_cannot_be_sent_is_a_callback_error(url: Any) -> None:
    with pytest.raises(wsclient.CallbackError) as caught:
        async with asyncio.timeout(5), wsclient.Client(lambda: url, **fast(max_attempts=3)):
            pass
    assert caught.value.callback == "url"


@BOTH
@pytest.mark.parametrize("which", ["url", "headers"])
async def test_open_timeout_bounds_the_callables_too(server: FlakyServer, which: str) -> None:
    async def never() -> Any:
        await asyncio.Event().wait()

    arguments: dict[str, Any] = {"url": never} if which == "url" else {"url": server.url, "headers": never}
    client = wsclient.Client(**arguments, **fast(open_timeout=50 * MS, max_attempts=2))
    with pytest.raises(wsclient.GaveUp) as caught:
        async with asyncio.timeout(5), client:
            pass
    assert client.stats.connect_attempts == 2
    cause = caught.value.__cause__
    assert isinstance(cause, TimeoutError)
    assert f"the {which} callable did not return within open_timeout" in str(cause)


@BOTH
async def test_a_wrong_accept_header_fails_the_handshake(server: FlakyServer) -> None:
    server.corrupt_handshake_next("bad_accept")
    with pytest.raises(wsclient.HandshakeError, match=r"(?i)sec-websocket-accept"):
        async with asyncio.timeout(5), wsclient.Client(server.url, **fast()):
            pass


@BOTH
async def test_a_redirect_loop_is_one_handshake_error(server: FlakyServer) -> None:
    server.redirect_next("/again", count=10)
    with pytest.raises(wsclient.HandshakeError, match="more than 10 redirects"):
        async with asyncio.timeout(5), wsclient.Client(server.url, **fast()):
            pass
    assert len(server.requests) == 10


@BOTH
async def test_a_redirect_is_followed_and_credentials_stay_with_their_origin(server: FlakyServer) -> None:
    async with FlakyServer("echo") as other:
        server.redirect_next("/moved")
        server.redirect_next(other.url + "/elsewhere")
        headers = {"Cookie": "id=1", "X-Trace": "t"}
        async with asyncio.timeout(5), wsclient.Client(server.url, headers=headers, **fast()) as client:
            await client.send("hi")
            assert await client.recv() == "hi"
        assert [r.path for r in server.requests] == ["/", "/moved"]
        assert all(r.headers.get("Cookie") == "id=1" for r in server.requests)
        assert other.requests[0].path == "/elsewhere"
        assert other.requests[0].headers.get("Cookie") is None
        assert other.requests[0].headers.get("X-Trace") == "t"
