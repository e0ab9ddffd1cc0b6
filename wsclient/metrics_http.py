"""A Prometheus ``/metrics`` endpoint for one client: what ``wsclient listen --metrics-port`` serves.

The metrics are :mod:`wsclient.otel`'s, collected by the OpenTelemetry SDK and
written in Prometheus' text format by its Prometheus exporter, from a small
HTTP server in a thread of its own. Needs ``pip install 'wsclient-resilient[prometheus]'``;
this module imports them only when serving.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterator
from typing import Any

from .logs import get_logger

__all__ = ["DEFAULT_HOST", "parse_address", "serve_metrics"]

DEFAULT_HOST = "127.0.0.1"
"""Where ``--metrics-port PORT`` listens: loopback, unless ``HOST:PORT`` says otherwise (``0.0.0.0:9464``)."""

_MISSING = "needs the Prometheus exporter: pip install 'wsclient-resilient[prometheus]'"


def parse_address(text: str) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` (``[::1]:PORT`` for IPv6) as a host and a port; ``ValueError`` naming what is wrong."""
    host, colon, port_text = text.rpartition(":")
    if not colon:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"not an IPv6 address: {host!r}") from None
    elif not host or any(c in host for c in "/[]: \t"):
        raise ValueError(f"expected PORT or HOST:PORT, got {text!r}")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"expected PORT or HOST:PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be 0-65535, got {port}")
    return host, port


@contextlib.contextmanager
def serve_metrics(
    client: Any, address: str | tuple[str, int], *, gaps: Callable[[], int] | None = None
) -> Iterator[tuple[str, int]]:
    """Serve ``client``'s metrics at ``http://HOST:PORT/metrics`` while the block runs; yield where.

    Args:
        client: the :class:`wsclient.Client` (or :class:`wsclient.sync.Client`) to report.
        address: ``"PORT"``, ``"HOST:PORT"`` or a ``(host, port)`` pair; port 0 picks a free one.
        gaps: when given, reported as the counter ``wsclient.gaps`` (gap records written by ``listen``).

    Raises:
        ValueError: a bad address, a port that cannot be bound, or the exporter is not installed.
    """
    host, port = parse_address(address) if isinstance(address, str) else address
    try:
        from opentelemetry import metrics
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.resources import Resource
        from prometheus_client import CollectorRegistry, start_http_server

        from . import __version__
        from .otel import SCOPE, instrument
    except ImportError as exc:
        raise ValueError(f"serving metrics {_MISSING} ({exc.name} is missing)") from exc

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(registry=registry)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "wsclient"}))
    handle = instrument(client, meter_provider=provider)
    if gaps is not None:

        def count_gaps(options: CallbackOptions) -> list[Observation]:
            return [Observation(gaps(), handle.attributes)]

        meter = metrics.get_meter(SCOPE, __version__, meter_provider=provider)
        meter.create_observable_counter("wsclient.gaps", [count_gaps], "{gap}", "Gap records written")
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        handle.uninstrument()
        provider.shutdown()
        raise ValueError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from exc
    bound = server.server_port
    log = get_logger()
    log.info("metrics_serving", url=f"http://{host if ':' not in host else f'[{host}]'}:{bound}/metrics")
    try:
        yield host, bound
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        handle.uninstrument()
        provider.shutdown()
