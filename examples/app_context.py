"""wsclient around a service's life, shared by several tasks.

A service that has nothing to do without its upstream opens the client at
startup and closes it at shutdown: one ``async with wsclient.Client(...)``
around the service's life (it returns once the first session is open), the
client stored on the service's state, and every task that needs to send
just calls ``await app.ws.send(...)``. A web app that must serve while the
upstream is down calls ``client.start()`` instead: see ``app_lifespan.py``. Sends made while the connection is down
are buffered and go out in order on the next session; at shutdown,
``client.unsent()`` says what could not be sent.

    python examples/app_context.py                    # embedded echo server, dropped twice
    python examples/app_context.py --url ws://127.0.0.1:8765
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import sys
from collections.abc import AsyncIterator

import structlog

import wsclient
from wsclient.testing import FlakyServer


class App:
    """A stand-in for your application: state that lives from startup to shutdown."""

    ws: wsclient.Client


@contextlib.asynccontextmanager
async def lifespan(app: App, url: str) -> AsyncIterator[None]:
    """Startup: connect (wait for the first session). Shutdown: flush and close with 1000."""
    async with wsclient.Client(
        url, backoff=wsclient.Backoff(initial=0.05, maximum=1.0), overflow="wait", max_buffered=256
    ) as client:
        app.ws = client
        yield
    if client.unsent():
        print(f"{len(client.unsent())} messages could not be sent")


async def worker(app: App, name: str, events: int) -> None:
    """One of the application's tasks: it sends, and never deals with the connection."""
    for n in range(events):
        await app.ws.send(json.dumps({"worker": name, "n": n}))
        await asyncio.sleep(0.002)


async def run(url: str, workers: int, events: int, server: FlakyServer | None = None) -> list[str]:
    app = App()
    echoed: list[str] = []
    async with lifespan(app, url):  # what your framework's startup/shutdown would do

        async def read() -> None:
            async for message in app.ws:
                echoed.append(message if isinstance(message, str) else message.decode())

        reader = asyncio.create_task(read())
        async with asyncio.TaskGroup() as tg:
            for index in range(workers):
                tg.create_task(worker(app, f"w{index}", events))
            if server is not None:
                for _ in range(2):
                    await server.wait_for_received(len(server.received) + events // 2)
                    server.drop()
    await asyncio.wait({reader})
    return echoed


async def main(url: str | None, workers: int, events: int) -> int:
    if url is not None:
        await run(url, workers, events)
        return 0
    async with FlakyServer("echo") as server:
        await run(server.url, workers, events, server)
    sent = [json.loads(m) for m in server.received if isinstance(m, str)]
    # A message written into a connection just before it broke may be lost (only an application
    # acknowledgement proves delivery); what arrives arrives once and in each task's order.
    in_order = all(_increasing([e["n"] for e in sent if e["worker"] == f"w{index}"]) for index in range(workers))
    print(f"{workers} tasks sent {workers * events} events through 2 drops; {len(sent)} arrived, each task's in order")
    if len(sent) < workers * events:
        print("the others were written into a connection as it broke: only an application ack proves delivery")
    print("OK" if in_order and sent else "FAILED")
    return 0 if in_order and sent else 1


def _increasing(numbers: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(numbers))


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an echo server (default: an embedded one)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--events", type=int, default=50, help="events per worker")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.url, args.workers, args.events)))
