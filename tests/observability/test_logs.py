"""NANO_BANANA_LOG_FORMAT=json: a real server process logs one JSON object per line, with task id and tenant, and
never the API key or a bearer token."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.observability.logs import JsonFormatter, formatter

pytestmark = pytest.mark.anyio

TOKEN = "alice-bearer-token-0123456789"
_SERVED_AT = re.compile(r"server on (http://127\.0\.0\.1:\d+)/mcp")
BANNER = ("nano-banana MCP server on", "  claude mcp add")


async def test_json_logs_name_task_and_tenant_and_never_a_secret(
    command: str, process_env: dict[str, str], tmp_path: Path, emulator: Emulator, api_key: str
) -> None:
    emulator.task_seconds = 0.2
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {TOKEN}\n")
    tokens.chmod(0o600)
    metrics_token = "operator-metrics-token-0123456789"
    env = process_env | {
        "NANO_BANANA_LOG_FORMAT": "json",
        "NANO_BANANA_HTTP_TOKENS_FILE": str(tokens),
        "NANO_BANANA_METRICS_TOKEN": metrics_token,
    }
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [command, "serve", "--http", "--port", "0", "--log-level", "DEBUG"], env=env, stderr=err
        )
    try:
        deadline = time.monotonic() + 30  # only against a hang
        while not (found := _SERVED_AT.search(log.read_text(errors="replace"))):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        base = found.group(1)
        assert httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer wrong"}, timeout=20).status_code == 401
        scraped = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {metrics_token}"}, timeout=20)
        assert scraped.status_code == 200
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
            Client(streamable_http_client(f"{base}/mcp", http_client=http)) as client,
        ):
            made = await client.call_tool("generate_image", {"prompt": "logged", "wait_seconds": 30})
            assert not made.is_error
            assert made.structured_content is not None
            task_id = made.structured_content["task_id"]
    finally:
        process.terminate()
        process.wait(20)
    text = log.read_text(errors="replace")
    assert api_key not in text
    assert TOKEN not in text
    assert metrics_token not in text
    lines = [json.loads(line) for line in text.splitlines() if line.strip() and not line.startswith(BANNER)]
    assert lines, text
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    about_the_task = [line for line in lines if line.get("task_id") == task_id]
    assert about_the_task, text
    assert {line["tenant"] for line in about_the_task} == {"alice"}


def test_an_unknown_format_says_so_and_logs_text() -> None:
    chosen, warning = formatter("xml")
    assert not isinstance(chosen, JsonFormatter)
    assert warning == "NANO_BANANA_LOG_FORMAT='xml' is neither text nor json; logging as text. Set it to json or text."
    chosen, warning = formatter("JSON")
    assert isinstance(chosen, JsonFormatter) and warning is None
    formatter("text")  # back to the default for this worker's other tests
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "line\nbreak %s", ("arg",), None)
    assert json.loads(JsonFormatter().format(record))["message"] == "line\nbreak arg"
