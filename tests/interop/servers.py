"""Echo servers built on WebSocket implementations wsclient did not write, one process each.

Run as ``python servers.py --impl NAME --port PORT``: the script binds
127.0.0.1:PORT, prints ``READY <port>`` on stdout and serves until SIGTERM
(the implementation's own graceful shutdown, or the closest thing it offers)
or SIGKILL. Every server behaves the same way:

- text is echoed as text, binary as binary;
- ``close:CODE:REASON`` closes the connection with that code and reason;
- ``big:N`` sends N random bytes as one binary message, then ``sha256:<hex>`` of them;
- the subprotocol ``chat.v2`` is chosen when the client offers it;
- permessage-deflate is left at the implementation's default;
- the server pings every ``PING_INTERVAL`` seconds where the implementation
  can, with its default pong timeout (aiohttp takes ``?heartbeat=SECONDS``
  in the URL instead);
- tornado alone answers ``terminated`` with ``terminated:N``, the number of
  its connections it has sent a close frame on (its keepalive closes silently).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

PING_INTERVAL = 0.2
SHUTDOWN_TIMEOUT = 1
SUBPROTOCOL = "chat.v2"

IMPLS = (
    "aiohttp",
    "tornado",
    "uvicorn-websockets-sansio",
    "uvicorn-wsproto",
    "uvicorn-websockets",
    "hypercorn",
    "picows",
)


def command(text: str) -> tuple[str, Any]:
    """What to do with a text message: ``("echo", text)``, ``("close", (code, reason))`` or ``("big", n)``."""
    if text.startswith("close:"):
        _, code, reason = text.split(":", 2)
        return "close", (int(code), reason)
    if text.startswith("big:"):
        return "big", int(text[4:])
    return "echo", text


def random_payload(size: int) -> tuple[bytes, str]:
    """Incompressible bytes and the text message that carries their digest."""
    data = os.urandom(size)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def listening_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def ready(sock: socket.socket) -> None:
    """Tell the parent the port accepts connections, then keep stdout for nothing else."""
    print(f"READY {sock.getsockname()[1]}", flush=True)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())


# aiohttp: web.run_app handles SIGTERM itself (GracefulExit, then the runner's shutdown).


def serve_aiohttp(sock: socket.socket) -> None:
    from aiohttp import WSMsgType, web

    async def handler(request: web.Request) -> web.WebSocketResponse:
        # ?heartbeat=SECONDS: aiohttp drops a connection whose pong is late by half its heartbeat.
        heartbeat = float(request.query.get("heartbeat", PING_INTERVAL))
        ws = web.WebSocketResponse(protocols=(SUBPROTOCOL,), heartbeat=heartbeat)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type is WSMsgType.TEXT:
                what, arg = command(msg.data)
                if what == "close":
                    await ws.close(code=arg[0], message=arg[1].encode())
                elif what == "big":
                    data, digest = random_payload(arg)
                    await ws.send_bytes(data)
                    await ws.send_str(digest)
                else:
                    await ws.send_str(arg)
        return ws

    app = web.Application()
    app.router.add_get("/", handler)
    ready(sock)
    web.run_app(app, sock=sock, shutdown_timeout=SHUTDOWN_TIMEOUT, print=None, access_log=None)


# tornado: no server-wide shutdown of its own; SIGTERM stops listening and calls
# each open handler's plain close(), which sends a close frame without a code.


def serve_tornado(sock: socket.socket) -> None:
    import tornado.httpserver
    import tornado.web
    import tornado.websocket

    handlers: set[tornado.websocket.WebSocketHandler] = set()
    all_closed = asyncio.Event()

    class Echo(tornado.websocket.WebSocketHandler):
        def select_subprotocol(self, subprotocols: list[str]) -> str | None:
            return SUBPROTOCOL if SUBPROTOCOL in subprotocols else None

        def open(self, *args: str, **kwargs: str) -> None:
            handlers.add(self)

        def on_close(self) -> None:
            handlers.discard(self)
            if not handlers:
                all_closed.set()

        async def on_message(self, message: str | bytes) -> None:
            if isinstance(message, bytes):
                await self.write_message(message, binary=True)
                return
            if message == "terminated":
                # How many connections this server has sent its close frame on (tornado only).
                count = sum(1 for h in handlers if h.ws_connection is not None and h.ws_connection.server_terminated)
                await self.write_message(f"terminated:{count}")
                return
            what, arg = command(message)
            if what == "close":
                self.close(arg[0], arg[1])
            elif what == "big":
                data, digest = random_payload(arg)
                await self.write_message(data, binary=True)
                await self.write_message(digest)
            else:
                await self.write_message(arg)

    async def main() -> None:
        app = tornado.web.Application([("/", Echo)], websocket_ping_interval=PING_INTERVAL)
        server = tornado.httpserver.HTTPServer(app)
        server.add_sockets([sock])
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready(sock)
        await stop.wait()
        server.stop()
        if handlers:
            all_closed.clear()
            for handler in list(handlers):
                handler.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                    await all_closed.wait()

    asyncio.run(main())


# ASGI servers (uvicorn, hypercorn): a raw ASGI application, no framework.

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        return
    event = await receive()
    if event["type"] != "websocket.connect":
        return
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if SUBPROTOCOL in scope.get("subprotocols", []):
        accept["subprotocol"] = SUBPROTOCOL
    await send(accept)
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            return
        if event.get("bytes") is not None:
            await send({"type": "websocket.send", "bytes": event["bytes"]})
            continue
        what, arg = command(event["text"])
        if what == "close":
            await send({"type": "websocket.close", "code": arg[0], "reason": arg[1]})
            return
        if what == "big":
            data, digest = random_payload(arg)
            await send({"type": "websocket.send", "bytes": data})
            await send({"type": "websocket.send", "text": digest})
        else:
            await send({"type": "websocket.send", "text": arg})


# uvicorn: Server.serve() handles SIGTERM itself and closes open WebSockets in its shutdown.


def serve_uvicorn(sock: socket.socket, ws: str) -> None:
    import uvicorn

    config = uvicorn.Config(
        asgi_app,
        ws=ws,
        ws_ping_interval=PING_INTERVAL,
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    ready(sock)
    asyncio.run(server.serve(sockets=[sock]))


# hypercorn: hypercorn.asyncio.serve() without a shutdown trigger handles SIGTERM itself.


def serve_hypercorn(sock: socket.socket) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.websocket_ping_interval = PING_INTERVAL
    config.graceful_timeout = SHUTDOWN_TIMEOUT
    config.accesslog = None
    ready(sock)
    asyncio.run(serve(asgi_app, config))


# picows: a bare asyncio server with no shutdown of its own; SIGTERM stops
# listening and closes each connection with 1001 Going Away, then disconnects.


def serve_picows(sock: socket.socket) -> None:
    from picows import (
        WSCloseCode,
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        WSUpgradeResponse,
        WSUpgradeResponseWithListener,
        ws_create_server,
    )

    transports: set[WSTransport] = set()

    class Echo(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            transports.add(transport)

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            transports.discard(transport)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.BINARY:
                transport.send(WSMsgType.BINARY, frame.get_payload_as_bytes())
            elif frame.msg_type == WSMsgType.TEXT:
                what, arg = command(frame.get_payload_as_utf8_text())
                if what == "close":
                    transport.send_close(arg[0], arg[1].encode())
                    transport.disconnect()
                elif what == "big":
                    data, digest = random_payload(arg)
                    transport.send(WSMsgType.BINARY, data)
                    transport.send(WSMsgType.TEXT, digest.encode())
                else:
                    transport.send(WSMsgType.TEXT, arg.encode())
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()

    def factory(request: WSUpgradeRequest) -> Any:
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if SUBPROTOCOL in offered:
            response = WSUpgradeResponse.create_101_response(extra_headers={"Sec-WebSocket-Protocol": SUBPROTOCOL})
            return WSUpgradeResponseWithListener(response, Echo())
        return Echo()

    async def main() -> None:
        server = await ws_create_server(
            factory,
            sock=sock,
            enable_auto_ping=True,
            auto_ping_idle_timeout=PING_INTERVAL,
            auto_ping_reply_timeout=PING_INTERVAL,
        )
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        ready(sock)
        await stop.wait()
        server.close()
        for transport in list(transports):
            transport.send_close(WSCloseCode.GOING_AWAY)
            transport.disconnect()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_TIMEOUT):
                for transport in list(transports):
                    await transport.wait_disconnected()

    asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impl", choices=IMPLS, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = listening_socket(args.port)
    if args.impl == "aiohttp":
        serve_aiohttp(sock)
    elif args.impl == "tornado":
        serve_tornado(sock)
    elif args.impl.startswith("uvicorn-"):
        serve_uvicorn(sock, args.impl.removeprefix("uvicorn-"))
    elif args.impl == "hypercorn":
        serve_hypercorn(sock)
    elif args.impl == "picows":
        serve_picows(sock)


if __name__ == "__main__":
    main()
