"""What the service is doing: Prometheus metrics and each upstream's health.

One `Observability` per app, each with its own registry, so several apps (the tests run many)
never share counters. Upstream health is fed by the upstream clients themselves on every call
(browser requests and collector rounds alike); nothing polls an upstream just to check it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from starlette.types import ASGIApp, Message, Receive, Scope, Send

State = Literal["up", "down", "unknown", "not_configured"]


class Hub(Protocol):
    name: str
    reconnects: int

    @property
    def subscribers(self) -> int: ...


@dataclass
class UpstreamHealth:
    """One upstream's state as the last calls left it."""

    state: State = "unknown"
    since: str | None = None  # when it entered this state (ISO 8601)
    last_latency_ms: float | None = None
    last_error: str | None = None
    consecutive_failures: int = 0

    def record(self, latency_ms: float, error: str | None) -> None:
        state: State = "down" if error else "up"
        if state != self.state:
            self.state, self.since = state, datetime.now(UTC).isoformat()
        self.last_latency_ms = round(latency_ms, 1)
        if error:
            self.last_error = error
            self.consecutive_failures += 1
        else:
            self.consecutive_failures = 0


class Observability:
    def __init__(self, hubs: list[Hub]) -> None:
        self.registry = CollectorRegistry()
        metric = {"registry": self.registry}
        self.http_requests = Counter(
            "homepanel_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            **metric,
        )
        self.http_duration = Histogram(
            "homepanel_http_request_duration_seconds",
            "Time to answer an HTTP request (streams are not timed)",
            ["method", "route"],
            **metric,
        )
        self.sse_streams = Gauge(
            "homepanel_sse_streams", "Open event streams by route", ["route"], **metric
        )
        self.upstream_requests = Counter(
            "homepanel_upstream_requests",
            "Requests to upstreams by service and outcome",
            ["service", "outcome"],
            **metric,
        )
        self.upstream_duration = Histogram(
            "homepanel_upstream_request_duration_seconds",
            "Upstream request durations by service and outcome",
            ["service", "outcome"],
            **metric,
        )
        self.job_runs = Counter(
            "homepanel_collector_runs",
            "Background job runs by job and result",
            ["job", "result"],
            **metric,
        )
        self.rollup_duration = Histogram(
            "homepanel_rollup_duration_seconds", "Duration of a metrics maintenance cycle", **metric
        )
        self.database_size = Gauge(
            "homepanel_database_size_bytes", "Size of the SQLite file", **metric
        )
        self.upstreams: dict[str, UpstreamHealth] = {}
        self.registry.register(_HubCollector(hubs))
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: MetricWrapperBase, *labels: str) -> Any:
        """`metric.labels(*labels)`, looked up once. `labels()` takes a lock and checks its
        values on every call, about 2 µs, four times per request. Label values are bounded
        (routes, methods, statuses, upstreams), so is this."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def upstream(self, key: str, configured: bool = True) -> None:
        self.upstreams[key] = UpstreamHealth(state="unknown" if configured else "not_configured")

    def request_done(self, method: str, route: str, status: int, seconds: float | None) -> None:
        """One answered request, timed unless it was an event stream (`seconds` None)."""
        self._child(self.http_requests, method, route, str(status)).inc()
        if seconds is not None:
            self._child(self.http_duration, method, route).observe(seconds)

    def streams_opened(self, route: str, change: int) -> None:
        self._child(self.sse_streams, route).inc(change)

    def upstream_call(self, key: str, seconds: float, error: str | None) -> None:
        """Called by the upstream clients after every request, failed or not."""
        outcome = "error" if error else "ok"
        self._child(self.upstream_requests, key, outcome).inc()
        self._child(self.upstream_duration, key, outcome).observe(seconds)
        self.upstreams.setdefault(key, UpstreamHealth()).record(seconds * 1000, error)

    def job_done(self, job: str, ok: bool) -> None:
        self._child(self.job_runs, job, "ok" if ok else "failed").inc()


class _HubCollector:
    """Hub subscribers and reconnects, read at scrape time from the live hubs."""

    def __init__(self, hubs: Iterable[Hub]) -> None:
        self._hubs = hubs

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        subscribers = GaugeMetricFamily(
            "homepanel_hub_subscribers", "Subscribers of each upstream stream hub", labels=["hub"]
        )
        reconnects = CounterMetricFamily(
            "homepanel_hub_reconnects", "Upstream stream reconnects by hub", labels=["hub"]
        )
        for hub in self._hubs:
            subscribers.add_metric([hub.name], hub.subscribers)
            reconnects.add_metric([hub.name], hub.reconnects)
        return [subscribers, reconnects]


class MetricsMiddleware:
    """Counts every request by route template (never the raw path: bounded label values),
    times the ordinary ones, and counts open event streams instead of timing them."""

    def __init__(self, app: ASGIApp, observability: Observability) -> None:
        self.app = app
        self.observability = observability

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        stream_route: str | None = None

        async def observed_send(message: Message) -> None:
            nonlocal status, stream_route
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers", []))
                if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                    stream_route = _route(scope)
                    self.observability.streams_opened(stream_route, 1)
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if stream_route is not None:
                self.observability.streams_opened(stream_route, -1)
            elapsed = None if stream_route is not None else time.perf_counter() - started
            self.observability.request_done(scope["method"], _route(scope), status, elapsed)


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
