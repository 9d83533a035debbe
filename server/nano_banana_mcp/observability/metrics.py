"""Prometheus metrics: what an operator of the team server watches (docs/deploy.md has the scrape config, alerts and
a dashboard).

Counters and histograms live in one registry per process (:data:`REGISTRY`), fed by small hooks: the HTTP client's
transport (every API request: endpoint, outcome, latency), the retry policy, the ledger (:class:`TimedLedger`), the
runner (tasks finished, images and bytes saved) and the daily limit (refusals). What is true only now (stream slots in
use, tasks being worked, the age of the oldest) is read from the running service at each scrape
(:func:`exposition`). Tenant labels stay bounded (:class:`TenantLabels`).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nano_banana_mcp.observability import traces

if TYPE_CHECKING:
    from nano_banana_mcp.tasks.records import TaskRecord
    from nano_banana_mcp.tasks.service import Service
    from nano_banana_mcp.tasks.store import LedgerStore

__all__ = [
    "CONTENT_TYPE",
    "REGISTRY",
    "ObservedTransport",
    "TenantLabels",
    "TimedLedger",
    "endpoint_of",
    "exposition",
    "image_saved",
    "limit_refused",
    "observe_client",
    "retried",
    "task_finished",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry(auto_describe=True)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LEDGER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

TASKS = Counter("nano_banana_tasks", "Tasks finished by this process, by model and status", ["model", "status"])
API_REQUESTS = Counter(
    "nano_banana_api_requests", "Requests to the Monet API, by endpoint and outcome", ["endpoint", "outcome"]
)
API_LATENCY = Histogram(
    "nano_banana_api_request_seconds",
    "Monet API latency until the answer's headers, by endpoint",
    ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
RETRIES = Counter("nano_banana_retries", "Retries scheduled by the retry policy, by the failure's kind", ["reason"])
LEDGER_LATENCY = Histogram(
    "nano_banana_ledger_seconds", "Ledger operation latency, by operation", ["operation"], buckets=_LEDGER_BUCKETS
)
IMAGES_SAVED = Counter("nano_banana_images_saved", "Images saved (to the folder or the bucket), by model", ["model"])
BYTES_SAVED = Counter("nano_banana_image_bytes_saved", "Bytes of images saved, by model", ["model"])
LIMIT_REFUSALS = Counter("nano_banana_limit_refusals", "Calls refused by the daily image limit, by tenant", ["tenant"])
for _metric in (TASKS, API_REQUESTS, API_LATENCY, RETRIES, LEDGER_LATENCY, IMAGES_SAVED, BYTES_SAVED, LIMIT_REFUSALS):
    REGISTRY.register(_metric)


class TenantLabels:
    """Tenant names as labels, bounded: the tokens file's tenants and ``default`` always; any other (an identity
    provider's subjects) the first ``cap`` seen, then ``other``."""

    OTHER = "other"

    def __init__(self, known: Iterable[str] = (), cap: int = 20) -> None:
        self._known = {"default", *known}
        self._seen: set[str] = set()
        self._cap = cap

    def __call__(self, tenant: str) -> str:
        if tenant in self._known or tenant in self._seen:
            return tenant
        if len(self._seen) < self._cap:
            self._seen.add(tenant)
            return tenant
        return self.OTHER


TENANTS = TenantLabels()
"""The process's labeller (an HTTP server tells it its tokens file's tenants: :func:`know_tenants`)."""


def know_tenants(tenants: Iterable[str]) -> None:
    global TENANTS  # noqa: PLW0603 - one server per process; set once at start
    TENANTS = TenantLabels(tenants)


def limit_refused(tenant: str) -> None:
    LIMIT_REFUSALS.labels(tenant=TENANTS(tenant)).inc()


def task_finished(record: TaskRecord) -> None:
    TASKS.labels(model=record.request.model, status=record.status).inc()


def image_saved(model: str, size: int) -> None:
    IMAGES_SAVED.labels(model=model).inc()
    BYTES_SAVED.labels(model=model).inc(size)


def retried(reason: BaseException) -> None:
    RETRIES.labels(reason=type(reason).__name__).inc()


# -- the Monet API, seen from the HTTP client ----------------------------------------------------------------------


