"""``FlakyServer``: a real WebSocket server on loopback that a test scripts into failing.

It drops connections abruptly, closes with any code, goes down and comes
back on the same port, rejects handshakes with an HTTP status, stalls (stops
reading, so pings go unanswered), streams sequence-numbered messages and
records everything it received. Tests of wsclient use it, and so can yours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Self

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = ["FlakyServer", "Rejection"]

Mode = Literal["echo", "stream", "silent"]
Handler = Callable[[ServerConnection], Awaitable[None]]


@dataclass(slots=True)
class Rejection:
    """One scripted handshake rejection."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = "rejected\n"


class FlakyServer:
    """A scriptable WebSocket server on ``127.0.0.1``.

    ``mode`` says what a connection does: ``"echo"`` sends back what it
    receives, ``"stream"`` sends ``{"seq": n}`` every ``stream_interval``
    seconds (``n`` counts across connections, so a gap shows as a jump),
    ``"silent"`` only records. ``handler`` replaces the mode with your own
    coroutine. The port is chosen at the first start and kept across
    ``stop()``/``start()``, so a client reconnects to the same URL.
    """

    def __init__(
        self,
        mode: Mode = "echo",
        *,
        handler: Handler | None = None,
        stream_interval: float = 0.01,
        port: int = 0,
        subprotocols: list[str] | None = None,
    ) -> None:
        if mode not in ("echo", "stream", "silent"):
            raise ValueError(f"mode must be 'echo', 'stream' or 'silent', got {mode!r}")
        self.mode = mode
        self.handler = handler
        self.stream_interval = stream_interval
        self.port = port
        self.subprotocols = subprotocols
        self.received: list[str | bytes] = []
        """Every message received, in order, across connections."""
        self.requests: list[Request] = []
        """Every handshake request, rejected ones included (path and headers)."""
        self.connections: set[ServerConnection] = set()
        """The connections open now."""
        self.accepted = 0
        """Connections accepted so far."""
        self.seq = 0
        """The next sequence number ``"stream"`` mode will send."""
        self._rejections: list[Rejection] = []
        self._server: Server | None = None
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("FlakyServer has no port yet: start it first")
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # Up and down

    async def start(self) -> None:
        """Listen (again) on the port; the first start picks a free one."""
        if self._server is not None:
            return
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            subprotocols=self.subprotocols,  # type: ignore[arg-type]
            ping_interval=None,
            close_timeout=1,
            max_size=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self, *, abrupt: bool = True) -> None:
        """Go down: connections are dropped (``abrupt``) or closed with 1001, and the port refuses."""
        server, self._server = self._server, None
        if server is None:
            return
        if abrupt:
            self.drop()
        server.close(close_connections=not abrupt)
        await server.wait_closed()
        self._notify()

    async def restart(self) -> None:
        """Go down abruptly and come back on the same port."""
        await self.stop()
        await self.start()

    # Faults on open connections

    def drop(self) -> int:
        """Abort every open connection without a close frame (the client sees 1006)."""
        for connection in list(self.connections):
            connection.transport.abort()
        return len(self.connections)

    async def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every open connection with ``code`` and ``reason``."""
        await asyncio.gather(*(c.close(code, reason) for c in list(self.connections)), return_exceptions=True)

    def stall(self) -> None:
        """Stop reading on every open connection: pings go unanswered, as with a dead peer."""
        for connection in self.connections:
            connection.transport.pause_reading()

    def reject_next(self, status: int, headers: Mapping[str, str] | None = None, *, count: int = 1) -> None:
        """Answer the next ``count`` handshakes with HTTP ``status`` (and ``headers``) instead of upgrading."""
        self._rejections.extend(Rejection(status, dict(headers or {})) for _ in range(count))

    async def send_all(self, message: str | bytes) -> None:
        """Send ``message`` on every open connection."""
        for connection in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await connection.send(message)

    # Waiting, for tests

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; ``TimeoutError`` after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not predicate():
                waiter = loop.create_future()
                self._waiters.add(waiter)
                try:
                    await waiter
                finally:
                    self._waiters.discard(waiter)

    async def wait_for_connections(self, accepted: int, timeout: float = 5.0) -> None:
        """Wait until ``accepted`` connections were accepted in total and one is open."""
        await self.wait_for(lambda: self.accepted >= accepted and bool(self.connections), timeout)

    async def wait_for_received(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` messages were received in total."""
        await self.wait_for(lambda: len(self.received) >= count, timeout)

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` handshake requests arrived, rejected ones included."""
        await self.wait_for(lambda: len(self.requests) >= count, timeout)

    async def wait_disconnected(self, timeout: float = 5.0) -> None:
        """Wait until no connection is open."""
        await self.wait_for(lambda: not self.connections, timeout)

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    # Server side

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.requests.append(request)
        self._notify()
        if not self._rejections:
            return None
        rejection = self._rejections.pop(0)
        response = connection.respond(rejection.status, rejection.body)
        response.headers.update(Headers(rejection.headers))
        return response

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        self.accepted += 1
        self._notify()
        try:
            if self.handler is not None:
                await self.handler(connection)
            elif self.mode == "stream":
                async with asyncio.TaskGroup() as tg:
                    reader = tg.create_task(self._record(connection))
                    writer = tg.create_task(self._stream(connection))
                    await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
                    reader.cancel()
                    writer.cancel()
            else:
                await self._record(connection, echo=self.mode == "echo")
        except ConnectionClosed:
            pass
        finally:
            self.connections.discard(connection)
            self._notify()

    async def _record(self, connection: ServerConnection, *, echo: bool = False) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                self.received.append(message)
                if echo:
                    await connection.send(message)
                self._notify()

    async def _stream(self, connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await connection.send(json.dumps({"seq": self.seq}))
                self.seq += 1
                await asyncio.sleep(self.stream_interval)
