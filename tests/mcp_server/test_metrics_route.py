"""GET /metrics on the HTTP server: Prometheus text to a bearer of its token, parsed with prometheus-client's own
parser after real calls (generations, a retried 503, a limit refusal)."""

from __future__ import annotations

from pathlib import Path
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


@pytest.mark.parametrize("metrics_token", [None, TOKEN])
def test_a_tenants_token_does_not_open_metrics(
    tmp_path: Path, settings: Settings, serve_http: ServeHttp, metrics_token: str | None
) -> None:
    """With a tokens file, /metrics (every tenant's figures and names) is the operator's: NANO_BANANA_METRICS_TOKEN
    opens it, a tenant's token never does; without a metrics token it is closed, saying which setting opens it."""
    tokens = tmp_path / "tokens"
    tokens.write_text("alice alice-token-0123456789\n")
    tokens.chmod(0o600)
    update: dict[str, object] = {"http_tokens_file": tokens, "http_token": None}
    if metrics_token is not None:
        update["metrics_token"] = SecretStr(metrics_token)
    with serve_http(settings.model_copy(update=update)) as base:
        as_alice = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer alice-token-0123456789"}, timeout=20)
        assert "nano_banana" not in as_alice.text
        if metrics_token is None:
            assert as_alice.status_code == 403
            assert "NANO_BANANA_METRICS_TOKEN" in as_alice.text
        else:
            assert as_alice.status_code == 401
            assert value(scrape(base), "nano_banana_stream_slots") >= 1
