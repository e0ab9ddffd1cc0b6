"""RFC 6455 conformance against a hostile server, on both transports: what a client must reject, and how.

The server is a raw asyncio server on loopback: it completes the opening
handshake, writes crafted frames, and records the first frame the client
sends back (its close frame, whose code says how the client judged them).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import struct

import pytest

import wsclient

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TRANSPORTS = ["websockets", "picows"]


class HostileServer:
    """Answers the handshake, writes ``frames``, and keeps the client's first frame as (opcode, payload)."""

    def __init__(self, frames: bytes) -> None:
        self.frames = frames
        self.received: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"sec-websocket-key:\s*(\S+)", request, re.IGNORECASE)
            assert found is not None
            accept = base64.b64encode(hashlib.sha1(found.group(1) + GUID).digest())
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + self.frames
            )
            head = await reader.readexactly(2)
            length = head[1] & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            mask = await reader.readexactly(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(await reader.readexactly(length)))
            if not self.received.done():
                self.received.set_result((head[0] & 0x0F, payload))
            # The closing handshake ends: the server answers the client's close and closes TCP.
            writer.write(b"\x88\x02" + payload[:2])
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> HostileServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def client_answer(frames: bytes, transport: str) -> tuple[int, bytes, BaseException | None]:
    """Run a client against the hostile server: the first frame it sent, and what ended it."""
    async with HostileServer(frames) as server:
        client = wsclient.Client(
            server.url,
            transport=transport,  # type: ignore[arg-type]
            heartbeat=None,
            max_attempts=1,
            compression=None,
            close_timeout=2,
        )
        error: BaseException | None = None
        try:
            async with asyncio.timeout(5), client:
                async for _message in client:
                    pass
        except wsclient.WsClientError as exc:
            error = exc
        async with asyncio.timeout(5):
            opcode, payload = await server.received
    return opcode, payload, error


def close_code(payload: bytes) -> int:
    code: int = struct.unpack("!H", payload[:2])[0]
    return code


@pytest.fixture(params=TRANSPORTS)
def on(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


RESERVED_BITS = {
    "rsv1 text": b"\xc1\x02hi",
    "rsv2 text": b"\xa1\x02hi",
    "rsv3 text": b"\x91\x02hi",
    "rsv1+2+3 binary": b"\xf2\x02hi",
    "rsv2 ping": b"\xa9\x00",
    "rsv1 fragment": b"\x41\x02hi\xc0\x02hi",
    "rsv3 after a plain message": b"\x81\x02hi\x91\x02hi",
}


@pytest.mark.parametrize("frames", RESERVED_BITS.values(), ids=RESERVED_BITS.keys())
async def test_reserved_bits_fail_the_connection_with_1002(on: str, frames: bytes) -> None:
    opcode, payload, error = await client_answer(frames, on)
    assert opcode == 0x8
    assert close_code(payload) == 1002
    assert isinstance(error, wsclient.FatalCloseError)
    assert error.code == 1002


INVALID_CLOSE = {
    f"code {code}": struct.pack("!H", code) for code in (0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000)
}
INVALID_CLOSE["one byte"] = b"\x03"


@pytest.mark.parametrize("payload", INVALID_CLOSE.values(), ids=INVALID_CLOSE.keys())
async def test_invalid_close_frames_fail_the_connection_with_1002(on: str, payload: bytes) -> None:
    opcode, answer, _error = await client_answer(bytes([0x88, len(payload)]) + payload, on)
    assert opcode == 0x8
    assert close_code(answer) == 1002


async def test_a_close_reason_that_is_not_utf8_fails_the_connection_with_1007(on: str) -> None:
    opcode, answer, _error = await client_answer(b"\x88\x03\x03\xe8\xff", on)
    assert opcode == 0x8
    assert close_code(answer) == 1007


VALID_CLOSE = {f"code {code}": code for code in (1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999)}


@pytest.mark.parametrize("code", VALID_CLOSE.values(), ids=VALID_CLOSE.keys())
async def test_valid_close_codes_are_answered_with_the_same_code(on: str, code: int) -> None:
    opcode, answer, _error = await client_answer(b"\x88\x04" + struct.pack("!H", code) + b"ok", on)
    assert opcode == 0x8
    assert close_code(answer) == code


AFTER_CLOSE = {
    "a second close": b"\x88\x02\x03\xe8\x88\x02\x03\xe8",
    "a ping": b"\x88\x02\x03\xe8\x89\x02hi",
    "a text message": b"\x88\x02\x03\xe8\x81\x02hi",
    "a frame with reserved bits": b"\x88\x02\x03\xe8\xc1\x02hi",
    "an invalid close": b"\x88\x02\x03\xe8\x88\x02\x00\x00",
}


@pytest.mark.parametrize("frames", AFTER_CLOSE.values(), ids=AFTER_CLOSE.keys())
async def test_what_follows_a_close_frame_is_not_read(on: str, frames: bytes) -> None:
    """RFC 6455, 5.5.1: after the peer's close frame nothing more is read; the answer is the clean 1000."""
    if on == "picows" and frames[4] == 0x88:
        # picows parses one frame ahead of its listener: a second close frame in the same read fails the
        # connection (1002) inside picows, before the listener has seen the first close and answered it.
        pytest.xfail("picows fails a second close frame read with the first one before its listener runs")
    opcode, answer, error = await client_answer(frames, on)
    assert opcode == 0x8
    assert close_code(answer) == 1000
    assert error is None
