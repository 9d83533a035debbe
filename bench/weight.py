"""Weight on the agent: bytes of the `tools/list` answer and of a finished 4K `generate_image` result.

    .venv/bin/python bench/weight.py

Sizes are of the JSON the client receives (compact, as on the wire). Goals: tools/list <= 8 KB;
a finished result with one 4K image <= 120 KB, thumbnail included; no full image inline.
"""

from __future__ import annotations

import base64

import anyio
from mcp import Client

from _common import KEY, server_env, stdio_server, write
from nano_banana_mcp.emulator import Emulator, serve_in_thread


async def main() -> None:
    emulator = Emulator(api_key=KEY, task_seconds=0.2)
    with serve_in_thread(emulator) as base_url:
        async with Client(stdio_server(server_env(base_url)), read_timeout_seconds=60) as client:
            tools = await client.list_tools()
            figures: dict[str, object] = {
                "tools_list_bytes": len(tools.model_dump_json(by_alias=True, exclude_none=True)),
            }
            for ratio in ("1:1", "16:9", "1:8"):
                result = await client.call_tool(
                    "generate_image", {"prompt": "weight", "aspect_ratio": ratio, "resolution": "4K"}
                )
                image = result.structured_content["images"][0]
                thumbs = [base64.b64decode(c.data) for c in result.content if c.type == "image"]
                figures[f"result_4k_{ratio.replace(':', 'x')}"] = {
                    "result_bytes": len(result.model_dump_json(by_alias=True, exclude_none=True)),
                    "thumbnail_bytes": len(thumbs[0]),
                    "full_image_bytes_on_disk": image["size_bytes"],
                    "image_px": [image["width"], image["height"]],
                }
    write("weight", figures)


if __name__ == "__main__":
    anyio.run(main)
