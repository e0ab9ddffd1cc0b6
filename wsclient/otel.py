"""OpenTelemetry metrics and traces for a client: ``wsclient.otel.instrument(client)``.

Needs ``pip install 'wsclient-resilient[otel]'``, which brings ``opentelemetry-api``
only: the application chooses the SDK and the exporters. Nothing in the core
imports this module, and a client that is not instrumented pays nothing.

Counters and gauges are observable instruments: they read ``client.stats``
when a reader collects, so sending and receiving gain no call. Histograms and
spans are recorded where something slow happens anyway: a connect attempt, a
session's end, an outage's end, a request, a pong. See ``docs/observability.md``
for the table of instruments.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

import wsclient
import wsclient.sync
from wsclient import Cause, SessionEnd, State, StateChange
from wsclient.hooks import Observer, RequestDone

__all__ = ["SCOPE", "Instrumentation", "error_type", "instrument", "server_attributes"]

SCOPE = "wsclient"
"""The instrumentation scope of every meter and tracer (``otel_scope_name`` in Prometheus)."""

SHORT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds: connect attempts, requests and heartbeat round trips."""
LONG_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)
"""Seconds: sessions and outages, from a flap to a day."""

_CLEAN_CODES = frozenset({1000, 1001})


def server_attributes(url: str) -> dict[str, str | int]:
    """``server.address`` and ``server.port`` of a ws:// or wss:// URL (the port defaults to 80 or 443)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    return {"server.address": parts.hostname or "", "server.port": port}


def error_type(error: BaseException) -> str:
    """The ``error.type`` of an exception: ``wsclient.RequestTimeout``, ``ConnectionRefusedError``, ``module.Class``."""
    cls = type(error)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("wsclient.") and getattr(wsclient, cls.__name__, None) is cls:
        return f"wsclient.{cls.__name__}"
    return f"{module}.{cls.__qualname__}"


def _end_error(end: SessionEnd) -> str | None:
    """A session end's ``error.type``: none for a clean close, else its cause or its close code."""
    if end.cause in (Cause.CLOSED, Cause.USER_CLOSE):
        return None if end.code in _CLEAN_CODES else str(end.code)
    return end.cause.value


