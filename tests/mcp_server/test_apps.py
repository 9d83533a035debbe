"""The MCP Apps extension on the wire: the binding and the view for clients that negotiated it, nothing for others."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp_types import TextResourceContents

from nano_banana_mcp.config import Settings
from nano_banana_mcp.mcp_server import create_server
from nano_banana_mcp.mcp_server.apps import REQUEST_META, VIEWER_URI
from nano_banana_mcp.mcp_server.usage import USAGE_URI
from nano_banana_mcp.uris import SETS_URI

pytestmark = [pytest.mark.anyio, pytest.mark.both_eras]  # capability negotiation: the protocol is the subject

APP_MIME = "text/html;profile=mcp-app"
APPS = advertise("io.modelcontextprotocol/ui", {"mimeTypes": [APP_MIME]})
BOUND = {"generate_image", "get_task", "list_tasks"}
SERVER_INFO = "io.modelcontextprotocol/serverInfo"  # the 2026-era stamp every result carries


@pytest.fixture
async def apps_client(settings: Settings, mode: str) -> AsyncIterator[Client]:
    """An SDK client that advertises MCP Apps (text/html;profile=mcp-app), as Claude, VS Code or Goose do."""
    async with Client(create_server(settings), mode=mode, extensions=[APPS], read_timeout_seconds=30) as client:
        yield client


def listed(tools: Any) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.tools]


async def test_bound_tools_name_the_view_in_the_specs_shape(apps_client: Client, mode: str) -> None:
    """For a client with Apps, generate_image, get_task and list_tasks carry `_meta.ui.resourceUri` (nothing else, not
    the deprecated flat `ui/resourceUri` key) and the others carry no `_meta`; the server advertises the extension
    (2026-07-28: a 2025-11-25 handshake has no place for it, and hosts go by the tools' `_meta`)."""
    tools = {t["name"]: t for t in listed(await apps_client.list_tools())}
    for name, tool in tools.items():
        if name in BOUND:
            assert tool["_meta"] == {"ui": {"resourceUri": VIEWER_URI}}, name
        else:
            assert "_meta" not in tool, name
    if mode == "auto":
        assert "io.modelcontextprotocol/ui" in (apps_client.server_capabilities.extensions or {})


async def test_a_client_without_apps_lists_exactly_what_it_did(apps_client: Client, mcp_client: Client) -> None:
    """Without the extension, tools/list has no binding (the spec: offer UI-bound tools after checking the client's
    capabilities) and is otherwise the same list; resources/list has no ui:// view."""
    plain = listed(await mcp_client.list_tools())
    assert all("_meta" not in tool for tool in plain)
    assert plain == [{k: v for k, v in t.items() if k != "_meta"} for t in listed(await apps_client.list_tools())]
    listed_uris = [r.uri for r in (await mcp_client.list_resources()).resources]
    assert sorted(listed_uris) == sorted([SETS_URI, USAGE_URI])
    assert sorted(r.uri for r in (await apps_client.list_resources()).resources) == sorted([*listed_uris, VIEWER_URI])


async def test_view_is_one_small_self_contained_html_document(apps_client: Client) -> None:
    """The view reads as text/html;profile=mcp-app, an HTML5 document of at most 150 KB that loads nothing from
    anywhere (hosts allow no network by default); it asks for clipboard-write, for its Copy path button."""
    [resource] = [r for r in (await apps_client.list_resources()).resources if r.uri.startswith("ui://")]
    assert (resource.uri, resource.mime_type) == (VIEWER_URI, APP_MIME)
    [content] = (await apps_client.read_resource(VIEWER_URI)).contents
    assert isinstance(content, TextResourceContents)
    assert content.mime_type == APP_MIME
    html = content.text
    assert html.lower().startswith("<!doctype html>")
    assert len(html.encode()) <= 150 * 1024
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"\b(fetch|XMLHttpRequest|WebSocket|EventSource)\s*\(", html)
    assert content.meta == {"ui": {"permissions": {"clipboardWrite": {}}, "prefersBorder": True}}


