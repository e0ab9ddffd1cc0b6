"""One behaviour, two transports: what a user observes through the public API is the same on websockets and picows.

Each scenario runs once per transport against the same server, and what the
application can see (how the session ended, the stats and their types, the
outcome of ``wait_closed()``, the log events, the subprotocol and response
headers, what a slow consumer holds) is compared field by field. A difference
fails the test unless ``KNOWN_DIFFERENCES`` lists it, and every entry there is
listed in the docs' transports page too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from helpers import fast
from structlog.testing import capture_logs
from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode

import wsclient
from wsclient.testing import FlakyServer

BOUND = 5.0
TRANSPORTS = ("websockets", "picows")

KNOWN_DIFFERENCES: dict[str, str] = {}
"""Observations allowed to differ between the transports, with the reason (also in the docs)."""

Scenario = Callable[[ServerConnection], Awaitable[None]]


def after_hello(act: Callable[[ServerConnection], Awaitable[None]]) -> Scenario:
    """A server that waits for the client's "go", says hello, then does ``act``."""

    async def handler(connection: ServerConnection) -> None:
        await connection.recv()
        await connection.send("hello")
        await act(connection)

    return handler


def close_with(code: int, reason: str) -> Scenario:
    async def act(connection: ServerConnection) -> None:
        await connection.close(code, reason)

    return after_hello(act)


async def _close_without_code(connection: ServerConnection) -> None:
    connection.protocol.send_close()
    connection.send_data()
    await connection.wait_closed()


async def _drop(connection: ServerConnection) -> None:
    connection.transport.abort()


async def _too_big(connection: ServerConnection) -> None:
    await connection.send("x" * 2000)
    await connection.wait_closed()


async def _not_utf8(connection: ServerConnection) -> None:
    connection.protocol.send_frame(Frame(Opcode.TEXT, b"\xff\xfe"))
    connection.send_data()
    await connection.wait_closed()


close_without_code, drop, too_big, not_utf8 = map(after_hello, (_close_without_code, _drop, _too_big, _not_utf8))


SCENARIOS: dict[str, Scenario] = {
    "1000 with a reason": close_with(1000, "bye"),
    "1001": close_with(1001, "going away"),
    "1011": close_with(1011, "oops"),
    "4000 (an application's)": close_with(4000, "app"),
    "1008 (fatal)": close_with(1008, "policy"),
    "1005 (no code)": close_without_code,
    "1006 (dropped)": drop,
    "1009 by the client": too_big,
    "1007 by the client": not_utf8,
}

_VOLATILE = re.compile(r"127\.0\.0\.1:\d+|s\d+\b")


def stable(value: Any) -> Any:
    """``value`` without what differs from run to run (ports, session ids, durations)."""
    if isinstance(value, str):
        return _VOLATILE.sub("<x>", value)
    return value


async def observe(transport: str, scenario: Scenario, reject: int | None = None) -> dict[str, Any]:
    """Run ``scenario`` against a client on ``transport`` until it stops or reconnects; say what it saw.

    With ``reject``, the server answers the handshake with that HTTP status instead.
    """
    ends: list[wsclient.SessionEnd] = []

    async def on_disconnect(end: wsclient.SessionEnd) -> None:
        ends.append(end)

    seen: dict[str, Any] = {}
    async with FlakyServer(handler=scenario, subprotocols=["chat"]) as server:
        if reject is not None:
            server.reject_next(reject, {"Retry-After": "0", "X-Why": "test"})
        client = wsclient.Client(
            server.url,
            transport=transport,  # type: ignore[arg-type]
            subprotocols=["chat"],
            max_size=1000,
            on_disconnect=on_disconnect,
            max_attempts=1,
            compression=None,
            **fast(),
        )
        with capture_logs() as events:
            async with asyncio.timeout(BOUND):
                try:
                    async with client:
                        assert client.session is not None
                        seen["subprotocol"] = client.session.subprotocol
                        seen["upgrade header"] = client.session.response_headers.get("upgrade")
                        await client.send("go")
                        seen["first message"] = await client.recv()
                        await client.wait_closed()
                    seen["outcome"] = "returned"
                except Exception as exc:
                    seen["outcome"] = f"{type(exc).__name__}: {stable(str(exc))}"
    seen["on_disconnect"] = [(end.code, end.reason, end.closed_by, end.cause) for end in ends]
    stats = client.stats
    for name in ("last_close_code", "last_close_reason", "last_closed_by", "last_cause", "sessions", "messages_in"):
        value = getattr(stats, name)
        seen[f"stats.{name}"] = (type(value).__name__, value)
    for event in events:
        if event["event"] in ("disconnected", "connected", "connect_failed", "fatal", "stopped_by_server", "gave_up"):
            fields = {k: stable(v) for k, v in event.items() if k not in ("duration", "timestamp")}
            seen[f"event {event['event']}"] = fields
    return seen


@pytest.mark.parametrize("status", [401, 403, 429, 503])
async def test_a_rejected_handshake_is_observed_alike(status: int) -> None:
    websockets_view = await observe("websockets", SCENARIOS["1000 with a reason"], reject=status)
    picows_view = await observe("picows", SCENARIOS["1000 with a reason"], reject=status)
    assert websockets_view == picows_view


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_every_close_kind_is_observed_alike(name: str) -> None:
    websockets_view = await observe("websockets", SCENARIOS[name])
    picows_view = await observe("picows", SCENARIOS[name])
    differences = {
        key: (websockets_view.get(key), picows_view.get(key))
        for key in websockets_view.keys() | picows_view.keys()
        if websockets_view.get(key) != picows_view.get(key) and f"{name}: {key}" not in KNOWN_DIFFERENCES
    }
    assert not differences, f"{name}: websockets and picows differ: {differences}"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connected_names_a_subprotocol_only_when_one_was_chosen(
    transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="wsclient")
    async with FlakyServer() as server:
        async with wsclient.Client(server.url, transport=transport, **fast()):  # type: ignore[arg-type]
            pass
        with capture_logs() as events:
            async with wsclient.Client(server.url, transport=transport, **fast()):  # type: ignore[arg-type]
                pass
    connected = next(e for e in events if e["event"] == "connected")
    assert "subprotocol" not in connected
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("connected"))
    assert "subprotocol" not in line