class _Meters:
    """The instruments of one meter provider, shared by every client instrumented with it.

    A meter keeps the first registration of an instrument name: the
    observable callbacks therefore report every watched client, each with its
    own attributes, rather than one registration per client.
    """

    def __init__(self, provider: MeterProvider | None) -> None:
        meter = metrics.get_meter(SCOPE, wsclient.__version__, meter_provider=provider)
        self.watches: tuple[_Watch, ...] = ()
        counter, gauge = meter.create_observable_counter, meter.create_observable_gauge
        counter(
            "wsclient.messages.received",
            [self._read(lambda stats: stats.messages_in + stats.replies)],
            "{message}",
            "Messages received from the server (replies to requests included)",
        )
        counter(
            "wsclient.messages.sent",
            [self._read(lambda stats: stats.messages_out)],
            "{message}",
            "Messages written into a connection",
        )
        counter(
            "wsclient.reconnects",
            [self._read(lambda stats: stats.reconnects)],
            "{reconnect}",
            "Sessions opened after the first one",
        )
        counter(
            "wsclient.dropped",
            [self._read(lambda stats: stats.dropped)],
            "{message}",
            'Buffered messages discarded by overflow="drop_oldest"',
        )
        counter(
            "wsclient.expired",
            [self._read(lambda stats: stats.expired)],
            "{message}",
            "Buffered messages removed unsent: their ttl ran out, or their request timed out",
        )
        counter(
            "wsclient.sends.interrupted",
            [self._read(lambda stats: stats.sends_interrupted)],
            "{message}",
            "Messages whose write a broken connection interrupted: they may or may not have arrived",
        )
        gauge(
            "wsclient.outbox.size",
            [self._read(lambda stats: stats.buffered)],
            "{message}",
            "Messages waiting in the outbox",
        )
        gauge("wsclient.inbox.size", [self._inbox], "{message}", "Received messages waiting to be read")
        gauge("wsclient.state", [self._state], "{state}", "1 for the state the client is in, 0 for the others")
        self.connect_attempts = meter.create_counter(
            "wsclient.connect.attempts", "{attempt}", "Connect attempts, by outcome"
        )
        histogram = meter.create_histogram
        self.connect_duration = histogram(
            "wsclient.connect.duration", "s", "Connect attempts", explicit_bucket_boundaries_advisory=SHORT_BUCKETS
        )
        self.session_duration = histogram(
            "wsclient.session.duration", "s", "Sessions, open to end", explicit_bucket_boundaries_advisory=LONG_BUCKETS
        )
        self.outage_duration = histogram(
            "wsclient.outage.duration", "s", "Outages, drop to reopen", explicit_bucket_boundaries_advisory=LONG_BUCKETS
        )
        self.request_duration = histogram(
            "wsclient.request.duration", "s", "request() calls", explicit_bucket_boundaries_advisory=SHORT_BUCKETS
        )
        self.heartbeat_rtt = histogram(
            "wsclient.heartbeat.rtt", "s", "Ping to pong", explicit_bucket_boundaries_advisory=SHORT_BUCKETS
        )

    def _read(self, value: Callable[[wsclient.Stats], int]) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(value(watch.stats), watch.attributes) for watch in self.watches]

        return callback

    def _inbox(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(watch.inbox_size(), watch.attributes) for watch in self.watches]

    def _state(self, options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        for watch in self.watches:
            current = watch.client.state
            for state in State:
                attributes = {**watch.attributes, "wsclient.state": state.value}
                observations.append(Observation(int(state is current), attributes))
        return observations


_registry: weakref.WeakKeyDictionary[Any, _Meters] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def _meters_for(provider: MeterProvider | None) -> _Meters:
    key = metrics.get_meter_provider() if provider is None else provider
    with _registry_lock:
        meters = _registry.get(key)
        if meters is None:
            meters = _registry[key] = _Meters(provider)
        return meters


class _Watch(Observer):
    """One instrumented client: its attributes, its open spans, and what the client tells it."""

    def __init__(
        self,
        client: wsclient.Client[Any],
        inbox_size: Callable[[], int],
        meters: _Meters,
        tracer: trace.Tracer,
        extra: Mapping[str, Any],
    ) -> None:
        self.client = client
        self.stats = client.stats
        self.inbox_size = inbox_size
        self.meters = meters
        self._tracer = tracer
        self._extra = dict(extra)
        url = client.config.url
        self.attributes: dict[str, Any] = {**(server_attributes(url) if isinstance(url, str) else {}), **self._extra}
        self._group: Span | None = None
        self._connect: Span | None = None
        self._connect_started = 0.0

    def _target(self, url: str | None) -> None:
        """A callable ``url`` may name another server on each attempt: the attributes follow it."""
        if url is not None and not isinstance(self.client.config.url, str):
            attributes = {**server_attributes(url), **self._extra}
            if attributes != self.attributes:
                self.attributes = attributes

    def state_changed(self, change: StateChange) -> None:
        if change.outage_ended and change.outage is not None and change.outage.duration is not None:
            self.meters.outage_duration.record(
                change.outage.duration, {**self.attributes, "error.type": change.outage.cause.value}
            )
        if change.new in (State.CONNECTING, State.RECONNECTING):
            self._end_group()
            attributes: dict[str, Any] = dict(self.attributes)
            if change.outage is not None:
                attributes["error.type"] = change.outage.cause.value
            self._group = self._tracer.start_span(f"wsclient.{change.new.value}", attributes=attributes)
        elif change.new in (State.OPEN, State.CLOSED):
            self._end_group()

    def _end_group(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            group.end()

    def connect_started(self) -> None:
        self._connect_started = time.monotonic()
        parent = None if self._group is None else trace.set_span_in_context(self._group)
        self._connect = self._tracer.start_span("wsclient.connect", context=parent, kind=SpanKind.CLIENT)

    def connect_ended(self, url: str | None, error: BaseException | None) -> None:
        if self._connect is None:
            return  # the attempt started before the client was instrumented
        duration = time.monotonic() - self._connect_started
        self._target(url)
        attributes: dict[str, Any] = dict(self.attributes)
        if error is None:
            attributes["wsclient.connect.outcome"] = "success"
        elif isinstance(error, Exception):
            attributes["wsclient.connect.outcome"] = "failure"
            attributes["error.type"] = error_type(error)
        else:
            attributes["wsclient.connect.outcome"] = "cancelled"
        self.meters.connect_attempts.add(1, attributes)
        self.meters.connect_duration.record(duration, attributes)
        span, self._connect = self._connect, None
        if span is not None:
            span.set_attributes(attributes)
            if isinstance(error, Exception):
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, attributes["error.type"]))
            span.end()

    def session_ended(self, end: SessionEnd) -> None:
        error = _end_error(end)
        attributes = self.attributes if error is None else {**self.attributes, "error.type": error}
        self.meters.session_duration.record(end.duration, attributes)

    def request_started(self, key: Hashable) -> RequestDone:
        started = time.monotonic()
        # The caller's current span, if any, is the parent: a request is part of what the caller does.
        span = self._tracer.start_span("wsclient.request", kind=SpanKind.CLIENT, attributes=self.attributes)

        def done(error: BaseException | None) -> None:
            attributes = self.attributes if error is None else {**self.attributes, "error.type": error_type(error)}
            self.meters.request_duration.record(time.monotonic() - started, attributes)
            if error is not None:
                span.set_attribute("error.type", attributes["error.type"])
                if isinstance(error, Exception):
                    span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, attributes["error.type"]))
            span.end()

        return done

    def pong(self, rtt: float) -> None:
        self.meters.heartbeat_rtt.record(rtt, self.attributes)

    def close(self) -> None:
        """Stop reporting: end the spans still open."""
        self._end_group()
        span, self._connect = self._connect, None
        if span is not None:
            span.end()


