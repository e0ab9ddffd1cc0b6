"""``wsclient demo``: every scripted fault is survived and nothing is lost, and a loss would show."""

from __future__ import annotations

import asyncio
import io
import signal
import sys

import pytest

from wsclient.cli import EXIT_INTERRUPTED, EXIT_TERMINATED
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


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGINT, EXIT_INTERRUPTED)], ids=["TERM", "INT"]
)
async def test_the_demo_command_stops_cleanly_on_a_signal_with_its_exit_code(signum: signal.Signals, code: int) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wsclient", "demo", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        first = await process.stdout.readline()  # the demo runs: its server is up, the client connecting
        process.send_signal(signum)
        _, err = await process.communicate()
    assert first.startswith(b"wsclient demo:")
    assert process.returncode == code, err
    assert b"Traceback" not in err
