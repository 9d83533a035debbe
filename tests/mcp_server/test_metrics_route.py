"""GET /metrics on the HTTP server: Prometheus text to a bearer of its token, parsed with prometheus-client's own
parser after real calls (generations, a retried 503, a limit refusal)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator

if TYPE_CHECKING:
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

TOKEN = "metrics-token-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base: str) -> Samples:
    answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=20)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_after_real_calls(settings: Settings, emulator: Emulator, serve_http: ServeHttp) -> None:
    emulator.task_seconds = 0.2
    served = settings.model_copy(update={"http_token": SecretStr(TOKEN), "daily_image_limit": 3})
    with serve_http(served) as base:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            answer = httpx.get(f"{base}/metrics", headers=headers, timeout=20)
            assert answer.status_code == 401
            assert "nano_banana" not in answer.text
        before = scrape(base)
        emulator.faults.server_errors = 1  # one 503: retried, then fine
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
        ):
            made = await client.call_tool("generate_image", {"prompt": "two", "count": 2, "wait_seconds": 30})
            assert not made.is_error
            refused = await client.call_tool("generate_image", {"prompt": "over", "count": 2, "wait_seconds": 30})
            assert refused.is_error
        after = scrape(base)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("nano_banana_tasks_total", model="nano-banana-2", status="success") == 2
    created = sum(
        grew("nano_banana_api_requests_total", endpoint=e, outcome="ok") for e in ("create_stream", "create_async")
    )
    assert created == 2
    assert grew("nano_banana_api_requests_total", endpoint="download", outcome="ok") == 2
    assert (
        grew("nano_banana_api_requests_total", endpoint="create_stream", outcome="5xx")
        + grew("nano_banana_api_requests_total", endpoint="create_async", outcome="5xx")
        + grew("nano_banana_api_requests_total", endpoint="get_task", outcome="5xx")
        == 1
    )
    assert (
        sum(grew("nano_banana_api_request_seconds_count", endpoint=e) for e in ("create_stream", "create_async")) >= 2
    )
    assert grew("nano_banana_retries_total", reason="ServerError") >= 1
    assert grew("nano_banana_images_saved_total", model="nano-banana-2") == 2
    assert grew("nano_banana_image_bytes_saved_total", model="nano-banana-2") > 1000
    assert grew("nano_banana_limit_refusals_total", tenant="default") == 1
    assert grew("nano_banana_ledger_seconds_count", operation="add") == 2
    assert ("nano_banana_stream_slots_in_use", frozenset()) in after
    assert value(after, "nano_banana_stream_slots") == served.max_streams
    assert ("nano_banana_oldest_working_task_seconds", frozenset()) in after
    assert value(after, "nano_banana_tasks_working") == 0
