"""Schema compaction: the tools' JSON schemas without what pydantic adds for human readers.

Every connection pays for ``tools/list`` in the agent's context, so titles, null defaults, the
docstrings of nested models and ``format: date-time`` (an annotation JSON Schema 2020-12 validators do not assert; the
values are plain ISO 8601) are dropped, and nullable types are written the short way.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver.tools import Tool

__all__ = ["compact_schema", "shorten_nullable", "slim_tool"]


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without titles, ``default: null``, ``format: date-time`` or ``$defs`` descriptions; nullable types
    shortened."""
    compacted: dict[str, Any] = _compact(schema)
    return compacted


def shorten_nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [{type: T, ...}, {type: null}]`` written the short way: ``type: [T, null]``."""
    options = node.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and {"type": "null"} in options):
        return node
    other: dict[str, Any] = next(o for o in options if o != {"type": "null"})
    if not isinstance(other.get("type"), str) or "$ref" in other:
        return node
    merged = {k: v for k, v in node.items() if k != "anyOf"} | other | {"type": [other["type"], "null"]}
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged


def slim_tool(tool: Tool) -> Tool:
    """``tool`` with its input and output schemas compacted (in place; returned for chaining)."""
    tool.parameters = compact_schema(tool.parameters)
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema)
    return tool


def _compact(node: Any, *, in_properties: bool = False) -> Any:
    """One node of a schema, compacted; ``in_properties`` when its keys are property names, not keywords."""
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if not in_properties and (
            (key == "title" and isinstance(value, str))
            or (key == "default" and value is None)
            or (key == "format" and value == "date-time")
        ):
            continue
        if key == "$defs":  # the classes' docstrings are for readers of the code
            defs = {name: {k: v for k, v in d.items() if k != "description"} for name, d in value.items()}
            out[key] = _compact(defs, in_properties=True)
        else:
            out[key] = _compact(value, in_properties=key == "properties")
    return shorten_nullable(out) if not in_properties else out