class Instrumentation:
    """What `instrument()` returns, not made directly: call `uninstrument()` to stop reporting the client."""

    def __init__(self, watch: _Watch, remove: Callable[[], None]) -> None:
        self._watch = watch
        self._remove = remove
        self._lock = threading.Lock()
        self.active = True
        """Whether the client is still reported."""

    @property
    def attributes(self) -> dict[str, Any]:
        """The attributes of the client's observations now: ``server.address``, ``server.port`` and your own."""
        return dict(self._watch.attributes)

    def uninstrument(self) -> None:
        """Stop reporting the client: its observations disappear and its open spans end. Idempotent."""
        with self._lock:
            if not self.active:
                return
            self.active = False
        self._remove()
        meters = self._watch.meters
        with _registry_lock:
            meters.watches = tuple(watch for watch in meters.watches if watch is not self._watch)
        self._watch.close()


def instrument(
    client: wsclient.Client[Any] | Any,
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
    attributes: Mapping[str, str | int | float | bool] | None = None,
) -> Instrumentation:
    """Report ``client``'s metrics and traces through OpenTelemetry.

    Args:
        client: a `wsclient.Client` or a `wsclient.sync.Client`, started or not.
        meter_provider: where the metrics go; the global meter provider when omitted.
        tracer_provider: where the spans go (a span per connect attempt, grouped under a span per
            stretch of ``connecting``/``reconnecting``, and a span per ``request()``, child of the
            caller's current span); the global tracer provider when omitted.
        attributes: more attributes on every observation and span, to tell apart clients of the
            same server (``{"feed": "trades"}``).

    Returns:
        The handle whose ``uninstrument()`` stops the reporting.

    Raises:
        TypeError: ``client`` is not a wsclient client, or ``attributes`` is not a mapping of str.
        ValueError: the client is already instrumented with this meter provider.
    """
    inbox_size: Callable[[], int]
    if isinstance(client, wsclient.Client):
        inbox = client._inbox
        inbox_size = inbox.__len__
        target = client
    else:
        if not isinstance(client, wsclient.sync.Client):
            raise TypeError(f"client must be a wsclient.Client or wsclient.sync.Client, got {type(client).__name__}")
        items = client._portal.inbox._items
        inbox_size = items.__len__
        target = client._client
    if attributes is not None and (
        not isinstance(attributes, Mapping) or not all(isinstance(name, str) for name in attributes)
    ):
        raise TypeError("attributes must be a mapping with str keys")
    meters = _meters_for(meter_provider)
    tracer = trace.get_tracer(SCOPE, wsclient.__version__, tracer_provider=tracer_provider)
    watch = _Watch(target, inbox_size, meters, tracer, attributes or {})
    with _registry_lock:
        if any(other.client is target for other in meters.watches):
            raise ValueError("client is already instrumented with this meter provider")
        meters.watches = (*meters.watches, watch)
    remove = target._observers.add(watch)
    return Instrumentation(watch, remove)
