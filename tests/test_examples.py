"""Every example runs, as a subprocess, against its embedded server and against a server given by ``--url``."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import fast

import wsclient
from wsclient.testing import FlakyServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))

from counter_server import CounterServer  # noqa: E402
from jsonrpc_subscriptions import Node  # noqa: E402
from request_reply import hello  # noqa: E402


async def start_example(name: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / name),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=EXAMPLES,
    )


async def run_example(name: str, *args: str, timeout: float = 30.0) -> tuple[int, str]:
    """Run an example to its end; return its exit code and stdout (stderr joins it on failure)."""
    process = await start_example(name, *args)
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    assert process.returncode is not None
    if process.returncode != 0:
        print(err.decode(), file=sys.stderr)
    return process.returncode, out.decode()


@pytest.fixture
async def processes() -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Processes a test started; killed if the test left them running."""
    started: list[asyncio.subprocess.Process] = []
    yield started
    for process in started:
        if process.returncode is None:
            process.kill()
        await process.communicate()


async def poll(predicate: object, timeout: float = 10.0) -> None:
    """Wait for a condition outside this process (a file, another process); bounded by ``timeout``."""
    assert callable(predicate)
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - another process's progress has no event here
            await asyncio.sleep(0.02)


async def test_quickstart() -> None:
    code, out = await run_example("quickstart.py", "--drops", "1", "--restarts", "1")
    assert code == 0
    assert out.splitlines()[-1] == "OK"


BOTS = pytest.mark.parametrize("bot", ["counter_bot.py", "sync_counter_bot.py"])
COLLECTORS = pytest.mark.parametrize("collector_example", ["collector.py", "sync_collector.py"])


@BOTS
async def test_counter_bot_restores_the_counter_after_an_embedded_restart(bot: str) -> None:
    code, out = await run_example(bot, "--clicks", "3")
    assert code == 0
    assert "after the restart the server's counter is 3: OK" in out


@BOTS
async def test_counter_bot_restores_a_real_server_after_its_restart(
    processes: list[asyncio.subprocess.Process], bot: str
) -> None:
    async with CounterServer() as server:
        bot_process = await start_example(bot, "--url", server.url, "--clicks", "4")
        processes.append(bot_process)
        await poll(lambda: server.value == 4)
        await server.stop()  # the restart forgets the value...
        await server.start()
        assert server.value == 0
        await poll(lambda: server.value == 4)  # ...and the bot puts it back
        bot_process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await bot_process.wait()
    assert bot_process.returncode == 0


async def test_counter_server_serves_the_counter_until_sigterm(processes: list[asyncio.subprocess.Process]) -> None:
    server = await start_example("counter_server.py", "--port", "0")
    processes.append(server)
    assert server.stdout is not None
    async with asyncio.timeout(10):
        url = (await server.stdout.readline()).decode().split()[-1]
    async with wsclient.Client(url, **fast()) as client:
        events = [json.loads(await client.recv()) for _ in range(2)]
        assert events == [{"type": "users", "count": 1}, {"type": "value", "value": 0}]
        await client.send(json.dumps({"action": "plus"}))
        assert json.loads(await client.recv()) == {"type": "value", "value": 1}
    server.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await server.wait() == 0


@COLLECTORS
async def test_collector_records_gaps_resumes_and_stops_on_sigterm(
    tmp_path: Path, processes: list[asyncio.subprocess.Process], collector_example: str
) -> None:
    out = tmp_path / "ticks.jsonl"

    def records() -> list[dict[str, object]]:
        return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    collector = await start_example(collector_example, "--out", str(out), "--drop-every", "0.3")
    processes.append(collector)
    await poll(lambda: sum(r["type"] == "gap" for r in records()) >= 2)
    collector.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        stdout, _ = await collector.communicate()
    assert collector.returncode == 0
    assert b"collected" in stdout
    written = records()
    seqs = [r["seq"] for r in written if r["type"] == "tick"]
    assert seqs == list(range(1, len(seqs) + 1))  # resumed after every drop: nothing missing, nothing twice
    assert not [r for r in written if r["type"] == "missing"]
    gaps = [r for r in written if r["type"] == "gap"]
    assert all(g["cause"] == "connection_lost" and g["start"] <= g["end"] for g in gaps)  # type: ignore[operator]

    # Started again on the same file, it resumes after the last tick it wrote.
    code, _ = await run_example(collector_example, "--out", str(out), "--duration", "0.3")
    assert code == 0
    seqs = [r["seq"] for r in records() if r["type"] == "tick"]
    assert len(seqs) > len(written) - len(gaps)
    assert seqs == list(range(1, len(seqs) + 1))


async def test_request_reply_embedded_and_with_url_and_timeout() -> None:
    code, out = await run_example("request_reply.py", "--name", "Ada")
    assert (code, out) == (0, "Hello Ada!\n")
    async with FlakyServer(handler=hello) as server:
        code, out = await run_example("request_reply.py", "--url", server.url, "--name", "Grace")
    assert (code, out) == (0, "Hello Grace!\n")
    async with FlakyServer("silent") as server:
        code, out = await run_example("request_reply.py", "--url", server.url, "--timeout", "0.2")
    assert code == 1
    assert "no greeting within 0.2 s" in out


