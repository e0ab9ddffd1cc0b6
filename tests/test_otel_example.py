"""``examples/app_metrics.py`` under a real uvicorn, and the Grafana dashboard that reads its metrics."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from wsclient.testing import FlakyServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DASHBOARD = EXAMPLES / "grafana_dashboard.json"
PROMQL_FUNCTIONS = {"rate", "increase", "sum", "max", "by", "histogram_quantile", "le"}


async def get(url: str) -> tuple[int, str]:
    """GET ``url`` (``http://host:port/path``) over HTTP/1.0; the status and the body."""
    host, _, rest = url.removeprefix("http://").partition("/")
    address, _, port = host.rpartition(":")
    reader, writer = await asyncio.open_connection(address, int(port))
    try:
        writer.write(f"GET /{rest} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


async def get_until(url: str, predicate: Callable[[int, str], bool], timeout: float = 10.0) -> tuple[int, str]:
    async with asyncio.timeout(timeout):
        while True:
            status, body = await get(url)
            if predicate(status, body):
                return status, body
            await asyncio.sleep(0.01)


def dashboard_metrics() -> set[str]:
    """The metric names the dashboard's queries read (with the exporter's suffixes)."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    variables = [v["definition"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    names: set[str] = set()
    for query in queries + variables:
        # Label names (in selectors and in ``by (...)``) are not metrics: leave them out first.
        query = re.sub(r"\{[^}]*\}|\bby \([^)]*\)", "", query)
        query = re.sub(r"label_values\((\w+), \w+\)", r"\1", query)
        names.update(re.findall(r"\b(wsclient_[a-z_]+)\b", query))
    return names


def exposed_metrics(text: str) -> set[str]:
    return {line.split("{")[0].split()[0] for line in text.splitlines() if line and not line.startswith("#")}


@pytest.fixture
async def app() -> AsyncIterator[list[tuple[asyncio.subprocess.Process, asyncio.Task[None]]]]:
    started: list[tuple[asyncio.subprocess.Process, asyncio.Task[None]]] = []
    yield started
    for process, draining in started:
        if process.returncode is None:
            process.kill()
        await process.wait()
        await draining


async def start_app(
    started: list[tuple[asyncio.subprocess.Process, asyncio.Task[None]]], *args: str
) -> tuple[str, list[str]]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "app_metrics.py"),
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        cwd=EXAMPLES,
    )
    assert process.stderr is not None
    stream = process.stderr
    lines: list[str] = []
    async with asyncio.timeout(20):
        while "Uvicorn running on http://" not in (line := (await stream.readline()).decode()):
            assert line, f"the app ended before serving: {lines}"
            lines.append(line)

    async def drain() -> None:
        while line := await stream.readline():
            lines.append(line.decode())

    started.append((process, asyncio.create_task(drain())))
    return line.split("Uvicorn running on ")[1].split()[0], lines


async def test_health_and_metrics_from_one_client_through_an_outage_and_the_dashboard_reads_them(
    app: list[tuple[asyncio.subprocess.Process, asyncio.Task[None]]],
) -> None:
    async with FlakyServer("echo") as upstream:
        base, lines = await start_app(app, "--url", upstream.url, "--ping-interval", "0.02")
        status, body = await get_until(f"{base}/health", lambda status, _: status == 200)
        assert json.loads(body)["upstream"] == "open"
        status, body = await get(f"{base}/echo?text=hello")
        assert (status, json.loads(body)) == (200, {"echo": "hello"})

        await upstream.stop()
        status, body = await get_until(f"{base}/health", lambda status, _: status == 503)
        assert json.loads(body)["upstream"] == "reconnecting"
        await upstream.start()
        status, body = await get_until(
            f"{base}/health", lambda status, body: status == 200 and json.loads(body)["last_outage"] is not None
        )
        outage = json.loads(body)["last_outage"]
        assert outage["cause"] == "connection_lost"
        assert outage["seconds"] > 0

        # A pong, after the reconnect: every instrument has data now.
        _, text = await get_until(f"{base}/metrics", lambda _, text: "wsclient_heartbeat_rtt_seconds_count" in text)
        exposed = exposed_metrics(text)
        missing = dashboard_metrics() - exposed
        assert not missing, f"the dashboard queries metrics the client does not export: {missing}"
        assert "wsclient_state{" in text
        assert "wsclient_reconnects_total" in exposed

        process, draining = app[0]
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            await process.wait()
            await draining
        assert any("upstream back after" in line for line in lines), lines


def test_the_dashboard_is_valid_json_and_reads_every_instrument() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])
    names = dashboard_metrics()
    for instrument in (
        "wsclient_messages_received_total",
        "wsclient_messages_sent_total",
        "wsclient_reconnects_total",
        "wsclient_connect_attempts_total",
        "wsclient_outbox_size",
        "wsclient_inbox_size",
        "wsclient_state",
        "wsclient_dropped_total",
        "wsclient_expired_total",
        "wsclient_session_duration_seconds_bucket",
        "wsclient_connect_duration_seconds_bucket",
        "wsclient_outage_duration_seconds_count",
        "wsclient_request_duration_seconds_bucket",
        "wsclient_heartbeat_rtt_seconds_bucket",
    ):
        assert instrument in names, instrument
