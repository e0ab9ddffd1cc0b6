"""``FlakyServer``: a real WebSocket server on loopback that a test scripts into failing.

It drops connections abruptly, closes with any code, goes down and comes
back on the same port, rejects handshakes with an HTTP status, stalls (stops
reading, so pings go unanswered, and reads again on demand), streams sequence-numbered messages and
records everything it received. Tests of wsclient use it, and so can yours.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self, TypeVar

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .listening import stop_accepting

__all__ = ["FlakyServer", "FlakyServerFactory", "Handler", "Rejection"]

T = TypeVar("T")
Mode = Literal["echo", "stream", "silent"]
HandshakeFault = Literal["status", "stall", "bad_accept", "bad_subprotocol"]
ConnectionFault = tuple[Literal["flap", "stall", "oversized", "invalid_utf8", "flood"], int, str]
Handler = Callable[[ServerConnection], Awaitable[None]]
"""``async def handler(connection: ServerConnection) -> None``: the server's side of one connection."""


@dataclass(slots=True)
class Rejection:
    """One scripted handshake fault.

    ``kind`` is ``"status"`` (answer ``status`` with ``headers``), ``"stall"``
    (never answer), ``"bad_accept"`` (a wrong ``Sec-WebSocket-Accept``) or
    ``"bad_subprotocol"`` (a subprotocol the client did not offer).

    Attributes:
        status: The HTTP status of a ``"status"`` rejection.
        headers: Its response headers.
        body: Its response body.
        kind: ``"status"``, ``"stall"``, ``"bad_accept"`` or ``"bad_subprotocol"``.
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = "rejected\n"
    kind: HandshakeFault = "status"


class FlakyServer:
    """A scriptable WebSocket server on ``127.0.0.1``.

    ``mode`` says what a connection does: ``"echo"`` sends back what it
    receives, ``"stream"`` sends ``{"seq": n}`` every ``stream_interval``
    seconds (``n`` counts across connections, so a gap shows as a jump),
    ``"silent"`` only records. ``handler`` replaces the mode with your own
    coroutine. The port is chosen at the first start and kept across
    ``stop()``/``start()``, so a client reconnects to the same URL. With
    ``ssl`` (a server context) it serves ``wss://``.

    A handler is the server side of your bot's protocol: an ``async def
    handler(connection)`` taking a websockets
    :class:`~websockets.asyncio.server.ServerConnection`, called once per
    accepted connection (after the handshake, unless a fault scripted with
    ``*_next()`` takes that connection instead). Read with ``async for message
    in connection`` or ``await connection.recv()``, answer with ``await
    connection.send(...)``, close with ``await connection.close(code,
    reason)``; the connection closes when the handler returns, and a
    ``ConnectionClosed`` escaping it is the client leaving, not an error.
    ``drop()``, ``close_all()``, ``stall()`` and ``stop()`` work on handled
    connections too. Messages a handler reads are not recorded for it: call
    :meth:`record` with the ones ``received`` and :meth:`wait_for_received`
    should see.

    ```python
    async def orders(connection: ServerConnection) -> None:
        async for message in connection:
            server.record(message)
            order = json.loads(message)
            await connection.send(json.dumps({"id": order["id"], "status": "filled"}))


    server = FlakyServer(handler=orders)
    ```

    Args:
        mode: ``"echo"``, ``"stream"`` or ``"silent"``; ignored when ``handler`` is given.
        handler: ``async def handler(connection: ServerConnection) -> None``, run for each connection
            instead of the mode.
        stream_interval: Seconds between two messages in ``"stream"`` mode.
        port: The port to listen on; 0 picks a free one at the first start and keeps it.
        subprotocols: Subprotocols the server accepts, in order of preference.
        ssl: A server-side ``ssl.SSLContext``: serve ``wss://``.
        history: How many received messages and handshake requests are kept.

    Raises:
        ValueError: ``mode`` is not one of the three.
    """

    def __init__(
        self,
        mode: Mode = "echo",
        *,
        handler: Handler | None = None,
        stream_interval: float = 0.01,
        port: int = 0,
        subprotocols: list[str] | None = None,
        ssl: ssl_module.SSLContext | None = None,
        history: int = 100_000,
    ) -> None:
        if mode not in ("echo", "stream", "silent"):
            raise ValueError(f"mode must be 'echo', 'stream' or 'silent', got {mode!r}")
        self.mode = mode
        self.handler = handler
        self.stream_interval = stream_interval
        self.port = port
        self.subprotocols = subprotocols
        self.ssl = ssl
        self.history = history
        """How many received messages and requests are kept; older ones are forgotten (long soaks)."""
        self.received: list[str | bytes] = []
        """The messages received, in order, across connections (the last ``history`` of them)."""
        self.requests: list[Request] = []
        """The handshake requests, rejected ones included (the last ``history`` of them)."""
        self.connections: set[ServerConnection] = set()
        """The connections open now."""
        self.accepted = 0
        """Connections accepted so far."""
        self.seq = 0
        """The next sequence number ``"stream"`` mode will send."""
        self.flooded = 0
        """Messages sent by :meth:`flood_next` connections so far."""
        self._rejections: list[Rejection] = []
        self._bad_responses: dict[ServerConnection, Rejection] = {}
        self._stalled: set[ServerConnection] = set()
        self._paused: set[ServerConnection] = set()
        self._connection_faults: list[ConnectionFault] = []
        self._server: Server | None = None
        # Serialises start() and stop(): a scheduled restart may race the test's own.
        self._lifecycle = asyncio.Lock()
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("FlakyServer has no port yet: start it first")
        return f"{'wss' if self.ssl else 'ws'}://127.0.0.1:{self.port}"

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
        """Listen (again) on the port; the first start picks a free one. Idempotent, and safe to call concurrently."""
        async with self._lifecycle:
            await self._start()

    async def _start(self) -> None:
        if self._server is not None:
            return
        server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            process_request=self._process_request,
            process_response=self._process_response,
            open_timeout=None,
            ssl=self.ssl,
            subprotocols=self.subprotocols,  # type: ignore[arg-type]
            ping_interval=None,
            close_timeout=1,
            max_size=None,
            start_serving=False,
        )
        # Bound but not serving yet: kept at once, so that stop() closes it even if this start is cancelled.
        self._server = server
        self.port = server.sockets[0].getsockname()[1]
        await server.start_serving()

    async def stop(self, *, abrupt: bool = True) -> None:
        """Go down: connections are dropped (``abrupt``) or closed with 1001, and the port refuses.

        Args:
            abrupt: Drop connections without a close frame (the client sees 1006); ``False``: close with 1001.
        """
        async with self._lifecycle:
            server, self._server = self._server, None
            if server is None:
                return
            try:
                await stop_accepting(server.sockets)
            finally:
                # Closed even if this stop is cancelled: the server is no longer ours to find.
                if abrupt:
                    self.drop()
                for connection in list(self._stalled):
                    connection.transport.abort()
                server.close(close_connections=not abrupt)
            await server.wait_closed()
            self._paused.clear()
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
        """Close every open connection with ``code`` and ``reason``.

        Args:
            code: The close code.
            reason: The close reason.
        """
        await asyncio.gather(*(c.close(code, reason) for c in list(self.connections)), return_exceptions=True)

    def stall(self) -> None:
        """Stop reading on every open connection: pings go unanswered, as with a dead peer.

        The client's writes back up once the socket buffers fill; :meth:`resume` reads again.
        """
        for connection in self.connections:
            if connection not in self._paused:
                connection.transport.pause_reading()
                self._paused.add(connection)

    def resume(self) -> int:
        """Read again on the connections :meth:`stall` paused that are still open; return how many."""
        paused, self._paused = self._paused, set()
        resumed = 0
        for connection in paused:
            if not connection.transport.is_closing():
                connection.transport.resume_reading()
                resumed += 1
        return resumed

    @property
    def stalled(self) -> int:
        """Open connections that :meth:`stall` paused and :meth:`resume` has not resumed."""
        return sum(not connection.transport.is_closing() for connection in self._paused)

    def reject_next(self, status: int, headers: Mapping[str, str] | None = None, *, count: int = 1) -> None:
        """Answer the next ``count`` handshakes with HTTP ``status`` (and ``headers``) instead of upgrading.

        Args:
            status: The HTTP status, such as 401, 429 or 503.
            headers: Response headers, such as ``{"Retry-After": "1"}``.
            count: How many of the next handshakes this applies to.
        """
        self._rejections.extend(Rejection(status, dict(headers or {})) for _ in range(count))

    def stall_handshake_next(self, *, count: int = 1) -> None:
        """Read the next ``count`` handshake requests and never answer them (past any ``open_timeout``).

        Args:
            count: How many of the next handshakes this applies to.
        """
        self._rejections.extend(Rejection(0, kind="stall") for _ in range(count))

    def corrupt_handshake_next(self, kind: Literal["bad_accept", "bad_subprotocol"], *, count: int = 1) -> None:
        """Answer the next handshakes with 101 but a wrong ``Sec-WebSocket-Accept`` or an unoffered subprotocol.

        Args:
            kind: ``"bad_accept"`` (a wrong ``Sec-WebSocket-Accept``) or ``"bad_subprotocol"`` (one not offered).
            count: How many of the next handshakes this applies to.

        Raises:
            ValueError: ``kind`` is not one of the two.
        """
        if kind not in ("bad_accept", "bad_subprotocol"):
            raise ValueError(f"kind must be 'bad_accept' or 'bad_subprotocol', got {kind!r}")
        self._rejections.extend(Rejection(101, kind=kind) for _ in range(count))

    def redirect_next(self, location: str, *, status: int = 302, count: int = 1) -> None:
        """Redirect the next ``count`` handshakes to ``location``.

        Args:
            location: The ``Location`` header: where the client should go.
            status: The redirect status (301, 302, 303, 307 or 308).
            count: How many of the next handshakes this applies to.
        """
        self.reject_next(status, {"Location": location}, count=count)

    def flap_next(self, count: int, *, code: int = 1011, reason: str = "flapping") -> None:
        """Accept the next ``count`` connections, then close each at once with ``code``.

        Args:
            count: How many of the next connections this applies to.
            code: The close code.
            reason: The close reason.
        """
        self._connection_faults.extend(("flap", code, reason) for _ in range(count))

    def stall_next(self, *, count: int = 1) -> None:
        """Accept the next ``count`` connections, then neither read nor send: pings go unanswered.

        Args:
            count: How many of the next connections this applies to.
        """
        self._connection_faults.extend(("stall", 0, "") for _ in range(count))

    def send_oversized_next(self, size: int, *, count: int = 1) -> None:
        """Accept the next ``count`` connections, then send each one text message of ``size`` bytes.

        Over the client's ``max_size``, the client must fail the connection
        (1009) rather than reconnect to meet the same message again.

        Args:
            size: The message's size in bytes: more than the client's ``max_size``.
            count: How many of the next connections this applies to.
        """
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._connection_faults.extend(("oversized", size, "") for _ in range(count))

    def send_invalid_utf8_next(self, *, count: int = 1) -> None:
        """Accept the next ``count`` connections, then send each a text frame that is not valid UTF-8.

        Args:
            count: How many of the next connections this applies to.
        """
        self._connection_faults.extend(("invalid_utf8", 0, "") for _ in range(count))

    def flood_next(self, size: int = 16384, *, count: int = 1) -> None:
        """Accept the next ``count`` connections, then send ``size``-byte messages as fast as the socket takes them.

        Faster than an application that stopped reading: the client's memory
        must stay bounded by its inbox and websockets' ``max_queue``.
        :attr:`flooded` counts the messages sent.

        Args:
            size: Bytes per message.
            count: How many of the next connections this applies to.
        """
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._connection_faults.extend(("flood", size, "") for _ in range(count))

    async def send_all(self, message: str | bytes) -> None:
        """Send ``message`` on every open connection.

        Args:
            message: A ``str`` (a text frame) or ``bytes`` (a binary frame).
        """
        for connection in list(self.connections):
            with contextlib.suppress(ConnectionClosed):
                await connection.send(message)

    # Waiting, for tests

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true; ``TimeoutError`` after ``timeout`` seconds.

        Args:
            predicate: Checked now and whenever the server's state changes.
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: Not so within ``timeout``.
        """
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
        """Wait until ``accepted`` connections were accepted in total and one is open.

        Args:
            accepted: Connections accepted since the server was made.
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: Not so within ``timeout``.
        """
        await self.wait_for(lambda: self.accepted >= accepted and bool(self.connections), timeout)

    def record(self, message: str | bytes) -> None:
        """Add ``message`` to :attr:`received` and wake the waits on it (for a ``handler`` that reads messages).

        Args:
            message: A message the handler received.
        """
        _keep(self.received, message, self.history)
        self._notify()

    async def wait_for_received(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` messages were received in total.

        Args:
            count: Messages in :attr:`received` (or recorded by a handler with :meth:`record`).
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: Not so within ``timeout``.
        """
        await self.wait_for(lambda: len(self.received) >= count, timeout)

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Wait until ``count`` handshake requests arrived, rejected ones included.

        Args:
            count: Handshake requests since the server was made.
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: Not so within ``timeout``.
        """
        await self.wait_for(lambda: len(self.requests) >= count, timeout)

    async def wait_disconnected(self, timeout: float = 5.0) -> None:
        """Wait until no connection is open.

        Args:
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: Not so within ``timeout``.
        """
        await self.wait_for(lambda: not self.connections, timeout)

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    # Server side

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        _keep(self.requests, request, self.history)
        self._notify()
        if not self._rejections:
            return None
        rejection = self._rejections.pop(0)
        if rejection.kind == "stall":
            self._stalled.add(connection)
            try:
                await asyncio.shield(connection.connection_lost_waiter)
            finally:
                self._stalled.discard(connection)
            return connection.respond(503, "stalled\n")
        if rejection.kind != "status":
            self._bad_responses[connection] = rejection
            return None
        response = connection.respond(rejection.status, rejection.body)
        response.headers.update(Headers(rejection.headers))
        return response

    def _process_response(self, connection: ServerConnection, request: Request, response: Response) -> None:
        rejection = self._bad_responses.pop(connection, None)
        if rejection is None:
            return
        # Headers.__setitem__ adds a line: the right one is removed first, so the answer holds only the wrong one.
        name, value = (
            ("Sec-WebSocket-Accept", "bm90IHRoZSByaWdodCBrZXk=")
            if rejection.kind == "bad_accept"
            else ("Sec-WebSocket-Protocol", "not-offered")
        )
        if name in response.headers:
            del response.headers[name]
        response.headers[name] = value

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        self.accepted += 1
        self._notify()
        try:
            if self._connection_faults:
                await self._misbehave(connection, *self._connection_faults.pop(0))
            elif self.handler is not None:
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
            self._paused.discard(connection)
            self._notify()

    async def _misbehave(self, connection: ServerConnection, kind: str, number: int, reason: str) -> None:
        if kind == "flap":
            await connection.close(number, reason)
            return
        if kind == "stall":
            connection.transport.pause_reading()
        elif kind == "oversized":
            await connection.send("x" * number)
        elif kind == "invalid_utf8":
            # Bytes sent as a text frame: websockets does not check what it sends.
            await connection.send(b"\xff\xfe not UTF-8", text=True)
        elif kind == "flood":
            payload = "x" * number
            while True:
                await connection.send(payload)
                self.flooded += 1
        await connection.wait_closed()

    async def _record(self, connection: ServerConnection, *, echo: bool = False) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                _keep(self.received, message, self.history)
                if echo:
                    await connection.send(message)
                self._notify()

    async def _stream(self, connection: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await connection.send(json.dumps({"seq": self.seq}))
                self.seq += 1
                await asyncio.sleep(self.stream_interval)


def _keep(records: list[T], item: T, history: int) -> None:
    """Append ``item``, forgetting the oldest records beyond ``history``."""
    records.append(item)
    if len(records) > history:
        del records[: len(records) - history]


class FlakyServerFactory(Protocol):
    """What the ``flaky_server_factory`` fixture gives: start a ``FlakyServer`` made with these arguments."""

    def __call__(
        self,
        mode: Mode = "echo",
        *,
        handler: Handler | None = None,
        stream_interval: float = 0.01,
        subprotocols: list[str] | None = None,
        **options: Any,
    ) -> Awaitable[FlakyServer]:
        """Start a ``FlakyServer(mode, handler=..., ...)`` and return it; it stops when the test ends.

        Args:
            mode: As for :class:`FlakyServer`.
            handler: As for :class:`FlakyServer`.
            stream_interval: As for :class:`FlakyServer`.
            subprotocols: As for :class:`FlakyServer`.
            **options: Any other argument of :class:`FlakyServer` (``ssl``, ``port``, ``history``).
        """
        ...
