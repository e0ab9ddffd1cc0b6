"""The counter bot of ``counter_bot.py`` without asyncio: ``wsclient.sync.Client``, plain functions, threads.

The counter server keeps its value in memory, so a restart resets it to 0.
The bot remembers the value; in ``on_connect``, a plain function run on every
fresh session, it reads the server's state and clicks ``plus``/``minus``
until the counter is back where it was.

    python examples/sync_counter_bot.py                  # embedded server, restarted once
    python examples/sync_counter_bot.py --url ws://127.0.0.1:6789 --clicks 3   # until Ctrl-C or SIGTERM
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable

import structlog
from counter_server import CounterServer
from server_thread import ServerThread

import wsclient
from wsclient.sync import Client, Session

log = structlog.get_logger("counter_bot")


class CounterBot:
    """Follows the counter's value and puts it back after the server lost it."""

    def __init__(self) -> None:
        self.value: int | None = None
        """The counter's value as the bot knows it: ``None`` until the first session."""
        self.users = 0
        self.sessions = 0
        self.restoring = False
        self._changed = threading.Condition()

    def on_connect(self, session: Session) -> None:
        """Read the server's state (users, then value) and restore the value if the server lost it."""
        while True:
            event = json.loads(session.recv(timeout=5))
            if event["type"] == "value":
                break
            self.users = event["count"]
        server_value = event["value"]
        with self._changed:
            self.sessions += 1
            if self.value is None or server_value == self.value:
                self.value = server_value
            else:
                log.info("restoring", server_value=server_value, value=self.value, session_id=session.id)
                self.restoring = True
            self._changed.notify_all()
        if self.restoring and self.value is not None:
            action = "plus" if self.value > server_value else "minus"
            for _ in range(abs(self.value - server_value)):
                session.send(json.dumps({"action": action}))

    def on_event(self, event: dict[str, int | str]) -> None:
        with self._changed:
            if event["type"] == "users":
                self.users = int(event["count"])
            elif self.restoring:
                # Our own corrective clicks coming back: the value is restored once they all did.
                self.restoring = event["value"] != self.value
            else:
                self.value = int(event["value"])
            self._changed.notify_all()

    def follow(self, client: Client) -> None:
        for message in client:
            event = json.loads(message)
            self.on_event(event)
            print(f"{event}  (users {self.users}, value {self.value})", flush=True)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise TimeoutError("the counter did not get there in time")


def click(client: Client, action: str, times: int) -> None:
    for _ in range(times):
        client.send(json.dumps({"action": action}))  # buffered if the server is down right now


def embedded(clicks: int) -> int:
    """Click, restart the server (it forgets the value), check the bot put the value back."""
    loop = ServerThread()
    server = CounterServer()
    loop.run(server.start())
    try:
        bot = CounterBot()
        backoff = wsclient.Backoff(initial=0.05, maximum=0.5)
        with Client(server.url, on_connect=bot.on_connect, backoff=backoff) as client:
            follower = threading.Thread(target=bot.follow, args=(client,))
            follower.start()
            click(client, "plus", clicks)
            bot.wait_for(lambda: bot.value == clicks)
            print(f"counter at {server.value}; restarting the server, which forgets it", flush=True)
            loop.run(server.stop())
            loop.run(server.start())
            bot.wait_for(lambda: bot.sessions == 2 and not bot.restoring)
            restored = server.value
        follower.join()  # leaving the block closed the client: the follower's loop ended
    finally:
        loop.run(server.stop())
        loop.close()
    ok = restored == clicks
    print(f"after the restart the server's counter is {restored}: {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


def remote(url: str, clicks: int) -> int:
    """Click, then follow the counter until Ctrl-C/SIGTERM, restoring it after every restart."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends the loop like Ctrl-C
    bot = CounterBot()
    try:
        with Client(url, on_connect=bot.on_connect) as client:
            click(client, "plus", clicks)
            bot.follow(client)
    except KeyboardInterrupt:
        pass  # leaving the block closed with 1000
    return 0


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running counter server (default: an embedded one)")
    parser.add_argument("--clicks", type=int, default=5, help="plus clicks to make first (default 5)")
    args = parser.parse_args()
    raise SystemExit(remote(args.url, args.clicks) if args.url else embedded(args.clicks))
