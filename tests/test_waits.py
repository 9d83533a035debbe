"""Every wait an agent is told to use stays at or under 45 s, below the ~60 s at which hosts cut a call off.

Read from what a real SDK client receives (the initialize result, every tool's description and schemas, resource
templates, a result that is still pending) and from README.md and SKILL.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 45
NUMBER = r"(\d+(?:\.\d+)?)"
SECONDS = r"\s?(?:s|secs?|seconds)\b"
ADVICE = [
    re.compile(rf"wait_seconds[\"'`]?\s*[=:]\s*{NUMBER}"),  # get_task(task_id, wait_seconds=30)
    re.compile(rf"\bwait\w*\W{{1,3}}[^.\n;]{{0,40}}?\b{NUMBER}{SECONDS}", re.IGNORECASE),  # waits up to 45 s
]


def advised_waits(text: str) -> list[float]:
    """The seconds of every wait that ``text`` advises or states as a default."""
    return [float(match[1]) for pattern in ADVICE for match in pattern.finditer(text)]


def test_the_detector_finds_advice_and_only_advice() -> None:
    """The check is not vacuous: it catches the advice this issue removed, and ignores a host's limit."""
    assert advised_waits("collect it with get_task(task_id, wait_seconds=60)") == [60]
    assert advised_waits('{"wait_seconds": 90}') == [90]
    assert advised_waits("Generation can outlast the call (`wait_seconds`, 60 s by default)") == [60]
    assert advised_waits("it waits up to 120 seconds") == [120]
    assert advised_waits("hosts cut a call off at about 60 s; the request times out after 30 s") == []


def descriptions(schema: Any) -> list[str]:
    """Every description and title in a JSON schema, and the default of each wait_seconds, as text."""
    found: list[str] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("description", "title") and isinstance(value, str):
                found.append(value)
            elif key == "wait_seconds" and isinstance(value, dict) and "default" in value:
                found.append(f"wait_seconds={value['default']}")
            found.extend(descriptions(value))
    elif isinstance(schema, list):
        for item in schema:
            found.extend(descriptions(item))
    return found


@pytest.mark.both_eras
@pytest.mark.anyio
async def test_nothing_the_server_sends_advises_a_wait_over_45_seconds(mcp_client: Client) -> None:
    """Instructions, server info, tool descriptions and schemas, resource templates, and a pending result's text."""
    texts = [mcp_client.instructions or "", str(mcp_client.server_info)]
    tools = (await mcp_client.list_tools()).tools
    for tool in tools:
        texts += [tool.description or "", tool.title or "", *descriptions(tool.input_schema)]
        texts += descriptions(tool.output_schema or {})
    templates = (await mcp_client.list_resource_templates()).resource_templates
    texts += [f"{t.name} {t.description or ''}" for t in templates]
    pending = await mcp_client.call_tool("generate_image", {"prompt": "a kite", "wait_seconds": 0})
    assert not pending.is_error, pending.content
    texts += [block.text for block in pending.content if block.type == "text"]
    texts.append(str((pending.structured_content or {}).get("next_step", "")))

    advice = {text: advised_waits(text) for text in texts if advised_waits(text)}
    too_long = {text: waits for text, waits in advice.items() if max(waits) > LIMIT}
    assert not too_long
    assert any("wait_seconds" in text for text in advice)  # the defaults and the collect advice were read
    assert all(
        tool.input_schema["properties"]["wait_seconds"].get("default", 0) <= LIMIT
        for tool in tools
        if "wait_seconds" in tool.input_schema.get("properties", {})
    )


@pytest.mark.parametrize("doc", ["README.md", "SKILL.md"])
def test_the_docs_advise_no_wait_over_45_seconds(doc: str) -> None:
    """README.md and SKILL.md pass the same check (and do advise waits, so the check is not empty)."""
    waits = advised_waits((ROOT / doc).read_text(encoding="utf-8"))
    assert waits
    assert max(waits) <= LIMIT
