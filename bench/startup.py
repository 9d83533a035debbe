"""Start-up: process spawn to a completed `list_tools` over stdio, ours beside a minimal one-tool MCPServer.

    .venv/bin/python bench/startup.py [--runs 9]

Runs alternate (ours, floor, ours, floor, ...) so machine noise hits both alike; medians are compared.
Goal: ours <= 1.15x the floor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from _common import COMMAND, server_env, write

MINIMAL = str(Path(__file__).with_name("_minimal_server.py"))


async def spawn_to_tools(params: StdioServerParameters) -> float:
    started = time.perf_counter()
    async with Client(params, read_timeout_seconds=60) as client:
        await client.list_tools()
        return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    env = server_env("https://monet.vision")  # no emulator needed: nothing is called
    ours_params = StdioServerParameters(command=COMMAND, args=[], env=env)
    floor_params = StdioServerParameters(command=sys.executable, args=[MINIMAL], env=env)
    ours: list[float] = []
    floor: list[float] = []
    await spawn_to_tools(ours_params)  # warm the OS file cache for both, untimed
    await spawn_to_tools(floor_params)
    for _ in range(args.runs):
        ours.append(await spawn_to_tools(ours_params))
        floor.append(await spawn_to_tools(floor_params))
    write(
        "startup",
        {
            "runs": args.runs,
            "ours_median_s": round(statistics.median(ours), 3),
            "floor_median_s": round(statistics.median(floor), 3),
            "ratio": round(statistics.median(ours) / statistics.median(floor), 3),
            "ours_s": [round(x, 3) for x in ours],
            "floor_s": [round(x, 3) for x in floor],
        },
    )


if __name__ == "__main__":
    anyio.run(main)
