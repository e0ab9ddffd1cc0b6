"""Real proxies on loopback for the tests: an HTTP CONNECT proxy (RFC 9110 9.3.6) and a SOCKS5 proxy (RFC 1928).

Each listens on 127.0.0.1, relays bytes both ways once the tunnel is up, and
records what it was asked, so a test can check what reached the proxy. Either
can be stopped (every tunnel cut) and started again on the same port, to play
a proxy that dies mid-session.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
import struct
from typing import Self

from wsclient.testing.listening import stop_accepting


class _Relay:
    """What both proxies share: the listener, the tunnels it owns, and a stop that cuts them."""

    scheme = ""

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.port = 0
        self.tunnels = 0
        """Tunnels opened so far."""
        self.targets: list[tuple[str, int]] = []
        """The host and port of every tunnel asked for, in order."""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        # The upstream connection each tunnel's task opened: its to close, even if the handshake fails after.
        self._upstreams: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    @property
    def open(self) -> int:
        """Connections open at the proxy now, either end of a tunnel counted."""
        return len(self._writers)

    def url(self, *, scheme: str | None = None, userinfo: str | None = None) -> str:
        """The proxy's URL for ``Client(proxy=...)``, with ``userinfo`` (``user:password``) if given."""
        auth = f"{userinfo}@" if userinfo else ""
        return f"{scheme or self.scheme}://{auth}127.0.0.1:{self.port}"

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen (the first start picks a free port; later ones reuse it)."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and cut every tunnel."""
        server, self._server = self._server, None
        if server is not None:
            try:
                await stop_accepting(server.sockets)
            finally:
                server.close()
        # Cut, not cancelled: asyncio's stream server reports a cancelled handler as an error.
        for writer in list(self._writers):
            writer.transport.abort()
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks)
        if server is not None:
            # Since Python 3.12 this waits for the connections too: they were cut above.
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        try:
            opened = await self._handshake(reader, writer)
            if opened is None:
                return
            upstream_reader, upstream = opened
            self.tunnels += 1
            await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            for end in (writer, self._upstreams.pop(task, None)):
                if end is not None:
                    self._writers.discard(end)
                    end.transport.abort()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        raise NotImplementedError

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        self.targets.append((host, port))
        try:
            opened = await asyncio.open_connection(host, port)
        except OSError:
            return None
        self._upstreams[asyncio.current_task()] = opened[1]  # type: ignore[index]
        self._writers.add(opened[1])
        return opened


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()


class HttpConnectProxy(_Relay):
    """An HTTP proxy that opens tunnels with ``CONNECT host:port``.

    With ``credentials``, a request without the matching ``Proxy-Authorization:
    Basic`` gets ``407``. ``status`` (a number) makes it answer every CONNECT
    with that status instead, as a failing proxy would (502, 503, ...).
    ``answer_after`` delays the answer to a CONNECT by that many seconds, as a
    slow proxy would. ``requests`` keeps the head of every CONNECT request received.
    """

    scheme = "http"

    def __init__(
        self, *, credentials: tuple[str, str] | None = None, status: int | None = None, answer_after: float = 0.0
    ) -> None:
        super().__init__(credentials=credentials)
        self.status = status
        self.answer_after = answer_after
        self.requests: list[bytes] = []

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        fields = {name.strip().lower(): value.strip() for name, _, value in (ln.partition(":") for ln in lines[1:])}
        if method != "CONNECT":
            return self._answer(writer, 405, "Method Not Allowed")
        if self.credentials is not None:
            expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
            if fields.get("proxy-authorization") != expected:
                return self._answer(writer, 407, "Proxy Authentication Required", 'Proxy-Authenticate: Basic realm="t"')
        if self.status is not None:
            return self._answer(writer, self.status, "Proxy Failure")
        if self.answer_after:
            await asyncio.sleep(self.answer_after)
        host, _, port = target.rpartition(":")
        opened = await self._connect(host.strip("[]"), int(port))
        if opened is None:
            return self._answer(writer, 502, "Bad Gateway")
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        return opened

    @staticmethod
    def _answer(writer: asyncio.StreamWriter, status: int, phrase: str, header: str = "") -> None:
        extra = f"{header}\r\n" if header else ""
        writer.write(f"HTTP/1.1 {status} {phrase}\r\n{extra}Content-Length: 0\r\n\r\n".encode())
        return None


class Socks5Proxy(_Relay):
    """A SOCKS5 proxy (RFC 1928) for CONNECT, with username/password authentication (RFC 1929) when given.

    ``names`` keeps the host names the client asked it to resolve (a
    ``socks5h://`` client sends names; a ``socks5://`` one sends addresses).
    """

    scheme = "socks5h"

    def __init__(self, *, credentials: tuple[str, str] | None = None) -> None:
        super().__init__(credentials=credentials)
        self.names: list[str] = []

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        version, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        wanted = 0x02 if self.credentials is not None else 0x00
        if version != 5 or wanted not in methods:
            writer.write(b"\x05\xff")
            return None
        writer.write(bytes([5, wanted]))
        if self.credentials is not None:
            _, length = await reader.readexactly(2)
            user = (await reader.readexactly(length)).decode()
            (length,) = await reader.readexactly(1)
            password = (await reader.readexactly(length)).decode()
            ok = (user, password) == self.credentials
            writer.write(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                return None
        _, command, _, kind = await reader.readexactly(4)
        if kind == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif kind == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
            self.names.append(host)
            host = socket.gethostbyname(host) if host == "localhost" else host
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if command != 1:
            writer.write(b"\x05\x07\x00\x01" + bytes(6))
            return None
        opened = await self._connect(host, port)
        if opened is None:
            writer.write(b"\x05\x05\x00\x01" + bytes(6))
            return None
        writer.write(b"\x05\x00\x00\x01\x7f\x00\x00\x01" + struct.pack("!H", self.port))
        await writer.drain()
        return opened
