"""Traces: one trace per tool call, through create, stream or poll, download and store, joined to the MCP SDK's own
span of the call; captured with the OpenTelemetry SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mcp import Client
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server
from nano_banana_mcp.observability.traces import configure

pytestmark = pytest.mark.anyio

_EXPORTER = InMemorySpanExporter()


class _WhileCapturing(SimpleSpanProcessor):
    """Exports only while a test captures: the other tests of this worker keep nothing."""

    capturing = False

    def on_end(self, span: ReadableSpan) -> None:
        if self.capturing:
            super().on_end(span)


_PROCESSOR = _WhileCapturing(_EXPORTER)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider (set once: OpenTelemetry allows one) exporting to memory during the test."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(_PROCESSOR)
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _PROCESSOR.capturing = True
    yield _EXPORTER
    _PROCESSOR.capturing = False
    _EXPORTER.clear()


def parent_of(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan | None:
    return by_id.get(span.parent.span_id) if span.parent is not None else None


@pytest.mark.parametrize("max_streams", [100, 0], ids=["stream", "poll"])
async def test_one_trace_per_tool_call_through_create_follow_download_and_store(
    settings: Settings, emulator: Emulator, spans: InMemorySpanExporter, max_streams: int
) -> None:
    emulator.task_seconds = 0.3
    served = settings.model_copy(update={"max_streams": max_streams})
    async with Client(create_server(served)) as client:
        result = await client.call_tool("generate_image", {"prompt": "traced", "wait_seconds": 30})
    assert not result.is_error
    finished = spans.get_finished_spans()
    [call] = [s for s in finished if s.name == "tools/call generate_image"]  # the SDK's own span
    mine = [
        s
        for s in finished
        if s.context is not None and call.context is not None and s.context.trace_id == call.context.trace_id
    ]
    names = [s.name for s in mine]
    by_id = {s.context.span_id: s for s in mine if s.context is not None}
    [task] = [s for s in mine if s.name == "nano_banana.task"]
    assert parent_of(task, by_id) is call
    create = "monet create_stream" if max_streams else "monet create_async"
    assert create in names
    if not max_streams:
        assert "monet get_task" in names  # polled
    for name in (create, "monet download", "nano_banana.store"):
        [step] = [s for s in mine if s.name == name][:1]
        assert parent_of(step, by_id) is task, name
    attributes = dict(task.attributes or {})
    assert attributes["nano_banana.model"] == "nano-banana-2"
    assert attributes["nano_banana.task.status"] == "success"
    assert str(attributes["nano_banana.task.id"]).startswith("task_")
    for span in mine:  # no secret and no prompt in any span
        text = repr(dict(span.attributes or {}))
        assert "monet_test_key" not in text and "traced" not in text


def test_traces_are_opt_in_through_the_otel_variables() -> None:
    """Nothing is configured without the OTEL_* variables (or with the exporter set to none)."""
    assert configure({}) is False
    assert configure({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}) is False
    assert configure({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is False
