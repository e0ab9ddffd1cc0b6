"""``wsclient listen --metrics-port``: Prometheus metrics scraped over HTTP while the feed drops and comes back."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from collections.abc import AsyncIterator

import pytest
from helpers import MS

from wsclient.cli import EXIT_OK, EXIT_USAGE
from wsclient.metrics_http import parse_address
from wsclient.testing import FlakyServer

FAST = ["--backoff-initial", "0.01", "--backoff-max", "0.05", "--open-timeout", "2"]
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """The samples of a Prometheus text exposition: name, labels, value."""
    found = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, line
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        found.append((match["name"], labels, float(match["value"])))
    return found


def sample(text: str, name: str, **labels: str) -> float:
    """The one sample named ``name`` whose labels include ``labels``."""
    matching = [v for n, ls, v in samples(text) if n == name and all(ls.get(k) == w for k, w in labels.items())]
    assert len(matching) == 1, (name, labels, matching)
    return matching[0]


def maybe(text: str, name: str, **labels: str) -> float:
    """The sample named ``name`` whose labels include ``labels``, 0 when there is none yet."""
    matching = [v for n, ls, v in samples(text) if n == name and all(ls.get(k) == w for k, w in labels.items())]
    assert len(matching) <= 1, (name, labels, matching)
    return matching[0] if matching else 0.0


async def scrape(port: int) -> str:
    """GET /metrics over HTTP/1.0; the body, after checking the status and the content type."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200") or head.startswith(b"HTTP/1.1 200"), head
    assert b"content-type: text/plain" in head.lower()
    return body.decode()


class Listen:
    """A ``wsclient listen --metrics-port 0`` subprocess and the port its metrics are served on."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.port = 0
        self.log: list[dict[str, object]] = []
        self._serving = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            self.log.append(event)
            if event.get("event") == "metrics_serving":
                self.port = int(str(event["url"]).rsplit(":", 1)[1].split("/")[0])
                self._serving.set()

    async def serving(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            await self._serving.wait()
        return self.port

    async def until(self, predicate: object, timeout: float = 10.0) -> str:
        """Scrape until ``predicate(text)`` holds; return that scrape."""
        assert callable(predicate)
        async with asyncio.timeout(timeout):
            while True:
                text = await scrape(self.port)
                if predicate(text):
                    return text
                await asyncio.sleep(10 * MS)

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code = await self.process.wait()
            await self._reader
        return code


@pytest.fixture
async def listen_factory() -> AsyncIterator[list[Listen]]:
    started: list[Listen] = []
    yield started
    for listen in started:
        if listen.process.returncode is None:
            listen.process.kill()
        await listen.process.wait()
        await listen._reader


async def start_listen(started: list[Listen], *args: str) -> Listen:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsclient",
        "listen",
        *args,
        "--quiet",
        "--log-json",
        "--no-status",
        *FAST,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    listen = Listen(process)
    started.append(listen)
    return listen


async def test_metrics_scraped_while_the_feed_drops_and_comes_back(
    stream_server: FlakyServer, listen_factory: list[Listen]
) -> None:
    listen = await start_listen(listen_factory, stream_server.url, "--metrics-port", "127.0.0.1:0")
    await listen.serving()
    server = {"server_address": "127.0.0.1", "server_port": str(stream_server.port)}

    def flowing(text: str) -> bool:
        return (
            sample(text, "wsclient_state", wsclient_state="open", **server) == 1
            and sample(text, "wsclient_messages_received_total", **server) > 0
        )

    text = await listen.until(flowing)
    assert sample(text, "wsclient_gaps_total") == 0
    assert sample(text, "wsclient_connect_attempts_total", wsclient_connect_outcome="success") == 1

    # The feed goes down: the scrape says so while it is down.
    await stream_server.stop()
    text = await listen.until(
        lambda t: (
            sample(t, "wsclient_state", wsclient_state="reconnecting") == 1
            and maybe(t, "wsclient_connect_attempts_total", error_type="ConnectionRefusedError") >= 1
        )
    )
    assert sample(text, "wsclient_state", wsclient_state="open") == 0
    assert sample(text, "wsclient_session_duration_seconds_count", error_type="connection_lost") == 1

    # It comes back: the data flows again and the gap record is counted.
    await stream_server.start()
    text = await listen.until(
        lambda t: sample(t, "wsclient_gaps_total") == 1 and sample(t, "wsclient_state", wsclient_state="open") == 1
    )
    assert sample(text, "wsclient_reconnects_total", **server) == 1
    assert sample(text, "wsclient_outage_duration_seconds_count", error_type="connection_lost") == 1
    assert sample(text, "wsclient_connect_attempts_total", wsclient_connect_outcome="success") == 2
    assert await listen.stop() == EXIT_OK


async def test_a_bad_metrics_address_is_a_usage_error(listen_factory: list[Listen]) -> None:
    listen = await start_listen(listen_factory, "ws://127.0.0.1:9", "--metrics-port", "nowhere")
    async with asyncio.timeout(10):
        assert await listen.process.wait() == EXIT_USAGE


async def test_a_port_in_use_is_a_usage_error(listen_factory: list[Listen]) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        listen = await start_listen(listen_factory, "ws://127.0.0.1:9", "--metrics-port", f"127.0.0.1:{port}")
        async with asyncio.timeout(10):
            code = await listen.process.wait()
        assert code == EXIT_USAGE
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9464", ("0.0.0.0", 9464)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:80", ("localhost", 80)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["", "x", ":80", "host:", "host:70000", "[nope]:80", "a b:80", "host:-1"])
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"PORT|port|IPv6"):
        parse_address(text)