_NAMED = {"tasks/async": "create_async", "tasks/sync": "create_stream", "tasks/list": "list_tasks", "files": "upload"}


def endpoint_of(url: httpx.URL) -> str:
    """The API endpoint a request goes to, as a bounded label (a task's id never is one)."""
    path = url.path
    if "/api/v1/" not in path:
        return "download"
    tail = path.split("/api/v1/", 1)[1].rstrip("/")
    if tail in _NAMED:
        return _NAMED[tail]
    return "get_task" if tail.startswith("tasks/") else "other"


def _outcome(status: int) -> str:
    if status < 400:
        return "ok"
    return "429" if status == 429 else f"{status // 100}xx"


class ObservedTransport(httpx.AsyncBaseTransport):
    """A transport that counts and times each request and traces it (:mod:`.traces`), then hands it on."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        endpoint = endpoint_of(request.url)
        span = traces.api_span(endpoint, request)
        began = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException as err:
            API_REQUESTS.labels(endpoint=endpoint, outcome="error").inc()
            traces.end(span, error=err)
            raise
        API_LATENCY.labels(endpoint=endpoint).observe(time.perf_counter() - began)
        API_REQUESTS.labels(endpoint=endpoint, outcome=_outcome(response.status_code)).inc()
        return traces.spanning(span, response)

    async def aclose(self) -> None:
        await self._inner.aclose()


def observe_client(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """``client`` with every transport it may use observed (its own, and those its proxy settings mounted)."""
    client._transport = ObservedTransport(client._transport)  # httpx has no public seam for this
    client._mounts = {pattern: ObservedTransport(t) if t is not None else None for pattern, t in client._mounts.items()}
    return client


# -- the ledger ----------------------------------------------------------------------------------------------------


class TimedLedger:
    """A ledger whose every coroutine method is timed (:data:`LEDGER_LATENCY`, by method name); the rest passes on."""

    def __init__(self, inner: LedgerStore) -> None:
        self._inner = inner

    @property  # type: ignore[misc]  # isinstance() sees the ledger it wraps (SQLite or PostgreSQL)
    def __class__(self) -> type:
        return type(self._inner)

    def __getattr__(self, name: str) -> Any:  # a method (timed if a coroutine) is looked up once, then kept on self
        value = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(value) or name.startswith("_"):
            if inspect.ismethod(value) and not name.startswith("_"):
                setattr(self, name, value)  # the poll's find_call_now, looked up at every poll
            return value
        histogram = LEDGER_LATENCY.labels(operation=name)
        method = cast("Callable[..., Awaitable[Any]]", value)

        @functools.wraps(method)
        async def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - began)

        setattr(self, name, timed)  # found by the next look-up without __getattr__ (a poll looks one up each time)
        return timed

    async def open(self) -> TimedLedger:
        await self._inner.open()
        return self


def timed(ledger: LedgerStore) -> LedgerStore:
    """``ledger`` with its operations timed."""
    return cast("LedgerStore", TimedLedger(ledger))


# -- what is true now, read at each scrape ---------------------------------------------------------------------------


class _Now(Collector):
    def __init__(self, service: Service | None) -> None:
        self._service = service

    def collect(self) -> Iterable[Metric]:
        runner = self._service.runner if self._service is not None else None
        in_use, slots, working = runner.load() if runner is not None else (0, 0, [])
        yield GaugeMetricFamily("nano_banana_stream_slots_in_use", "Event streams open to the API now", value=in_use)
        yield GaugeMetricFamily("nano_banana_stream_slots", "Event streams allowed at once", value=slots)
        yield GaugeMetricFamily("nano_banana_tasks_working", "Tasks this process works on now", value=len(working))
        oldest = min((r.created_at for r in working), default=None)
        age = time.time() - oldest.timestamp() if oldest is not None else 0.0
        yield GaugeMetricFamily(
            "nano_banana_oldest_working_task_seconds", "Age of the oldest task this process works on", value=age
        )


def exposition(service: Service | None) -> bytes:
    """The Prometheus text of this process: its counters and histograms, and what ``service`` is doing now."""
    now = CollectorRegistry(auto_describe=True)
    now.register(_Now(service))
    return generate_latest(REGISTRY) + generate_latest(now)
