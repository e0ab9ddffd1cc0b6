"""``wsclient demo``: every scripted fault is survived and nothing is lost, and a loss would show."""

from __future__ import annotations

import asyncio
import io
import sys

from wsclient.cli.demo import run_demo


async def test_demo_survives_every_fault_and_loses_nothing() -> None:
    out = io.StringIO()
    assert await run_demo(fast=True, stdout=out)
    text = out.getvalue()
    assert text.count("[ok] fault") == 6
    assert "1006 connection_lost" in text
    assert "1001 closed" in text
    assert "1006 heartbeat_timeout" in text
    assert "1000 closed, stopped" in text
    assert "lost 0" in text
    assert "duplicates 0" in text
    assert "OK: every fault survived, nothing lost." in text


async def test_demo_reports_a_loss_when_the_server_cannot_replay_the_gap() -> None:
    out = io.StringIO()
    assert not await run_demo(fast=True, stdout=out, history=2)
    text = out.getvalue()
    assert "[FAILED]" in text
    assert "lost 0" not in text
    assert "FAILED: see the rows marked above." in text


async def test_the_demo_command_exits_0() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsclient", "demo", "--fast", stdout=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    assert process.returncode == 0
    assert b"OK: every fault survived, nothing lost." in out
