"""Peak memory of previews: three concurrent `get_task` on one result image, in a real server process.

    .venv/bin/python bench/preview_rss.py [--label after]

Each scenario runs a fresh `nano-banana-mcp` process over stdio. The emulator serves the scenario's PNG
as the task's output (the `output_bytes` fault); `generate_image` is called with `wait_seconds=0` and the
task is watched through `list_tasks` (which makes no preview) until it ends, so the first preview is made
by the three concurrent `get_task` calls. Then three more `get_task` follow (a preview kept is not made
again). Peak RSS is the server's VmHWM (Linux) before and after the calls.

- `bomb`: 13000x13000 (169 MP, ~0.5 MB on the wire; under Pillow's own bomb limit of 179 MP)
- `large`: 6000x6000 (36 MP), larger than any output the models make (4K is ~17 MP)

Figures are written under `--label` in `bench/results/preview_rss.json`, beside those of other labels
(run it with `--label before` on the code before a change, then with `--label after`).
"""

from __future__ import annotations

import argparse
import os
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from _common import COMMAND, KEY, server_env, stdio_server, write_labelled
from nano_banana_mcp.emulator import Emulator, serve_in_thread

SCENARIOS = {"bomb": (13000, 13000), "large": (6000, 6000)}
CALLS = 3


def blank_png(width: int, height: int) -> bytes:
    """A valid RGB PNG of one flat colour, compressed row by row (never the whole image in memory)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    squeeze = zlib.compressobj(9)
    row = b"\x00" + bytes([40, 90, 160]) * width  # filter byte, then the pixels
    idat = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def server_pid() -> int:
    """The `nano-banana-mcp` process this script spawned (the stdio client's child)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and COMMAND.encode() in cmdline:
            return int(entry.name)
    raise RuntimeError("the server process was not found")


def memory_mb(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in ("VmHWM", "VmRSS")}


async def scenario(emulator: Emulator, base_url: str, size: tuple[int, int]) -> dict[str, Any]:
    emulator.reset()
    emulator.task_seconds = 0.2
    emulator.faults.output_bytes = blank_png(*size)
    figures: dict[str, Any] = {"pixels": f"{size[0]}x{size[1]}", "png_bytes": len(emulator.faults.output_bytes)}
    async with Client(stdio_server(server_env(base_url)), read_timeout_seconds=300) as client:
        made = await client.call_tool("generate_image", {"prompt": "preview memory", "wait_seconds": 0})
        task_id = made.structured_content["task_id"]
        with anyio.fail_after(120):
            while True:  # list_tasks makes no preview
                [row] = (await client.call_tool("list_tasks", {})).structured_content["tasks"]
                if row["status"] in ("success", "failed"):
                    break
                await anyio.sleep(0.1)
        task_id = row["task_id"]
        pid = server_pid()
        before = memory_mb(pid)
        rounds: list[dict[str, Any]] = []
        for _ in range(2):
            results: list[Any] = []
            started = time.monotonic()

            async def get(results: list[Any] = results) -> None:
                results.append(await client.call_tool("get_task", {"task_id": task_id}))

            async with anyio.create_task_group() as tg:
                for _ in range(CALLS):
                    tg.start_soon(get)
            rounds.append(
                {
                    "seconds": round(time.monotonic() - started, 2),
                    "previews": sum(c.type == "image" for r in results for c in r.content),
                    "errors": sum(bool(r.is_error) for r in results),
                    "peak_rss_mb": memory_mb(pid)["VmHWM"],
                }
            )
        last = results[-1]
        data = last.structured_content or {}
        figures |= {
            "status": data.get("status", "tool error"),
            "error": data.get("error") or (None if not last.is_error else last.content[0].text[:200]),
            "downloads": emulator.downloads,
            "peak_rss_before_calls_mb": before["VmHWM"],
            "rss_before_calls_mb": before["VmRSS"],
            f"first_{CALLS}_calls": rounds[0],
            f"next_{CALLS}_calls": rounds[1],
            "growth_mb": round(rounds[-1]["peak_rss_mb"] - before["VmHWM"], 1),
        }
    return figures


async def run() -> dict[str, Any]:
    emulator = Emulator(api_key=KEY, task_seconds=0.2, stream_interval=0.05)
    with serve_in_thread(emulator) as base_url:
        return {name: await scenario(emulator, base_url, size) for name, size in SCENARIOS.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="where the figures go in the results file")
    args = parser.parse_args()
    figures = anyio.run(run)
    write_labelled(
        "preview_rss",
        args.label,
        figures,
        command=".venv/bin/python bench/preview_rss.py --label LABEL",
        measure="server VmHWM (MB) before and after 3 concurrent get_task, then 3 more, per scenario",
    )


if __name__ == "__main__":
    main()
