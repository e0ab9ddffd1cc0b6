"""No credential reaches any output, on either transport, whatever happens to the connection.

Every output is collected: the records of every logger of the process at DEBUG
(websockets' and picows' own included, but not the test server's), wsclient's
events through structlog or through the standard library, the ``repr`` of the
configuration, and the text of every error raised with its whole chain.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers import MS, fast, until
from structlog.testing import capture_logs

import wsclient
from wsclient.testing import FlakyServer

PASSWORD = "pa55w0rd"
TOKEN = "t0k3nvalue"
COOKIE = "c00kievalue"
API_KEY = "k3yvalue"
SERVER_COOKIE = "s3rvercookie"
SECRETS = (PASSWORD, TOKEN, COOKIE, API_KEY, SERVER_COOKIE, base64.b64encode(f"bot:{PASSWORD}".encode()).decode())
HEADERS = {"Cookie": f"id={COOKIE}", "X-Api-Key": API_KEY}


def secret_url(port: int, host: str = "127.0.0.1") -> str:
    return f"ws://bot:{PASSWORD}@{host}:{port}/feed?token={TOKEN}&access_token={TOKEN}&page=1"


class _Everything(logging.Handler):
    """Keeps the full text of every record: message, extra fields, traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self.names: set[str] = set()
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        # The test server is not the client: its own logs show what it received.
        if record.name.startswith("websockets.server"):
            return
        self.names.add(record.name)
        self.texts.append(self.format(record))
        self.texts.append(repr({k: v for k, v in vars(record).items() if k not in ("exc_info", "exc_text")}))


@pytest.fixture
def everything() -> Iterator[_Everything]:
    """Every logger of the process at DEBUG into one handler, as an application debugging an outage would set it."""
    root = logging.getLogger()
    handler = _Everything()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def error_text(exc: BaseException) -> str:
    """str, repr and traceback of an error and of everything chained to it."""
    parts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        # Not its attributes: HandshakeRejected.headers holds the response's headers on purpose.
        parts += [str(current), repr(current)]
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
    return "\n".join(parts)


def assert_clean(outputs: list[str]) -> None:
    dump = "\n".join(outputs)
    for secret in SECRETS:
        assert secret not in dump, (
            f"{secret!r} leaked: {dump[max(dump.find(secret) - 300, 0) : dump.find(secret) + 100]}"
        )


async def _expect_error(client: wsclient.Client[Any], outputs: list[str]) -> BaseException:
    outputs.append(repr(client.config))
    try:
        async with asyncio.timeout(10):
            async with client:
                await client.recv()
    except Exception as exc:
        outputs.append(error_text(exc))
        return exc
    raise AssertionError("the client ended without an error")


@pytest.fixture
async def flaky() -> AsyncIterator[FlakyServer]:
    async with FlakyServer("echo") as server:
        yield server


async def _run_scenarios(server: FlakyServer, outputs: list[str]) -> None:
    url = secret_url(server.port)
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=30 * MS)

    # A rejection that passes (with the server's cookie), a stalled session ended by the heartbeat,
    # a reconnect, a message over max_size (1009): every event of a session's life.
    server.reject_next(503, {"Retry-After": "0", "Set-Cookie": f"id={SERVER_COOKIE}"})
    server.stall_next()
    client = wsclient.Client(url, headers=HEADERS, max_size=1024, **fast(heartbeat=heartbeat))
    outputs.append(repr(client.config))
    async with asyncio.timeout(10):
        async with client:
            await until(lambda: client.stats.reconnects >= 1 and client.state is wsclient.State.OPEN)
            server.send_oversized_next(4096)
            server.drop()
            with pytest.raises(wsclient.FatalCloseError) as caught:
                await client.wait_closed()
    outputs.append(error_text(caught.value))
    assert caught.value.code == 1009

    # A fatal rejection, a bad handshake answer, a redirect loop: errors raised at the first connect.
    server.reject_next(401, {"Set-Cookie": f"id={SERVER_COOKIE}", "WWW-Authenticate": "Basic"})
    rejected = await _expect_error(wsclient.Client(url, headers=HEADERS, **fast()), outputs)
    assert isinstance(rejected, wsclient.HandshakeRejected)
    server.corrupt_handshake_next("bad_accept")
    assert isinstance(
        await _expect_error(wsclient.Client(url, headers=HEADERS, **fast()), outputs), wsclient.HandshakeError
    )
    server.redirect_next(f"/feed?token={TOKEN}&again=1", count=10)  # websockets follows 10
    assert isinstance(
        await _expect_error(wsclient.Client(url, headers=HEADERS, **fast()), outputs), wsclient.HandshakeError
    )

    # Refused, and a name that does not resolve: retried, then given up.
    refused = secret_url(1)
    gave_up = await _expect_error(wsclient.Client(refused, headers=HEADERS, **fast(max_attempts=2)), outputs)
    assert isinstance(gave_up, wsclient.GaveUp)
    unknown = secret_url(80, host="no-such-host.invalid")
    gave_up = await _expect_error(wsclient.Client(unknown, headers=HEADERS, **fast(max_attempts=1)), outputs)
    assert isinstance(gave_up, wsclient.GaveUp)

    # A url callable that returns what cannot be sent, one whose headers cannot be.
    bad_url = f"ws://bot:{PASSWORD}@127.0.0.1:{server.port}/feed?token={TOKEN}#fragment"
    bad = await _expect_error(wsclient.Client(lambda: bad_url, **fast()), outputs)
    assert isinstance(bad, wsclient.CallbackError)
    bad = await _expect_error(wsclient.Client(url, headers=lambda: {"X-Api-Key": f"{API_KEY}\r\n"}, **fast()), outputs)
    assert isinstance(bad, wsclient.CallbackError)

    # A clean close by the application.
    async with wsclient.Client(url, headers=HEADERS, **fast()) as client:
        await client.send("hello")
        assert await client.recv() == "hello"
    outputs.append(repr(client.config))


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
@pytest.mark.parametrize("events_to", ["structlog", "logging"])
async def test_no_secret_in_any_output(
    flaky: FlakyServer, everything: _Everything, events_to: str, transport: str
) -> None:
    outputs: list[str] = []
    if events_to == "structlog":
        with capture_logs() as events:
            await _run_scenarios(flaky, outputs)
        outputs.append(repr(events))
        names = {e["event"] for e in events}
        assert {"connect_failed", "retrying", "connected", "heartbeat_timeout", "disconnected", "fatal"} <= names
    else:
        await _run_scenarios(flaky, outputs)
        assert "wsclient" in everything.names
    outputs += everything.texts
    # The libraries' own loggers did log the handshakes: what they logged was redacted.
    assert f"{transport}.client" in {name.rpartition(".")[0] or name for name in everything.names} | everything.names
    assert_clean(outputs)
    # The credentials did reach the server, where they belong.
    sent = [r.headers.get("Authorization") for r in flaky.requests]
    assert sent
    assert all(value == f"Basic {base64.b64encode(f'bot:{PASSWORD}'.encode()).decode()}" for value in sent)
