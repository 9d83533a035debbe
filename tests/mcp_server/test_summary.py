"""The first text block of an image result is a complete, short summary (issue 24): status, saved paths, each image's
uri, the next step; and the inline preview goes only to hosts that show it as an image."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mcp import Client
from mcp_types import CallToolResult, ImageContent, Implementation, TextContent

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import TextOf

pytestmark = pytest.mark.anyio

OPENCLAW = Implementation(name="openclaw-bundle-mcp", version="0.0.0")  # what OpenClaw 2026.9.6 sends
BASE64_RUN = re.compile(r"[A-Za-z0-9+/=]{200,}")


def first_text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


async def test_the_first_text_block_says_it_all(mcp_client: Client) -> None:
    """Saved: every path with its size and uri, and what to do next; no image data in structuredContent."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "two foxes", "count": 2})
    data = result.structured_content
    assert data is not None and data["status"] == "success"
    text = first_text(result)
    assert text.startswith("Saved 2 images from nano-banana-2")
    for image in data["images"]:
        assert f"- {image['path']} ({image['width']}x{image['height']}, " in text
        assert f"uri {image['uri']}" in text
    assert "Next: show the saved file to the user." in text
    assert "MEDIA:" not in text  # only for a host that reads it
    assert len(text.encode()) <= 1024
    assert [b.type for b in result.content].count("image") == 2  # previews for a host that shows images
    assert not [s for s in strings(data) if BASE64_RUN.search(s)]


async def test_a_pending_result_names_the_task_and_the_next_call(
    mcp_client: Client, emulator: Emulator, text_of: TextOf
) -> None:
    emulator.task_seconds = 5
    result = await mcp_client.call_tool("generate_image", {"prompt": "a slow fox", "wait_seconds": 0})
    task_id = result.structured_content["task_id"]
    text = first_text(result)
    assert f"Task {task_id} is " in text
    assert f'get_task(task_id="{task_id}", wait_seconds=30)' in text


@pytest.fixture
async def openclaw(settings: Settings) -> AsyncIterator[Client]:
    """The server as OpenClaw connects to it: 2025-11-25, its client name, no capabilities."""
    async with Client(create_server(settings), mode="legacy", client_info=OPENCLAW) as client:
        yield client


async def test_openclaw_gets_media_lines_and_no_preview(openclaw: Client) -> None:
    """OpenClaw's Tool Search turns an image block into base64 text: no preview; the next step is the standalone
    MEDIA: line of each saved path, as its rich-output protocol reads them."""
    result = await openclaw.call_tool("generate_image", {"prompt": "a fox for the chat"})
    assert not result.is_error
    assert not [b for b in result.content if isinstance(b, ImageContent)]
    text = first_text(result)
    [path] = re.findall(r"^- (/\S+\.png) \(", text, re.MULTILINE)
    assert Path(path).is_file()
    assert f"\nMEDIA:{path}\n" in text  # alone on its line
    assert "no Markdown" in text


@pytest.mark.parametrize(("setting", "client_info", "previews"), [("on", OPENCLAW, 1), ("off", None, 0)])
async def test_the_preview_setting_overrides_the_choice(
    settings: Settings, setting: str, client_info: Implementation | None, previews: int
) -> None:
    chosen = settings.model_copy(update={"preview": setting})
    async with Client(create_server(chosen), mode="legacy", client_info=client_info) as client:
        result = await client.call_tool("generate_image", {"prompt": "a fox"})
    assert not result.is_error
    assert [b.type for b in result.content].count("image") == previews
