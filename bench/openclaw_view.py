"""What OpenClaw shows the model of one image result, in bytes, with Tool Search on (its default) and off.

    .venv/bin/python bench/openclaw_view.py --label after
    PYTHONPATH=/path/to/other/checkout/server .venv/bin/python bench/openclaw_view.py --label before

The server runs in this process (offline emulator), and an SDK client that introduces itself as OpenClaw's does
(``clientInfo.name`` ``openclaw-bundle-mcp``, protocol 2025-11-25, no capabilities) calls ``generate_image`` once
per count (1 and 4 images). Its ``CallToolResult`` is then projected the way OpenClaw 2026.9.6 projects it for
the model (ported from its npm package, ``dist/mcp-content-*.mjs``, ``src/agents/mcp-content.ts``):

- every result: ``structuredContent`` first, as ``"structuredContent:\\n"`` + its keys sorted, pretty-printed (2
  spaces); then each block: text as is, an image as an image, a resource link as ``"[name] uri"``
  (``projectMcpCallToolResultContent``);
- Tool Search on: the ``tool_call`` answer is that projection in an envelope ``{"tool": {id, name, source},
  "result": {"content": [...], "details": {mcpServer, mcpTool, structuredContent}}}`` serialized with
  ``JSON.stringify(payload, null, 2)`` (``src/agents/tool-search-control-result.ts``): an image block is its base64
  text there. OpenClaw wraps that in its fixed untrusted-content notice (about 720 bytes, not counted here; the real
  turn in .ci/clients.sh measures it) and cuts it at 20,000 characters;
- Tool Search off: the blocks go to the model as they are: text (counted) and image blocks (counted apart: a vision
  model sees an image, a text-only one loses it).

Figures are per image: the result's bytes divided by the images it holds. Goal: <= 2 KB of text with Tool Search.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from mcp_types import Implementation

from nano_banana_mcp.config import Settings
from nano_banana_mcp.mcp_server import create_server

sys.path.insert(0, str(Path(__file__).parent))
from _common import write_labelled

OPENCLAW = Implementation(name="openclaw-bundle-mcp", version="0.0.0")
SERVER = "nano-banana"
CUT = 20_000  # characters OpenClaw keeps of a Tool Search control result


def _sorted(value: Any) -> Any:
    """OpenClaw's stableStringify: object keys in order, recursively."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _js(value: Any) -> str:
    """``JSON.stringify(value, null, 2)``."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def project(result: dict[str, Any]) -> list[dict[str, Any]]:
    """``projectMcpCallToolResultContent``: the blocks the model gets, from the wire form of a CallToolResult."""
    blocks: list[dict[str, Any]] = []
    structured = result.get("structuredContent")
    content = result.get("content") or []
    if isinstance(structured, dict):
        blocks.append({"type": "text", "text": f"structuredContent:\n{_js(_sorted(structured))}"})
        mirrored = _js(structured)
        content = [b for b in content if not (b.get("type") == "text" and b.get("text") == mirrored)]
    for block in content:
        kind = block.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            blocks.append({"type": "image", "data": block["data"], "mimeType": block["mimeType"]})
        elif kind == "resource_link":
            label = block.get("title") or block.get("name")
            blocks.append({"type": "text", "text": f"[{label}] {block['uri']}" if label else block["uri"]})
        else:
            blocks.append({"type": "text", "text": json.dumps(block)})
    return blocks


def tool_search_text(result: dict[str, Any], tool: str, *, cut: bool = True) -> str:
    """The ``tool_call`` answer's JSON text (before the untrusted-content wrapper), cut as OpenClaw cuts it."""
    details: dict[str, Any] = {"mcpServer": SERVER, "mcpTool": tool}
    if result.get("structuredContent") is not None:
        details["structuredContent"] = result["structuredContent"]
    payload = {
        "tool": {"id": f"mcp:{SERVER}:{SERVER}__{tool}", "name": f"{SERVER}__{tool}", "source": "mcp"},
        "result": {"content": project(result), "details": details},
    }
    text = _js(payload)
    return text if len(text) <= CUT or not cut else text[: CUT - 12] + "\n[truncated]"


def measure(result: dict[str, Any], images: int) -> dict[str, Any]:
    blocks = project(result)
    on = tool_search_text(result, "generate_image").encode()
    uncut = tool_search_text(result, "generate_image", cut=False).encode()
    text_off = sum(len(b["text"].encode()) for b in blocks if b["type"] == "text")
    image_off = sum(len(b["data"]) for b in blocks if b["type"] == "image")
    return {
        "images": images,
        "tool_search_on_text_bytes_per_image": round(len(on) / images),
        "tool_search_on_uncut_bytes_per_image": round(len(uncut) / images),
        "tool_search_on_of_which_base64_per_image": round(image_off / images),
        "tool_search_off_text_bytes_per_image": round(text_off / images),
        "tool_search_off_image_block_base64_bytes_per_image": round(image_off / images),
        "structured_content": result.get("structuredContent") is not None,
        "first_text_block": next((b["text"] for b in result.get("content") or [] if b.get("type") == "text"), ""),
    }


async def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="nb-openclaw-view-"))
    settings = Settings(
        offline=True, output_dir=work / "out", data_dir=work / "data", emulator_task_seconds=0.2, allowed_dirs=[work]
    )
    figures: dict[str, Any] = {}
    async with Client(create_server(settings), mode="legacy", client_info=OPENCLAW) as client:
        for count in (1, 4):
            result = await client.call_tool(
                "generate_image", {"prompt": "a watercolor fox in the snow", "count": count, "wait_seconds": 30}
            )
            wire = result.model_dump(mode="json", by_alias=True, exclude_none=True)
            assert not result.is_error, wire
            figures[f"count_{count}"] = measure(wire, count)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="where the figures go in results/openclaw_view.json")
    args = parser.parse_args()
    figures = anyio.run(run)
    write_labelled(
        "openclaw_view",
        args.label,
        figures,
        command=f"PYTHONPATH=<checkout>/server .venv/bin/python bench/openclaw_view.py --label {args.label}",
        measure="bytes OpenClaw shows the model per image (Tool Search on: the tool_call JSON text before the "
        "~720-byte untrusted-content wrapper; off: text blocks, and the image block's base64 apart)",
    )


if __name__ == "__main__":
    main()
