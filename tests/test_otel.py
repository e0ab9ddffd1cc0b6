"""``wsclient.otel``: every instrument and span, read back through the OpenTelemetry SDK's in-memory reader."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers import MS, fast, until
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from websockets.asyncio.server import ServerConnection

import wsclient
import wsclient.sync
from wsclient import State
from wsclient.otel import error_type, instrument, server_attributes
from wsclient.testing import FlakyServer

BOTH = pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)

Point = tuple[dict[str, Any], Any]


class Telemetry:
    """An SDK meter provider with an in-memory reader and a tracer provider with an in-memory exporter."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))

    def metrics(self) -> dict[str, list[Point]]:
        """Every data point collected now, by instrument name: (attributes, value or histogram point)."""
        found: dict[str, list[Point]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                assert scope.scope.name == "wsclient"
                for metric in scope.metrics:
                    points = found.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        value = point.value if isinstance(point, NumberDataPoint) else point
                        points.append((dict(point.attributes or {}), value))
        return found

    def finished(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


async def echo_unless_held(connection: ServerConnection) -> None:
    """Echo every message except those that ask to be held (a request that will time out)."""
    async for message in connection:
        if "hold" not in str(message):
            await connection.send(message)


@pytest.fixture
async def rpc_server() -> AsyncIterator[FlakyServer]:
    async with FlakyServer(handler=echo_unless_held) as flaky:
        yield flaky


def value(points: list[Point], **attributes: Any) -> Any:
    """The one value whose attributes include ``attributes``."""
    matching = [v for a, v in points if all(a.get(k) == w for k, w in attributes.items())]
    assert len(matching) == 1, (attributes, points)
    return matching[0]


def histogram(points: list[Point], **attributes: Any) -> list[HistogramDataPoint]:
    return [v for a, v in points if all(a.get(k) == w for k, w in attributes.items())]


@BOTH
async def test_every_instrument_through_a_session_a_drop_a_reconnect_requests_drops_and_expiries(
    rpc_server: FlakyServer, telemetry: Telemetry
) -> None:
    server = {"server.address": "127.0.0.1", "server.port": rpc_server.port}
    client = wsclient.Client(
        rpc_server.url,
        reply_key=wsclient.json_field("id"),
        max_buffered=1,
        overflow="drop_oldest",
        **fast(heartbeat=wsclient.Heartbeat(interval=10 * MS, timeout=1.0)),
    )
    handle = instrument(client, meter_provider=telemetry.meter_provider, tracer_provider=telemetry.tracer_provider)
    tracer = telemetry.tracer_provider.get_tracer("app")
    async with client:
        # A session: three messages each way, a request answered and one that times out, pongs.
        for n in range(3):
            await client.send(json.dumps({"n": n}))
        for _ in range(3):
            await client.recv()
        with tracer.start_as_current_span("caller"):
            await client.request(json.dumps({"id": 1}), key=1)
        with pytest.raises(wsclient.RequestTimeout):
            await client.request(json.dumps({"id": 2, "hold": True}), key=2, timeout=20 * MS)
        await until(lambda: len(histogram(telemetry.metrics().get("wsclient.heartbeat.rtt", []))) > 0)
        # A drop, and a reconnect at once.
        rpc_server.drop()
        await until(lambda: client.stats.reconnects == 1 and client.state is State.OPEN)
        # Down for a while: attempts fail, a buffered message is dropped, one expires.
        await rpc_server.stop()
        await until(lambda: client.stats.connect_attempts >= 4)
        await client.send("expires", ttl=MS)
        await until(lambda: client.stats.expired == 1)
        await client.send("dropped")
        await client.send("kept")
        assert client.stats.dropped == 1
        seen = telemetry.metrics()
        assert value(seen["wsclient.outbox.size"], **server) == 1
        assert value(seen["wsclient.state"], **{"wsclient.state": "reconnecting"}) == 1
        assert value(seen["wsclient.state"], **{"wsclient.state": "open"}) == 0
        await rpc_server.start()
        await until(lambda: client.stats.reconnects == 2 and client.state is State.OPEN)
        assert await client.recv() == "kept"
    stats = client.stats
    seen = telemetry.metrics()

    # Counters and gauges, read from client.stats at collection.
    assert value(seen["wsclient.messages.sent"], **server) == stats.messages_out == 6
    assert value(seen["wsclient.messages.received"], **server) == stats.messages_in + stats.replies == 5
    assert value(seen["wsclient.reconnects"], **server) == 2
    assert value(seen["wsclient.dropped"], **server) == 1
    assert value(seen["wsclient.expired"], **server) == 1
    assert value(seen["wsclient.sends.interrupted"], **server) == 0
    assert value(seen["wsclient.outbox.size"], **server) == 0
    assert value(seen["wsclient.inbox.size"], **server) == 0
    states = {a["wsclient.state"]: v for a, v in seen["wsclient.state"]}
    assert states == {state.value: int(state is State.CLOSED) for state in State}

    # Connect attempts by outcome, each with its duration.
    attempts = seen["wsclient.connect.attempts"]
    assert value(attempts, **{"wsclient.connect.outcome": "success"}) == 3
    failures = value(attempts, **{"wsclient.connect.outcome": "failure"})
    assert failures == stats.connect_attempts - 3 >= 1
    assert value(attempts, **{"error.type": "ConnectionRefusedError"}) == failures
    durations = histogram(seen["wsclient.connect.duration"])
    assert sum(point.count for point in durations) == stats.connect_attempts
    assert all(a["server.port"] == rpc_server.port for a, _ in seen["wsclient.connect.duration"])

    # Sessions: two dropped, the last closed by the client (no error).
    sessions = seen["wsclient.session.duration"]
    assert [p.count for p in histogram(sessions, **{"error.type": "connection_lost"})] == [2]
    clean = [p for a, p in sessions if "error.type" not in a]
    assert [p.count for p in clean] == [1]
    # Outages: two, both caused by a lost connection.
    outages = histogram(seen["wsclient.outage.duration"], **{"error.type": "connection_lost"})
    assert sum(p.count for p in outages) == 2
    assert sum(p.sum for p in outages) == pytest.approx(sum(o.duration or 0 for o in stats.outages), abs=0.01)
    # Requests: one replied, one timed out.
    requests = seen["wsclient.request.duration"]
    assert [p.count for p in histogram(requests, **{"error.type": "wsclient.RequestTimeout"})] == [1]
    assert [p.count for a, p in requests if "error.type" not in a] == [1]
    assert sum(p.count for p in histogram(seen["wsclient.heartbeat.rtt"], **server)) >= 1

    # Spans: each connect attempt under the stretch of connecting/reconnecting it belongs to.
    connects = telemetry.finished("wsclient.connect")
    assert len(connects) == stats.connect_attempts
    groups = {span.context.span_id: span for span in telemetry.finished("wsclient.connecting")}
    groups.update({span.context.span_id: span for span in telemetry.finished("wsclient.reconnecting")})
    assert len(telemetry.finished("wsclient.connecting")) == 1
    assert len(telemetry.finished("wsclient.reconnecting")) == 2
    for span in connects:
        assert span.kind is SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id in groups
    failed = [span for span in connects if span.status.status_code is StatusCode.ERROR]
    assert len(failed) == failures
    assert all(span.attributes and span.attributes["error.type"] == "ConnectionRefusedError" for span in failed)
    # Requests: a span each, the first a child of the caller's span.
    caller = telemetry.finished("caller")[0]
    replied, timed_out = telemetry.finished("wsclient.request")
    assert replied.parent is not None
    assert replied.parent.span_id == caller.context.span_id
    assert replied.status.status_code is StatusCode.UNSET
    assert timed_out.status.status_code is StatusCode.ERROR
    assert timed_out.attributes is not None
    assert timed_out.attributes["error.type"] == "wsclient.RequestTimeout"

    handle.uninstrument()
    assert client._observers.all == ()
    assert "wsclient.messages.sent" not in telemetry.metrics() or not telemetry.metrics()["wsclient.messages.sent"]


async def test_uninstrument_stops_reporting_and_ends_open_spans(server: FlakyServer, telemetry: Telemetry) -> None:
    client = wsclient.Client(server.url, **fast())
    handle = instrument(client, meter_provider=telemetry.meter_provider, tracer_provider=telemetry.tracer_provider)
    await server.stop()
    await client.start()
    await until(lambda: client.stats.connect_attempts >= 2)
    assert telemetry.metrics()["wsclient.state"]
    handle.uninstrument()
    handle.uninstrument()
    assert not handle.active
    assert client._observers.all == ()
    assert telemetry.metrics().get("wsclient.state", []) == []
    # The stretch of connecting that was open ended with the instrumentation.
    assert len(telemetry.finished("wsclient.connecting")) == 1
    await client.close()


async def test_two_clients_on_one_meter_provider_are_told_apart(telemetry: Telemetry) -> None:
    async with FlakyServer("echo") as one, FlakyServer("echo") as two:
        first = wsclient.Client(one.url, **fast())
        second = wsclient.Client(two.url, **fast())
        instrument(first, meter_provider=telemetry.meter_provider, attributes={"feed": "a"})
        instrument(second, meter_provider=telemetry.meter_provider, attributes={"feed": "b"})
        with pytest.raises(ValueError, match="already instrumented"):
            instrument(first, meter_provider=telemetry.meter_provider)
        async with first, second:
            await first.send("x")
            await one.wait_for_received(1)
            sent = telemetry.metrics()["wsclient.messages.sent"]
        assert value(sent, feed="a", **{"server.port": one.port}) == 1
        assert value(sent, feed="b", **{"server.port": two.port}) == 0


async def test_a_callable_url_reports_the_server_of_the_last_attempt(server: FlakyServer, telemetry: Telemetry) -> None:
    client = wsclient.Client(lambda: server.url, **fast())
    instrument(client, meter_provider=telemetry.meter_provider)
    async with client:
        sent = telemetry.metrics()["wsclient.messages.sent"]
    assert value(sent, **{"server.address": "127.0.0.1", "server.port": server.port}) == 0


def test_a_sync_client_is_instrumented_with_its_own_inbox(telemetry: Telemetry) -> None:
    loop = asyncio.new_event_loop()
    server = FlakyServer("echo")
    try:
        loop.run_until_complete(server.start())
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        with wsclient.sync.Client(server.url, **fast()) as client:
            handle = instrument(client, meter_provider=telemetry.meter_provider)
            client.send("a")
            client.send("b")
            deadline = time.monotonic() + 5
            while client.stats.messages_in < 2:
                assert time.monotonic() < deadline
                time.sleep(MS)
            seen = telemetry.metrics()
            assert value(seen["wsclient.inbox.size"]) == 2
            assert value(seen["wsclient.messages.received"]) == 2
            assert client.recv(1) == "a"
            handle.uninstrument()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    finally:
        loop.run_until_complete(server.stop())
        loop.close()


async def test_arguments_are_checked(telemetry: Telemetry) -> None:
    with pytest.raises(TypeError, match=r"client must be a wsclient\.Client"):
        instrument(object(), meter_provider=telemetry.meter_provider)
    with pytest.raises(TypeError, match="attributes"):
        instrument(wsclient.Client("ws://127.0.0.1:9"), attributes={1: "x"})  # type: ignore[dict-item]


def test_attribute_helpers() -> None:
    assert server_attributes("wss://example.com/feed") == {"server.address": "example.com", "server.port": 443}
    assert server_attributes("ws://[::1]:8080") == {"server.address": "::1", "server.port": 8080}
    assert error_type(ConnectionRefusedError()) == "ConnectionRefusedError"
    assert error_type(wsclient.RequestTimeout(1, 1.0, True)) == "wsclient.RequestTimeout"
    assert error_type(json.JSONDecodeError("x", "", 0)) == "json.decoder.JSONDecodeError"


def test_wsclient_never_imports_opentelemetry() -> None:
    check = (
        "import sys, wsclient, wsclient.sync, wsclient.testing, wsclient.cli, wsclient.cli.listen\n"
        "loaded = sorted(name for name in sys.modules if name.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
        "assert 'wsclient.otel' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


async def test_an_uninstrumented_client_has_no_observer(server: FlakyServer) -> None:
    async with wsclient.Client(server.url, **fast()) as client:
        assert client._observers.all == ()