async def test_jsonrpc_subscriptions_embedded_and_with_url() -> None:
    code, out = await run_example("jsonrpc_subscriptions.py", "--count", "10")
    assert code == 0, out
    assert "received newHeads=10, ticks=10" in out
    sessions = [line for line in out.splitlines() if line.startswith("session ")]
    assert len(sessions) >= 2
    assert len(set(sessions)) == len(sessions)
    async with FlakyServer(handler=Node(drop_every=0).serve) as server:
        code, out = await run_example("jsonrpc_subscriptions.py", "--url", server.url, "--count", "5")
    assert code == 0, out
    assert "over 1 session(s)" in out


async def test_app_heartbeat_keeps_sessions_alive_and_notices_silence() -> None:
    code, out = await run_example("app_heartbeat.py", "--interval", "0.1", "--duration", "1.2")
    assert code == 0
    assert "OK: pings kept the sessions alive, the silent one was noticed" in out


async def test_secure_client_refuses_an_untrusted_certificate_and_trusts_the_ca() -> None:
    code, out = await run_example("secure_client.py")
    assert code == 0
    assert "default context: server certificate not trusted" in out
    assert out.splitlines()[-1] == "OK"


async def test_app_context_sends_from_several_tasks_through_drops() -> None:
    code, out = await run_example("app_context.py", "--workers", "3", "--events", "30")
    assert code == 0
    assert "3 tasks sent 90 events through 2 drops" in out
    assert out.splitlines()[-1] == "OK"


async def get_json(url: str) -> tuple[int, Any]:
    """A real HTTP GET, in a thread: the status and the JSON body."""

    def get() -> tuple[int, Any]:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())

    return await asyncio.to_thread(get)


async def health_until(url: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> dict[str, Any]:
    """Ask ``url`` until its JSON body satisfies ``predicate``; bounded by ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            status, body = await get_json(url)
            assert status == 200
            if predicate(body):
                return body
            await asyncio.sleep(0.02)


async def start_app(
    processes: list[asyncio.subprocess.Process], *args: str
) -> tuple[str, list[str], asyncio.Task[None]]:
    """Start ``app_lifespan.py`` under a real uvicorn; its /health URL, its stderr lines and the task reading them."""
    app = await start_example("app_lifespan.py", "--port", "0", *args)
    processes.append(app)
    assert app.stderr is not None
    stream = app.stderr
    stderr: list[str] = []
    async with asyncio.timeout(20):
        while "Uvicorn running on http://" not in (line := (await stream.readline()).decode()):
            assert line, f"the app ended before serving: {stderr}"
            stderr.append(line)

    async def drain() -> None:
        while line := await stream.readline():
            stderr.append(line.decode())

    return line.split("Uvicorn running on ")[1].split()[0] + "/health", stderr, asyncio.create_task(drain())


async def stop_app(app: asyncio.subprocess.Process, stderr: list[str], draining: asyncio.Task[None]) -> None:
    """Ctrl-C: uvicorn runs the lifespan's shutdown, whose ``close()`` ends the session with 1000."""
    app.send_signal(signal.SIGINT)
    async with asyncio.timeout(10):
        await app.wait()
        await draining
    # uvicorn shuts down, then raises the signal it caught again, for the parent to see.
    assert app.returncode == -signal.SIGINT
    assert any("Application shutdown complete" in line for line in stderr), stderr
    assert any(line.startswith("INFO:wsclient:") and "code=1000" in line for line in stderr), stderr


async def test_app_lifespan_serves_health_while_its_upstream_is_down_then_up(
    processes: list[asyncio.subprocess.Process],
) -> None:
    async with FlakyServer("stream", stream_interval=0.01) as upstream:
        await upstream.stop()  # down from the start, its port kept
        health, stderr, draining = await start_app(processes, "--url", upstream.url)
        status, down = await get_json(health)  # served, although the upstream refuses
        assert status == 200
        assert down["upstream"] in ("connecting", "reconnecting")
        assert down["down_since"] <= time.time()
        assert down["messages"] == 0

        await upstream.start()
        up = await health_until(health, lambda body: body["upstream"] == "open" and body["messages"] > 0)
        assert up["down_since"] is None

        stopped_at = time.time()
        await upstream.stop()
        again = await health_until(health, lambda body: body["upstream"] != "open")
        assert again["down_since"] >= stopped_at - 1.0  # the outage, not the app's start
        assert again["reconnects"] == 0

        await upstream.start()
        back = await health_until(health, lambda body: body["upstream"] == "open")
        assert back["reconnects"] == 1
        await stop_app(processes[0], stderr, draining)


async def test_app_lifespan_with_its_embedded_upstream(processes: list[asyncio.subprocess.Process]) -> None:
    health, stderr, draining = await start_app(processes)
    status, down = await get_json(health)
    assert status == 200
    assert down["upstream"] != "open"  # the embedded upstream comes up 3 s after the app
    up = await health_until(health, lambda body: body["messages"] > 0)
    assert up["upstream"] == "open"
    await stop_app(processes[0], stderr, draining)
