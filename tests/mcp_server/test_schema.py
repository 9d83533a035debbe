"""Schema compaction: what pydantic adds for human readers is dropped; what an agent needs stays."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mcp import Client

from nano_banana_mcp.mcp_server.schema import compact_schema, shorten_nullable

pytestmark = pytest.mark.anyio


def test_titles_and_null_defaults_go_but_properties_of_those_names_stay() -> None:
    """`title` and `default: null` keywords are dropped; properties named title or default are not."""
    schema = {
        "title": "Args",
        "type": "object",
        "properties": {
            "title": {"title": "Title", "type": "string", "default": None},
            "default": {"type": "integer", "default": 3},
        },
    }
    assert compact_schema(schema) == {
        "type": "object",
        "properties": {"title": {"type": "string"}, "default": {"type": "integer", "default": 3}},
    }


def test_descriptions_of_defs_go_and_their_fields_keep_theirs() -> None:
    """A nested model's docstring is for readers of the code; its fields' descriptions are for the agent."""
    schema = {
        "$defs": {
            "Image": {
                "description": "One saved image.",
                "type": "object",
                "properties": {"path": {"type": "string", "description": "Absolute path."}},
            }
        },
        "$ref": "#/$defs/Image",
    }
    assert compact_schema(schema)["$defs"] == {
        "Image": {"type": "object", "properties": {"path": {"type": "string", "description": "Absolute path."}}}
    }


@pytest.mark.parametrize(
    ("node", "expected"),
    [
        pytest.param(
            {"anyOf": [{"type": "string", "maxLength": 9}, {"type": "null"}], "description": "d"},
            {"type": ["string", "null"], "maxLength": 9, "description": "d"},
            id="type",
        ),
        pytest.param(
            {"anyOf": [{"type": "string", "enum": ["1K", "2K"]}, {"type": "null"}]},
            {"type": ["string", "null"], "enum": ["1K", "2K", None]},
            id="enum-takes-null",
        ),
        pytest.param(
            {"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}]},
            {"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}]},
            id="ref-kept",
        ),
        pytest.param(
            {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            id="not-nullable",
        ),
    ],
)
def test_nullable_is_written_the_short_way(node: dict[str, Any], expected: dict[str, Any]) -> None:
    """`anyOf [T, null]` becomes `type: [T, null]` where that means the same; anything else is left alone."""
    assert shorten_nullable(node) == expected


@pytest.mark.both_eras
async def test_hosts_see_compact_schemas(mcp_client: Client) -> None:
    """No tool's input or output schema, as tools/list gives it, carries a pydantic title or a null default."""
    tools = await mcp_client.list_tools()
    for tool in tools.tools:
        for schema in (tool.input_schema, tool.output_schema or {}):
            assert compact_schema(schema) == schema, tool.name
            assert '"anyOf": [{"type": "string"}, {"type": "null"}]' not in json.dumps(schema)


@pytest.mark.both_eras
async def test_tool_list_costs_the_agent_little(mcp_client: Client) -> None:
    """Every connection pays for tools/list in context: the whole answer stays within 8.5 KB."""
    tools = await mcp_client.list_tools()
    assert len(tools.model_dump_json(by_alias=True, exclude_none=True)) <= 8.5 * 1024
