"""The inbox and outbox on their own: order, bounds, wake-ups and cancellation."""

from __future__ import annotations

import asyncio

import pytest

from wsclient import BufferFull, ClientClosed, Stats
from wsclient.buffers import Inbox, Outbox


async def test_inbox_is_fifo_and_applies_backpressure_when_full() -> None:
    inbox: Inbox[int] = Inbox(2)
    await inbox.put(1)
    await inbox.put(2)
    blocked = asyncio.create_task(inbox.put(3))
    await asyncio.sleep(0)
    assert not blocked.done()
    assert inbox.full()
    assert await inbox.get() == 1
    await blocked
    assert [await inbox.get(), await inbox.get()] == [2, 3]


async def test_inbox_fast_paths_keep_order_bounds_and_wake_ups() -> None:
    inbox: Inbox[str] = Inbox(2)
    assert inbox.poll() is None
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert inbox.offer("a")
    assert await reader == "a"
    assert inbox.offer("b")
    assert inbox.offer("c")
    assert not inbox.offer("refused: full")
    writer = asyncio.create_task(inbox.put("d"))
    await asyncio.sleep(0)
    assert not writer.done()
    assert inbox.poll() == "b"
    await writer
    assert [inbox.poll(), inbox.poll(), inbox.poll()] == ["c", "d", None]


async def test_inbox_close_lets_readers_drain_then_raises() -> None:
    inbox: Inbox[str] = Inbox(10)
    await inbox.put("a")
    inbox.close(ClientClosed("done"))
    inbox.close(ClientClosed("a second close keeps the first reason"))
    assert await inbox.get() == "a"
    with pytest.raises(ClientClosed, match="done"):
        await inbox.get()


async def test_inbox_close_wakes_waiting_readers_and_writers() -> None:
    inbox: Inbox[int] = Inbox(1)
    await inbox.put(0)
    writer = asyncio.create_task(inbox.put(1))
    await asyncio.sleep(0)
    inbox.close(ClientClosed())
    await writer
    assert [await inbox.get(), await inbox.get()] == [0, 1]
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert reader.done()
    with pytest.raises(ClientClosed):
        reader.result()


async def test_a_cancelled_reader_does_not_swallow_a_message() -> None:
    inbox: Inbox[str] = Inbox(10)
    first = asyncio.create_task(inbox.get())
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    await inbox.put("only")
    # The first reader was woken but is cancelled before it runs: the turn passes on.
    first.cancel()
    assert await second == "only"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_outbox_order_bound_and_drop_oldest() -> None:
    stats = Stats()
    outbox: Outbox[str] = Outbox(2, stats)
    outbox.add("a")
    outbox.add("b")
    assert stats.buffered == 2
    with pytest.raises(BufferFull, match="2 messages"):
        outbox.add("c")
    outbox.add("c", drop_oldest=True)
    assert outbox.items() == ["b", "c"]
    assert stats.dropped == 1
    assert outbox.pop() == "b"
    assert stats.buffered == 1


async def test_outbox_of_size_zero_drops_the_new_message() -> None:
    stats = Stats()
    outbox: Outbox[str] = Outbox(0, stats)
    with pytest.raises(BufferFull):
        outbox.add("x")
    outbox.add("x", drop_oldest=True)
    assert outbox.items() == []
    assert stats.dropped == 1


async def test_outbox_waiters_return_on_space_emptiness_or_close() -> None:
    outbox: Outbox[int] = Outbox(1, Stats())
    outbox.add(1)
    space = asyncio.create_task(outbox.wait_for_space())
    empty = asyncio.create_task(outbox.wait_until_empty())
    await asyncio.sleep(0)
    assert not space.done()
    assert not empty.done()
    assert outbox.pop() == 1
    await asyncio.wait_for(asyncio.gather(space, empty), 1)
    outbox.add(2)
    stuck = asyncio.create_task(outbox.wait_for_space())
    await asyncio.sleep(0)
    outbox.close()
    await asyncio.wait_for(stuck, 1)
    assert outbox.items() == [2]


async def test_an_outbox_of_tombstones_only_has_nothing_to_flush() -> None:
    # A buffered request that timed out leaves a tombstone: a sender started for it finds nothing to send and ends.
    from wsclient.buffers import Envelope

    outbox: Outbox[object] = Outbox(10, Stats())
    added: list[int] = []
    outbox.on_add = lambda: added.append(len(outbox))
    envelope = Envelope("request")
    outbox.add(envelope)
    assert outbox.expire(envelope)
    assert len(outbox) == 0
    await asyncio.wait_for(outbox.wait_until_empty(), 1)
    assert outbox.pop() is None
    outbox.add(envelope := Envelope("expired"))
    outbox.expire(envelope)
    outbox.add("live")
    assert added == [1, 1, 1]
    assert outbox.pop() == "live"  # the tombstone before it is dropped on the way
    assert outbox.queue is not None
    assert not outbox.queue