async def test_a_client_without_apps_gets_exactly_todays_result(mcp_client: Client) -> None:
    """Without the extension a result carries no request details: the same summary, preview, link and structured
    content as before the view existed."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "a plain result", "aspect_ratio": "3:2"})
    assert set(result.meta or {}) <= {SERVER_INFO}
    assert [block.type for block in result.content] == ["text", "image", "resource_link"]
    collected = await mcp_client.call_tool("get_task", {"task_id": result.structured_content["task_id"]})
    assert set(collected.meta or {}) <= {SERVER_INFO}
    assert collected.structured_content == result.structured_content


async def test_a_client_with_apps_also_gets_the_request(apps_client: Client) -> None:
    """With the extension, generate_image and get_task results also carry their request in `_meta` (hosts keep
    `_meta` out of the model's context) for the view's Variations, Edit and Retry; the rest is unchanged."""
    arguments = {"prompt": "two ships", "aspect_ratio": "16:9", "resolution": "2K", "count": 2}
    result = await apps_client.call_tool("generate_image", arguments)
    expected: dict[str, Any] = {"prompt": "two ships", "model": "nano-banana-2", "images": [], "aspect_ratio": "16:9"}
    expected |= {"resolution": "2K", "output_format": None, "count": 2}
    assert result.meta is not None
    assert result.meta[REQUEST_META] == expected
    assert [block.type for block in result.content] == ["text"] + ["image", "resource_link"] * 2
    one = await apps_client.call_tool("get_task", {"task_id": result.structured_content["task_ids"][1]})
    assert one.meta is not None
    assert one.meta[REQUEST_META] == expected | {"count": 1}
    listed_tasks = await apps_client.call_tool("list_tasks", {})
    assert REQUEST_META not in (listed_tasks.meta or {})


async def test_tool_list_stays_within_8_5_kb_for_a_client_without_apps(mcp_client: Client) -> None:
    """Graceful degradation costs nothing: without the extension tools/list is what it was, within 8.5 KB."""
    tools = await mcp_client.list_tools()
    assert len(tools.model_dump_json(by_alias=True, exclude_none=True)) <= 8.5 * 1024


async def test_binding_adds_little_and_only_outside_the_models_context(apps_client: Client, mcp_client: Client) -> None:
    """With the extension the binding adds under 200 bytes to tools/list, all of it in the tools' `_meta`, which
    hosts keep out of the model's context."""
    bound = await apps_client.list_tools()
    plain = await mcp_client.list_tools()
    added = len(bound.model_dump_json(by_alias=True, exclude_none=True)) - len(
        plain.model_dump_json(by_alias=True, exclude_none=True)
    )
    assert 0 < added < 200
    assert len(bound.model_dump_json(by_alias=True, exclude_none=True)) <= 8.5 * 1024
    assert [t.model_dump(exclude={"meta"}) for t in bound.tools] == [
        t.model_dump(exclude={"meta"}) for t in plain.tools
    ]


async def test_view_reads_results_as_the_host_hands_them_over(apps_client: Client) -> None:
    """What the view relies on is in a bound result's wire form: structuredContent with task_id, status and images
    (each with its nano-banana:// uri), and one preview before each image's resource link."""
    result = await apps_client.call_tool("generate_image", {"prompt": "a wire form"})
    wire = json.loads(result.model_dump_json(by_alias=True, exclude_none=True))
    image = wire["structuredContent"]["images"][0]
    assert image["uri"] == f"nano-banana://tasks/{wire['structuredContent']['task_id']}/images/0"
    preview, link = wire["content"][1:3]
    assert (preview["type"], preview["mimeType"], link["type"], link["uri"]) == (
        "image",
        "image/jpeg",
        "resource_link",
        image["uri"],
    )
