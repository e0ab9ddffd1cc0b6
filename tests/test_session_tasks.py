"""The session's task group follows ``asyncio.TaskGroup``'s rules: each case runs on both, with the same outcome."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from wsclient.session import _Tasks

GROUPS = [pytest.param(asyncio.TaskGroup, id="asyncio"), pytest.param(_Tasks, id="session")]


async def fail_soon() -> None:
    await asyncio.sleep(0)
    raise ValueError("boom")


@pytest.mark.parametrize("group", GROUPS)
async def test_a_failing_task_cancels_the_body_and_the_others_and_raises_a_group(group: Any) -> None:
    other_cancelled = asyncio.Event()

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            other_cancelled.set()

    body_cancelled = asyncio.Event()

    async def run() -> None:
        async with group() as tasks:
            tasks.create_task(other())
            tasks.create_task(fail_soon())
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                body_cancelled.set()
                raise

    with pytest.raises(BaseExceptionGroup) as caught:
        await run()
    assert [type(error) for error in caught.value.exceptions] == [ValueError]
    assert body_cancelled.is_set()
    assert other_cancelled.is_set()
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0  # the group's own cancellation was taken back


@pytest.mark.parametrize("group", GROUPS)
async def test_leaving_waits_for_every_task(group: Any) -> None:
    finished: list[int] = []

    async def work(number: int) -> None:
        for _ in range(number):
            await asyncio.sleep(0)
        finished.append(number)

    async with group() as tasks:
        for number in (3, 1, 2):
            tasks.create_task(work(number))
    assert sorted(finished) == [1, 2, 3]
    late = work(0)
    with pytest.raises(RuntimeError):
        tasks.create_task(late)
    late.close()


@pytest.mark.parametrize("group", GROUPS)
async def test_cancelling_the_parent_cancels_the_tasks_and_propagates(group: Any) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def child() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def parent() -> None:
        async with group() as tasks:
            tasks.create_task(child())
            await asyncio.Event().wait()

    running = asyncio.create_task(parent())
    async with asyncio.timeout(5):
        await started.wait()
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert cancelled.is_set()


@pytest.mark.parametrize("group", GROUPS)
async def test_an_error_of_the_body_cancels_the_tasks_and_comes_in_the_group(group: Any) -> None:
    cancelled = asyncio.Event()

    async def child() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def run() -> None:
        async with group() as tasks:
            tasks.create_task(child())
            await asyncio.sleep(0)
            raise KeyError("body")

    with pytest.raises(BaseExceptionGroup) as caught:
        await run()
    assert [type(error) for error in caught.value.exceptions] == [KeyError]
    assert cancelled.is_set()


@pytest.mark.parametrize("group", GROUPS)
async def test_no_task_starts_once_the_group_shuts_down(group: Any) -> None:
    refused = asyncio.Event()

    async def run() -> None:
        async with group() as tasks:
            tasks.create_task(fail_soon())
            with pytest.raises(asyncio.CancelledError):
                await asyncio.Event().wait()
            late = asyncio.sleep(0)
            with pytest.raises(RuntimeError):
                tasks.create_task(late)
            late.close()
            refused.set()
            raise asyncio.CancelledError  # what the body does when the group cancelled it

    with pytest.raises(BaseExceptionGroup):
        await run()
    assert refused.is_set()
