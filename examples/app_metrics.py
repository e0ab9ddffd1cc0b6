"""A web app whose /metrics and /health come from one instrumented WebSocket client.

``/metrics`` is the client's OpenTelemetry metrics in Prometheus' text format
(``wsclient.otel.instrument`` with the SDK's Prometheus exporter), for the
Grafana dashboard in ``grafana_dashboard.json``. ``/health`` answers 200 while
a session is open and 503 otherwise, with the last outage, kept up to date by
``on_state_change`` rather than by polling. ``/echo?text=...`` makes a
``request()`` to the upstream, so that request durations show too.

Needs ``pip install 'wsclient-resilient[prometheus]' starlette uvicorn``.

    python examples/app_metrics.py                  # with an embedded echo upstream
    python examples/app_metrics.py --url ws://127.0.0.1:8765 --port 8000
    curl http://127.0.0.1:8000/health http://127.0.0.1:8000/metrics
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator

import uvicorn
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import wsclient
from wsclient.otel import instrument
from wsclient.testing import FlakyServer

log = logging.getLogger("app")


class Upstream:
    """The one client, its metrics registry, and what its state changes said last."""

    def __init__(self, url: str, ping_interval: float) -> None:
        self.registry = CollectorRegistry()
        self.provider = MeterProvider(
            metric_readers=[PrometheusMetricReader(registry=self.registry)],
            resource=Resource.create({"service.name": "app-metrics-example"}),
        )
        self.client = wsclient.Client(
            url,
            reply_key=wsclient.json_field("id"),
            heartbeat=wsclient.Heartbeat(interval=ping_interval, timeout=min(10.0, ping_interval)),
            on_state_change=self.on_state_change,
        )
        self.instrumentation = instrument(self.client, meter_provider=self.provider)
        self.last_outage: dict[str, object] | None = None
        self._ids = itertools.count(1)

    def on_state_change(self, change: wsclient.StateChange) -> None:
        """Runs once per change, in order, off the client's path: alert here (log, page, chat)."""
        if change.outage_started and change.outage is not None:
            log.warning("upstream down: %s", change.outage.cause)
        if change.outage_ended and change.outage is not None:
            self.last_outage = {
                "start": change.outage.start,
                "seconds": change.outage.duration,
                "cause": change.outage.cause,
                "attempts": change.outage.attempts,
            }
            log.warning("upstream back after %.3f s", change.outage.duration or 0.0)

    async def echo(self, text: str) -> str:
        key = next(self._ids)
        reply = await self.client.request(json.dumps({"id": key, "text": text}), key=key, timeout=5.0)
        return str(json.loads(reply)["text"])

    async def close(self) -> None:
        await self.client.close()
        self.instrumentation.uninstrument()
        self.provider.shutdown()


def create_app(url: str, ping_interval: float = 5.0) -> Starlette:
    """The Starlette app: ``/health``, ``/metrics`` and ``/echo``, whatever the upstream does."""
    upstream = Upstream(url, ping_interval)
    client = upstream.client

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await client.start()  # returns at once: the app serves while the client connects
        try:
            yield
        finally:
            await upstream.close()

    async def health(request: Request) -> JSONResponse:
        body = {
            "upstream": client.state.value,
            "down_since": client.stats.down_since,
            "last_outage": upstream.last_outage,
        }
        return JSONResponse(body, status_code=200 if client.state is wsclient.State.OPEN else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(upstream.registry), media_type=CONTENT_TYPE_LATEST)

    async def echo(request: Request) -> JSONResponse:
        try:
            return JSONResponse({"echo": await upstream.echo(request.query_params.get("text", ""))})
        except wsclient.WsClientError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    routes = [Route("/health", health), Route("/metrics", metrics), Route("/echo", echo)]
    return Starlette(routes=routes, lifespan=lifespan)


async def main(url: str | None, host: str, port: int, ping_interval: float) -> None:
    upstream: FlakyServer | None = None
    if url is None:
        upstream = FlakyServer("echo")
        await upstream.start()
        url = upstream.url
    server = uvicorn.Server(uvicorn.Config(create_app(url, ping_interval), host=host, port=port, log_level="info"))
    try:
        await server.serve()  # until Ctrl-C or SIGTERM
    finally:
        if upstream is not None:
            await upstream.stop()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    logging.getLogger("websockets").setLevel(logging.WARNING)  # the embedded upstream's
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="the upstream WebSocket (default: an embedded echo server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port (default: 8000)")
    parser.add_argument("--ping-interval", type=float, default=5.0, help="heartbeat interval (default: 5)")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.host, args.port, args.ping_interval))
