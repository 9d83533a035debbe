"""Results shaped for OpenClaw (issue 24): no structuredContent (it would be shown as text before the summary, and
twice under Tool Search) and no outputSchema that would require it; every other client keeps both."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp import Client
from mcp_types import Implementation

from nano_banana_mcp.config import Settings
from nano_banana_mcp.mcp_server import create_server
from nano_banana_mcp.mcp_server.clients import is_openclaw

pytestmark = pytest.mark.anyio

OPENCLAW = Implementation(name="openclaw-bundle-mcp", version="0.0.0")


@pytest.fixture
async def openclaw(settings: Settings) -> AsyncIterator[Client]:
    async with Client(create_server(settings), mode="legacy", client_info=OPENCLAW) as client:
        yield client


async def test_openclaw_gets_the_summary_alone(openclaw: Client) -> None:
    """One image: the whole result is its summary and a link, under 1 KB of text, with nothing repeated."""
    tools = (await openclaw.list_tools()).tools
    assert [t.name for t in tools if t.output_schema is not None] == []
    result = await openclaw.call_tool("generate_image", {"prompt": "a fox"})
    assert result.structured_content is None
    assert [b.type for b in result.content] == ["text", "resource_link"]
    assert result.content[0].type == "text" and len(result.content[0].text.encode()) <= 1024
    listed = await openclaw.call_tool("list_tasks", {})
    assert listed.structured_content is None
    assert listed.content[0].type == "text" and "task_" in listed.content[0].text


@pytest.mark.both_eras
async def test_other_clients_keep_structured_content(mcp_client: Client) -> None:
    tools = {t.name: t for t in (await mcp_client.list_tools()).tools}
    assert tools["generate_image"].output_schema is not None
    result = await mcp_client.call_tool("generate_image", {"prompt": "a fox"})
    assert result.structured_content is not None and result.structured_content["status"] == "success"


class _Session:
    def __init__(self, name: str | None) -> None:
        self.client_params = (
            None if name is None else type("P", (), {"client_info": Implementation(name=name, version="1")})()
        )


@pytest.mark.parametrize(
    ("name", "expected"),
    [("openclaw-bundle-mcp", True), ("OpenClaw", True), ("claude-code", False), ("", False), (None, False)],
)
def test_openclaw_is_told_by_its_client_name(name: str | None, expected: bool) -> None:
    assert is_openclaw(_Session(name)) is expected
