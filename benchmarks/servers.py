"""Benchmark servers, run in a separate process so that the server side is never the bottleneck.

``blast``: after the handshake, writes prebuilt frames as fast as the socket
takes them (``/SIZE/COUNT`` in the path), then closes with 1000.
``sink``: counts the bytes of the client's frames without parsing them and
answers ``done`` once ``/FRAME_BYTES/COUNT`` bytes arrived.
``echo``: a websockets echo server, for round trips and idle connections.
``storm``: a websockets server that notes when each handshake arrives;
``/stats`` answers those times (``time.monotonic()``, shared by processes).
``scale``: a picows server (frames parsed in C, about 2 KiB a connection) that
holds thousands of idle connections, answers pings, and notes when each
handshake arrives like ``storm``; it listens on ``--hosts`` (several loopback
addresses when one runs short of ports) with a listen backlog of
``SCALE_BACKLOG``, and prints ``PORT <n> UP <time.monotonic()>``.

Run as ``python -m benchmarks.servers KIND``; it prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
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


SCALE_BACKLOG = 4096
"""The ``scale`` server's listen backlog: Linux caps it at ``net.core.somaxconn`` (4096 by default)."""


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def scale_server(hosts: list[str], port: int) -> None:
    """Hold idle picows connections on every address of ``hosts``; ``/stats`` answers the handshake times."""
    from picows import WSListener, WSMsgType, WSUpgradeRequest, ws_create_server

    class Idle(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    class Stats(Idle):
        def on_ws_connected(self, transport: Any) -> None:
            transport.send(WSMsgType.TEXT, json.dumps(ATTEMPTS).encode())

    def listener(request: WSUpgradeRequest) -> WSListener:
        if request.path == b"/stats":
            return Stats()
        ATTEMPTS.append(time.monotonic())
        return Idle()

    limit = raise_file_limit()
    # Pings are answered by picows itself (enable_auto_pong); the server sends none of its own.
    # Port 0 would give every address a port of its own: the first one's is taken for the others.
    first = await ws_create_server(listener, hosts[0], port, backlog=SCALE_BACKLOG, reuse_address=True)
    port = first.sockets[0].getsockname()[1]
    servers = [first]
    for host in hosts[1:]:
        servers.append(await ws_create_server(listener, host, port, backlog=SCALE_BACKLOG, reuse_address=True))
    print(f"PORT {port} UP {time.monotonic()} NOFILE {limit}", flush=True)
    async with contextlib.AsyncExitStack() as stack:
        for server in servers:
            await stack.enter_async_context(server)
        await first.serve_forever()


async def main(kind: str, port: int, hosts: list[str] | None = None) -> None:
    if kind == "scale":
        await scale_server(hosts or ["127.0.0.1"], port)
    elif kind in ("echo", "storm"):
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
    parser.add_argument("kind", choices=["blast", "sink", "echo", "storm", "scale"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hosts", nargs="+", help="addresses to listen on (scale only; default 127.0.0.1)")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.kind, args.port, args.hosts))
    sys.exit(0)
