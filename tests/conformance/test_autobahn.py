"""Autobahn|Testsuite against wsclient on both transports (tests/conformance/run_autobahn.py, its CI run)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
AUTOBAHN_PYTHON = HERE.parents[1] / ".autobahn-venv" / "bin" / "python"


@pytest.mark.timeout(900)
@pytest.mark.skipif(
    not AUTOBAHN_PYTHON.exists(),
    reason=f"Autobahn|Testsuite's Python 2.7 environment is missing ({AUTOBAHN_PYTHON}): "
    "tests/conformance/install.sh makes it, as .ci/run does",
)
async def test_autobahn_fuzzing_server_finds_no_failure_raw_websockets_does_not_share() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "run_autobahn.py"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    lines = [line for line in text.splitlines() if not line.startswith("Running test case")]
    assert process.returncode == 0, "\n".join(lines[-60:])
