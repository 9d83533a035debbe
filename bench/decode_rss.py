"""Peak memory of reference checks: 1, 4 and 8 concurrent calls of 14 data: URIs each, in a real server process.

    .venv/bin/python bench/decode_rss.py [--label after]

Each data: URI is a flat 6300x6300 PNG (about 115 KB) that decodes to about 159 MB, just under the 40 MP
cap. Each concurrency level runs a fresh `nano-banana-mcp` process over stdio against the emulator; the calls are
`generate_image` with `wait_seconds=0` (every reference is decoded and checked before anything is paid). Peak RSS
is the server's VmHWM (Linux) after the calls; `retained` is its VmRSS once they have all answered.

Figures are written under `--label` in `bench/results/decode_rss.json`, beside those of other labels (run it with
`--label before` on the code before a change, then with `--label after`).
"""

from __future__ import annotations

import argparse
import base64
import time
from typing import Any

import anyio
from mcp import Client

from _common import KEY, server_env, stdio_server, write_labelled
from nano_banana_mcp.emulator import Emulator, serve_in_thread
from preview_rss import blank_png, memory_mb, server_pid

SIDE = 6300  # 6300 x 6300 x 4 bytes = 159 MB decoded, under the 40 MP cap
REFERENCES = 14  # the most a call takes (nano-banana-2)
LEVELS = (1, 4, 8)


async def level(base_url: str, calls: int, uri: str) -> dict[str, Any]:
    async with Client(stdio_server(server_env(base_url)), read_timeout_seconds=600) as client:
        pid = server_pid()
        before = memory_mb(pid)
        results: list[Any] = []

        async def call() -> None:
            arguments = {"prompt": "decode memory", "images": [uri] * REFERENCES, "wait_seconds": 0}
            results.append(await client.call_tool("generate_image", arguments))

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(call)
        seconds = time.monotonic() - started
        after = memory_mb(pid)
        errors = [r.content[0].text[:200] for r in results if r.is_error]
        return {
            "calls": calls,
            "seconds": round(seconds, 1),
            "ok": len(results) - len(errors),
            "errors": errors[:3],
            "rss_before_mb": before["VmRSS"],
            "peak_rss_mb": after["VmHWM"],
            "retained_rss_mb": after["VmRSS"],
        }


async def run() -> dict[str, Any]:
    png = blank_png(SIDE, SIDE)
    uri = "data:image/png;base64," + base64.b64encode(png).decode()
    emulator = Emulator(api_key=KEY, task_seconds=0.2, stream_interval=0.05)
    figures: dict[str, Any] = {"png_bytes": len(png), "decoded_mb": round(SIDE * SIDE * 4 / 1e6, 1)}
    with serve_in_thread(emulator) as base_url:
        for calls in LEVELS:
            emulator.reset()
            figures[f"{calls}_calls"] = await level(base_url, calls, uri)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="where the figures go in the results file")
    args = parser.parse_args()
    figures = anyio.run(run)
    write_labelled(
        "decode_rss",
        args.label,
        figures,
        command=".venv/bin/python bench/decode_rss.py --label LABEL",
        measure="server VmHWM and VmRSS (MB) after N concurrent generate_image of 14 data: URIs each",
    )


if __name__ == "__main__":
    main()
