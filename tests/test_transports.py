"""One contract on both transports: what picows leaves to its user, wsclient does, as websockets does.

Every test here runs on each transport (``BOTH_TRANSPORTS`` in the conftest).
"""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme
from helpers import fast
from websockets.asyncio.server import ServerConnection

import wsclient
import wsclient.sync
from wsclient.testing import FlakyServer

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
