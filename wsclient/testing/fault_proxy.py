"""``FaultProxy``: a TCP proxy on loopback that injects network faults while it runs.

Put it between a client and any server (one written in another language
too) and switch faults on and off from a test: reset every connection,
blackhole traffic (the half-open connection of a dead NAT or a sleeping
laptop), stop reading what clients send (a peer that no longer reads, so
the client's writes back up), add latency, throttle, slice writes into tiny
pieces, refuse new connections, cut a connection after N bytes. Every fault can also be
scheduled with :meth:`FaultProxy.schedule`; a scheduled fault that raises is
reported by :meth:`FaultProxy.check`, :meth:`FaultProxy.stop` and leaving
``async with``, never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import Self

from .listening import stop_accepting

__all__ = ["FaultProxy"]

_CHUNK = 65536


class _Pipe:
    """One proxied connection: the client's socket, the upstream socket and two pumps."""

    def __init__(self, proxy: FaultProxy, client: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.upstream_writer: asyncio.StreamWriter | None = None
        self.forwarded = 0
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        proxy = self.proxy
        # Both sockets are released on every way out: cancelled (stop()) while still connecting upstream too.
        try:
            try:
                up_reader, self.upstream_writer = await asyncio.open_connection(
                    proxy.upstream_host, proxy.upstream_port
                )
            except OSError:
                return
            if self.client_writer.is_closing():
                # Reset (or stopped) while connecting upstream: nothing to pump.
                return
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(self.client_reader, self.upstream_writer, proxy._reading))
                tg.create_task(self._pump(up_reader, self.client_writer, proxy._open))
        except* (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.reset()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reading: asyncio.Event) -> None:
        proxy = self.proxy
        while True:
            await proxy._open.wait()
            # Not reading leaves what the peer sends in the socket buffers, until its writes wait.
            await reading.wait()
            data = await reader.read(_CHUNK)
            if not data:
                # Half-close: pass the EOF on, as the peer did.
                if writer.can_write_eof() and not writer.is_closing():
                    writer.write_eof()
                return
            await proxy._open.wait()
            if proxy.latency:
                await asyncio.sleep(proxy.latency)
            size = proxy.slice_size or len(data)
            for start in range(0, len(data), size):
                piece = data[start : start + size]
                if proxy.cut_after is not None and self.forwarded + len(piece) > proxy.cut_after:
                    self.reset()
                    return
                if proxy.bandwidth:
                    await asyncio.sleep(len(piece) / proxy.bandwidth)
                writer.write(piece)
                await writer.drain()
                self.forwarded += len(piece)
                proxy.bytes_forwarded += len(piece)

    def reset(self) -> None:
        """Abort both sockets with an RST, not a FIN."""
        for writer in (self.client_writer, self.upstream_writer):
            if writer is None or writer.is_closing():
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    """A fault-injecting TCP proxy from ``127.0.0.1:port`` to ``upstream_host:upstream_port``.

    Faults are attributes and methods you change while the proxy runs:
    ``latency`` (seconds per chunk), ``bandwidth`` (bytes per second),
    ``slice_size`` (bytes per write), ``cut_after`` (bytes per connection
    before it is reset), :meth:`blackhole`/:meth:`restore`,
    :meth:`stop_reading`/:meth:`resume_reading`, :meth:`refuse`/
    :meth:`accept`, :meth:`reset`. :meth:`clear` switches every fault off.

    A fault run by :meth:`schedule` that raises is kept, not lost in a
    fire-and-forget task: :meth:`check` raises what was kept so far, and
    :meth:`stop` (so leaving ``async with``) raises the rest, each time as an
    ``ExceptionGroup``. When the ``async with`` block itself raised, that
    error is left as it is and the failed faults are added to it as notes.

    Args:
        upstream_port: The port of the server behind the proxy.
        upstream_host: The host of the server behind the proxy.
        port: The port to listen on; 0 picks a free one at the first start and keeps it.
    """

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *, port: int = 0) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = port
        self.latency = 0.0
        self.bandwidth = 0.0
        self.slice_size = 0
        self.cut_after: int | None = None
        self.bytes_forwarded = 0
        """Bytes forwarded in both directions, over all connections."""
        self.accepted = 0
        """Connections accepted (and proxied) so far."""
        self.resets = 0
        """Connections reset by :meth:`reset`."""
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.Server | None = None
        self._open = asyncio.Event()
        self._open.set()
        self._reading = asyncio.Event()
        self._reading.set()
        self._refusing = False
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[object]] = set()
        self._failures: list[Exception] = []
        self._waiters: set[asyncio.Future[None]] = set()
        # Serialises starting and closing the listener: a scheduled accept may race clear() or stop().
        self._listener_lock = asyncio.Lock()

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>``: the address a client should use."""
        return f"ws://127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        """Connections open through the proxy now."""
        return len(self._pipes)

    @property
    def scheduled(self) -> int:
        """Scheduled faults that have not finished yet: waiting for their time, or still running."""
        return len(self._timers) + len(self._tasks)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            await self.stop()
        except ExceptionGroup as failed:
            if exc is None:
                raise
            for failure in failed.exceptions:
                exc.add_note(f"FaultProxy: a scheduled fault also failed: {failure!r}")

    async def start(self) -> None:
        """Listen on the port (the first start picks a free one); idempotent, and safe to call concurrently.

        While :meth:`refuse` is in effect it does nothing: :meth:`accept` ends that.
        """
        async with self._listener_lock:
            await self._listen()

    async def _listen(self) -> None:
        if self._server is not None or self._refusing:
            return
        # Not serving yet: once the socket is bound, the server is ours to close, even if
        # this task is cancelled while it starts serving.
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, start_serving=False)
        self.port = self._server.sockets[0].getsockname()[1]
        await self._server.start_serving()

    async def _close_listener(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            try:
                await stop_accepting(server.sockets)
            finally:
                # The listening socket closes here. Not ``wait_closed()``: since Python 3.12 it also waits
                # for every connection accepted, which refuse() keeps open and stop() resets only after.
                server.close()

    async def stop(self) -> None:
        """Stop listening, cancel scheduled faults and reset every connection.

        Raises an ``ExceptionGroup`` of the scheduled faults that failed and
        were not yet raised by :meth:`check`.
        """
        # A scheduled fault still running (a blackhole with a sleep, say) is cancelled, not awaited;
        # one that schedules another while it is cancelled is caught by the next round.
        while self._timers or self._tasks:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        async with self._listener_lock:
            self._refusing = False
            await self._close_listener()
        self._open.set()
        self._reading.set()
        pipes = [pipe.task for pipe in self._pipes if pipe.task is not None]
        self.reset()
        if pipes:
            await asyncio.wait(pipes)
        self.check()

    def check(self) -> None:
        """Raise an ``ExceptionGroup`` of the scheduled faults that failed since the last check, if any."""
        failures, self._failures = self._failures, []
        if failures:
            raise ExceptionGroup(f"{len(failures)} scheduled fault(s) of the FaultProxy failed", failures)

    # Faults

    def reset(self) -> int:
        """Reset every open connection (RST both ways); return how many."""
        pipes = list(self._pipes)
        for pipe in pipes:
            pipe.reset()
        self.resets += len(pipes)
        return len(pipes)

    def blackhole(self) -> None:
        """Forward nothing in either direction, keeping every socket open."""
        self._open.clear()

    def restore(self) -> None:
        """End a blackhole: what was held back flows again."""
        self._open.set()

    @property
    def blackholed(self) -> bool:
        return not self._open.is_set()

    def stop_reading(self) -> None:
        """Stop reading what clients send, while what the server sends still flows.

        To the client the server looks alive but no longer reads: its pings
        go unanswered and, once the socket buffers are full, its writes wait.
        """
        self._reading.clear()

    def resume_reading(self) -> None:
        """Read what clients send again: what was held back flows on."""
        self._reading.set()

    @property
    def reading(self) -> bool:
        """Whether what clients send is read and forwarded (see :meth:`stop_reading`)."""
        return self._reading.is_set()

    async def refuse(self) -> None:
        """Close the listening socket: new connections are refused, open ones go on."""
        async with self._listener_lock:
            self._refusing = True
            await self._close_listener()

    async def accept(self) -> None:
        """Listen again on the same port after :meth:`refuse`."""
        async with self._listener_lock:
            self._refusing = False
            await self._listen()

    @property
    def refusing(self) -> bool:
        return self._refusing

    async def clear(self) -> None:
        """Switch every fault off."""
        self.latency = 0.0
        self.bandwidth = 0.0
        self.slice_size = 0
        self.cut_after = None
        self.restore()
        self.resume_reading()
        if self._refusing:
            await self.accept()

    def schedule(self, delay: float, fault: Callable[[], object]) -> asyncio.TimerHandle:
        """Run ``fault()`` after ``delay`` seconds (a coroutine it returns is run as a task of the proxy).

        If it raises, the error is kept for :meth:`check` and :meth:`stop`;
        :meth:`stop` cancels what has not fired or not finished yet.

        Args:
            delay: Seconds from now.
            fault: A callable, such as ``proxy.reset`` or ``lambda: server.close_all(1012)``.

        Returns:
            The timer, to cancel the fault before it runs.
        """
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(handle)
            try:
                result = fault()
            except Exception as exc:
                self._failures.append(exc)
                return
            if asyncio.iscoroutine(result):
                task: asyncio.Task[object] = loop.create_task(result)
                self._tasks.add(task)
                task.add_done_callback(self._fault_done)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)
        return handle

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` is true, checked whenever a connection opens or ends.

        Args:
            predicate: Checked now and whenever a connection opens or ends.
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
        """Wait until ``accepted`` connections reached the proxy in total.

        Args:
            accepted: Connections accepted since the proxy was made.
            timeout: Seconds to wait at most.

        Raises:
            TimeoutError: Not so within ``timeout``.
        """
        await self.wait_for(lambda: self.accepted >= accepted, timeout)

    def _fault_done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        # Retrieving it is what keeps the loop from reporting "exception was never retrieved".
        exc = task.exception()
        if isinstance(exc, Exception):
            self._failures.append(exc)

    def _notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing or self._server is None:
            # Accepted just before the listener closed (refuse() or stop()): the connection is refused.
            writer.transport.abort()
            return
        self.accepted += 1
        self._notify()
        pipe = _Pipe(self, (reader, writer))
        pipe.task = asyncio.current_task()
        self._pipes.add(pipe)
        try:
            await pipe.run()
        finally:
            self._pipes.discard(pipe)
            self._notify()
