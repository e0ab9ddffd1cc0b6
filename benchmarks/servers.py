"""Benchmark servers, run in a separate process so that the server side is never the bottleneck.

``blast``: after the handshake, writes prebuilt frames as fast as the socket
takes them (``/SIZE/COUNT`` in the path), then closes with 1000.
``sink``: counts the bytes of the client's frames without parsing them and
answers ``done`` once ``/FRAME_BYTES/COUNT`` bytes arrived.
``echo``: a websockets echo server, for round trips and idle connections.
``storm``: a websockets server that notes when each handshake arrives;
``/stats`` answers those times (``time.monotonic()``, shared by processes).

Run as ``python -m benchmarks.servers KIND``; it prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

CHUNK_FRAMES = 512


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[ServerProtocol, Request]:
    """Run the opening handshake with websockets' sans-I/O protocol, without extensions."""
    protocol = ServerProtocol()
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed during handshake")
        protocol.receive_data(data)
        events = protocol.events_received()
        if events:
            request = events[0]
            assert isinstance(request, Request)
            break
    protocol.send_response(protocol.accept(request))
    for data in protocol.data_to_send():
        writer.write(data)
    await writer.drain()
    return protocol, request


CLOSE_FRAME = Frame(Opcode.CLOSE, Close(1000, "").serialize()).serialize(mask=False)


def raw_server(body: Callable[[asyncio.StreamReader, asyncio.StreamWriter, Request], Awaitable[bytes]]) -> Any:
    """A stream handler: handshake, ``body``, then its last bytes and a close 1000.

    After the client's close frame the server closes TCP first, as RFC 6455 says.
    """

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            _, request = await handshake(reader, writer)
            writer.write(await body(reader, writer, request) + CLOSE_FRAME)
            await writer.drain()
            await reader.read(1 << 16)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    return handler


async def blast_frames(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request) -> bytes:
    _, size, count = request.path.split("/")
    frame = Frame(Opcode.TEXT, b"x" * int(size)).serialize(mask=False)
    chunk = frame * CHUNK_FRAMES
    full, rest = divmod(int(count), CHUNK_FRAMES)
    for _ in range(full):
        writer.write(chunk)
        await writer.drain()
    return frame * rest


async def sink_bytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request) -> bytes:
    _, frame_bytes, count = request.path.split("/")
    expected = int(frame_bytes) * int(count)
    received = 0
    while received < expected:
        data = await reader.read(1 << 20)
        if not data:
            raise ConnectionError("client left before sending everything")
        received += len(data)
    return Frame(Opcode.TEXT, b"done").serialize(mask=False)


async def echo(connection: ServerConnection) -> None:
    async for message in connection:
        await connection.send(message)


ATTEMPTS: list[float] = []


def note_attempt(connection: ServerConnection, request: Request) -> None:
    ATTEMPTS.append(time.monotonic())


async def storm(connection: ServerConnection) -> None:
    if connection.request is not None and connection.request.path == "/stats":
        await connection.send(json.dumps(ATTEMPTS))
    await connection.wait_closed()


async def main(kind: str, port: int) -> None:
    if kind in ("echo", "storm"):
        async with serve(
            echo if kind == "echo" else storm,
            "127.0.0.1",
            port,
            compression=None,
            ping_interval=None,
            max_size=None,
            backlog=4096,
            process_request=note_attempt if kind == "storm" else None,
        ) as server:
            print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
            await server.serve_forever()
    else:
        handler = raw_server(blast_frames if kind == "blast" else sink_bytes)
        raw = await asyncio.start_server(handler, "127.0.0.1", port, backlog=4096)
        print(f"PORT {raw.sockets[0].getsockname()[1]}", flush=True)
        async with raw:
            await raw.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("kind", choices=["blast", "sink", "echo", "storm"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.kind, args.port))
    sys.exit(0)
