"""``on_state_change``: told of every state change and outage, never in the client's way."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest
import structlog
from helpers import fast, until

import wsclient
import wsclient.sync
from wsclient import State, StateChange
from wsclient.testing import FlakyServer

BOTH = pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)


def states(changes: list[StateChange]) -> list[tuple[str, str]]:
    return [(change.old.value, change.new.value) for change in changes]


@BOTH
async def test_every_change_in_order_with_the_outage_it_starts_and_ends(server: FlakyServer) -> None:
    changes: list[StateChange] = []
    client = wsclient.Client(server.url, on_state_change=changes.append, **fast())
    async with client:
        server.drop()
        await until(lambda: len(changes) >= 4)
        assert client.state is State.OPEN
    assert states(changes) == [
        ("idle", "connecting"),
        ("connecting", "open"),
        ("open", "reconnecting"),
        ("reconnecting", "open"),
        ("open", "closing"),
        ("closing", "closed"),
    ]
    started, ended = changes[2], changes[3]
    assert started.outage_started
    assert not started.outage_ended
    assert started.outage is not None
    assert started.outage.cause is wsclient.Cause.CONNECTION_LOST
    # A copy as it stood: the record in stats has an end by now, the change still has none.
    assert started.outage.end is None
    assert client.stats.outages[0].end is not None
    assert ended.outage_ended
    assert not ended.outage_started
    assert ended.outage is not None
    assert ended.outage.duration is not None
    assert ended.outage.duration >= 0
    assert [change.outage for change in (changes[0], changes[1], changes[4], changes[5])] == [None] * 4
    assert all(a.at <= b.at for a, b in itertools.pairwise(changes))


async def test_an_outage_that_ends_with_the_client_is_reported_ended(server: FlakyServer) -> None:
    changes: list[StateChange] = []
    client = wsclient.Client(server.url, on_state_change=changes.append, **fast())
    async with client:
        await server.stop()
        await until(lambda: client.state is State.RECONNECTING)
    assert states(changes)[-3:] == [("open", "reconnecting"), ("reconnecting", "closing"), ("closing", "closed")]
    assert changes[-3].outage_started
    assert changes[-1].outage_ended
    assert changes[-1].outage is not None
    assert changes[-1].outage.start == changes[-3].outage.start  # type: ignore[union-attr]


@BOTH
async def test_a_failing_listener_is_logged_and_the_client_goes_on(server: FlakyServer) -> None:
    calls: list[StateChange] = []

    def broken(change: StateChange) -> None:
        calls.append(change)
        raise RuntimeError("listener bug")

    with structlog.testing.capture_logs() as logs:
        async with wsclient.Client(server.url, on_state_change=broken, **fast()) as client:
            server.drop()
            await until(lambda: client.stats.reconnects == 1 and client.state is State.OPEN)
            await client.send("still works")
            await server.wait_for_received(1)
    assert len(calls) == 6
    failures = [entry for entry in logs if entry["event"] == "on_state_change_failed"]
    assert len(failures) == 6
    assert failures[0]["log_level"] == "error"
    assert "listener bug" in failures[0]["error"]


@BOTH
async def test_a_slow_listener_never_holds_the_client_up(server: FlakyServer) -> None:
    release = asyncio.Event()
    seen: list[StateChange] = []

    async def slow(change: StateChange) -> None:
        await release.wait()
        seen.append(change)

    async with wsclient.Client(server.url, on_state_change=slow, **fast()) as client:
        # The listener still holds the first change: the client opened, dropped and reopened all the same.
        server.drop()
        await until(lambda: client.stats.reconnects == 1 and client.state is State.OPEN)
        assert seen == []
        release.set()
        await until(lambda: len(seen) == 4)
    # close() returned after the listener saw CLOSED.
    assert states(seen)[-1] == ("closing", "closed")
    assert len(seen) == 6


async def test_a_listener_stuck_at_close_is_given_up_after_close_timeout(server: FlakyServer) -> None:
    stuck = asyncio.Event()

    async def never_returns(change: StateChange) -> None:
        if change.new is State.CLOSED:
            await stuck.wait()

    client = wsclient.Client(server.url, on_state_change=never_returns, **fast(close_timeout=0.2))
    with structlog.testing.capture_logs() as logs:
        await client.start()
        await client.wait_open()
        await server.close_all(1000)
        async with asyncio.timeout(5):
            await client.wait_closed()
    assert client.state is State.CLOSED
    assert [entry["undelivered"] for entry in logs if entry["event"] == "on_state_change_timeout"] == [1]


async def test_close_is_bounded_by_close_timeout_whatever_the_listener_does(server: FlakyServer) -> None:
    stuck = asyncio.Event()

    async def never_returns(change: StateChange) -> None:
        await stuck.wait()

    client = wsclient.Client(server.url, on_state_change=never_returns, **fast(close_timeout=0.2))
    await client.start()
    await client.wait_open()
    started = time.monotonic()
    await client.close()
    assert time.monotonic() - started < 1.0
    assert client.state is State.CLOSED


async def test_a_client_closed_before_it_started_reports_closed() -> None:
    changes: list[StateChange] = []
    client = wsclient.Client("ws://127.0.0.1:9", on_state_change=changes.append)
    await client.close()
    assert states(changes) == [("idle", "closed")]


async def test_the_listener_is_checked_at_construction() -> None:
    with pytest.raises(TypeError, match="on_state_change must be callable"):
        wsclient.Client("ws://127.0.0.1:9", on_state_change="print")  # type: ignore[arg-type]


async def test_wait_closed_returns_after_the_listener_saw_the_end(server: FlakyServer) -> None:
    changes: list[StateChange] = []

    async def listener(change: StateChange) -> None:
        await asyncio.sleep(0)
        changes.append(change)

    client = wsclient.Client(server.url, on_state_change=listener, **fast())
    await client.start()
    await client.wait_open()
    await server.close_all(1000)
    await client.wait_closed()
    assert states(changes)[-1] == ("open", "closed")


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
def test_sync_client_runs_a_slow_listener_in_its_callback_thread(transport: str) -> None:
    server = FlakyServer("echo")
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
        release = threading.Event()
        seen: list[tuple[str, str, str]] = []

        def slow(change: StateChange) -> None:
            seen.append((threading.current_thread().name, change.old.value, change.new.value))
            ready.set()
            release.wait(10)

        with wsclient.sync.Client(server.url, on_state_change=slow, transport=transport, **fast()) as client:
            assert ready.wait(5)
            # The callback thread is blocked in the first change; the connection is not.
            loop.call_soon_threadsafe(server.drop)
            deadline = time.monotonic() + 5
            while client.stats.reconnects < 1 or client.state is not State.OPEN:
                assert time.monotonic() < deadline, "the client did not reconnect while the listener was blocked"
                time.sleep(0.005)
            assert len(seen) == 1
            release.set()
        assert [entry[1:] for entry in seen] == [
            ("idle", "connecting"),
            ("connecting", "open"),
            ("open", "reconnecting"),
            ("reconnecting", "open"),
            ("open", "closing"),
            ("closing", "closed"),
        ]
        assert {entry[0] for entry in seen} == {"wsclient-callbacks"}
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_sync_client_wants_a_plain_listener() -> None:
    async def listener(change: StateChange) -> None:
        pass

    with pytest.raises(TypeError, match="on_state_change must be a plain function"):
        wsclient.sync.Client("ws://127.0.0.1:9", on_state_change=listener)
