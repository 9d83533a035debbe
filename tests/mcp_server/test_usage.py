"""nano-banana://usage: the caller's own usage over MCP, as JSON (a resource: tools/list stays as it was)."""

from __future__ import annotations

import json

import pytest
from mcp import Client
from mcp_types import TextResourceContents

from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server.usage import USAGE_URI

pytestmark = pytest.mark.anyio


@pytest.mark.both_eras
async def test_usage_resource_counts_what_was_made(mcp_client: Client, emulator: Emulator) -> None:
    emulator.task_seconds = 0
    listed = await mcp_client.list_resources()
    assert USAGE_URI in {str(r.uri) for r in listed.resources}
    made = await mcp_client.call_tool("generate_image", {"prompt": "two", "count": 2, "resolution": "2K"})
    assert not made.is_error
    read = await mcp_client.read_resource(USAGE_URI)
    [content] = read.contents
    assert isinstance(content, TextResourceContents)
    report = json.loads(content.text)
    assert report["unit"] == "images"
    [mine] = report["today"]["tenants"]
    assert mine["tenant"] == "default"
    assert mine["lines"] == [{"model": "nano-banana-2", "resolution": "2K", "images": 2, "cost": None}]
    assert report["month"]["images"] == 2
