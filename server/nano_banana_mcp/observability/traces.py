"""OpenTelemetry traces: opt-in, through the standard ``OTEL_*`` variables.

One trace per tool call: the MCP SDK's own ``tools/call generate_image`` span (the SDK makes one per request), and
under it ``nano_banana.task`` for each task the call made (the runner starts it in the call's context, so it joins
the call's trace even after the call has returned), then ``monet create_stream`` or ``monet create_async``, each
``monet get_task`` poll, ``monet download`` and ``nano_banana.store``. A task resumed after a restart starts a trace
of its own.

Only the API (``opentelemetry-api``, which the SDK already needs) is imported here: without a tracer provider every
span is a no-op. ``configure()`` installs the OpenTelemetry SDK's provider with the OTLP exporter when the operator
asked for traces (``OTEL_TRACES_EXPORTER``, or an ``OTEL_EXPORTER_OTLP_*ENDPOINT``), from the ``otel`` extra
(``pip install 'nano-banana-mcp[otel]'``). No span carries a secret: no header, no query string, no prompt.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

if TYPE_CHECKING:
    from nano_banana_mcp.tasks.records import TaskRecord

__all__ = ["TRACER_NAME", "api_span", "configure", "end", "span", "spanning", "task_span"]

log = logging.getLogger(__name__)
TRACER_NAME = "nano_banana_mcp"
_tracer = trace.get_tracer(TRACER_NAME)


def configure(environ: dict[str, str] | None = None) -> bool:
    """Install the SDK's tracer provider with the OTLP exporter when the ``OTEL_*`` variables ask for traces; whether
    it did. The exporter reads its own variables (endpoint, headers, protocol)."""
    env = os.environ if environ is None else environ
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if exporter in ("", "none") and not (endpoint and exporter != "none"):
        return False
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
        from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
    except ImportError:
        log.warning(
            "OTEL_* variables ask for traces, but the OpenTelemetry SDK is not installed: pip install "
            "'nano-banana-mcp[otel]'. Serving without traces."
        )
        return False
    name = env.get("OTEL_SERVICE_NAME", "nano-banana-mcp")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True


@contextmanager
def task_span(record: TaskRecord) -> Iterator[Span]:
    """The span of one task's work in this process, in the context it was started in (the tool call's)."""
    attributes = {
        "nano_banana.task.key": record.key,
        "nano_banana.task.id": record.task_id or "",
        "nano_banana.tenant": record.tenant,
        "nano_banana.model": record.request.model,
        "nano_banana.resolution": record.request.resolution or "default",
    }
    with _tracer.start_as_current_span("nano_banana.task", kind=SpanKind.INTERNAL, attributes=attributes) as current:
        yield current
        current.set_attribute("nano_banana.task.id", record.task_id or "")
        current.set_attribute("nano_banana.task.status", record.status)


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Span]:
    """A span of our own (``nano_banana.store``) under the current one."""
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def api_span(endpoint: str, request: httpx.Request) -> Span:
    """A client span for one request to the API (or a download): method, host and path, never a header or query."""
    return _tracer.start_span(
        f"monet {endpoint}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": request.method,
            "server.address": request.url.host,
            "url.path": request.url.path if endpoint != "download" else "",
            "nano_banana.api.endpoint": endpoint,
        },
    )


def end(current: Span, *, error: BaseException | None = None, status: int | None = None) -> None:
    if status is not None:
        current.set_attribute("http.response.status_code", status)
    if error is not None:
        current.set_status(Status(StatusCode.ERROR, type(error).__name__))
    elif status is not None and status >= 400:
        current.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
    current.end()


class _Ending(httpx.AsyncByteStream):
    """A response body that ends its span once read or closed (a stream's span lasts as long as the stream)."""

    def __init__(self, inner: httpx.AsyncByteStream, current: Span, status: int) -> None:
        self._inner, self._span, self._status = inner, current, status
        self._ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except BaseException as err:
            self._end(err)
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._end(None)

    def _end(self, error: BaseException | None) -> None:
        if not self._ended:
            self._ended = True
            end(self._span, error=error, status=self._status)


def spanning(current: Span, response: httpx.Response) -> httpx.Response:
    """``response`` whose body ends ``current`` when it is closed."""
    if not current.is_recording():
        return response
    stream = response.stream
    assert isinstance(stream, httpx.AsyncByteStream)
    response.stream = _Ending(stream, current, response.status_code)
    return response
