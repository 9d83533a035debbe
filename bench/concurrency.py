"""Concurrency: N `generate_image` calls at once from one client to one real server process.

    .venv/bin/python bench/concurrency.py [--calls 200] [--task-seconds 3]

Reports whether all succeeded, wall time, the server's peak RSS (VmHWM) and its CPU seconds per task
(user + system, from /proc: Linux only, like the rest of the benchmarks).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import anyio
from mcp import Client

from _common import KEY, server_env, stdio_server, write
from nano_banana_mcp.emulator import Emulator, serve_in_thread

TICKS = os.sysconf("SC_CLK_TCK")


def server_pid() -> int:
    """Our child running nano-banana-mcp (the SDK's stdio client spawned it)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and b"nano-banana-mcp" in cmdline:
            return int(proc.name)
    raise SystemExit("server process not found")


def usage(pid: int) -> tuple[float, int]:
    """(CPU seconds, peak RSS in KB) of a process."""
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / TICKS
    hwm = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    return cpu, int(hwm.split()[1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--task-seconds", type=float, default=3.0)
    args = parser.parse_args()
    emulator = Emulator(api_key=KEY, task_seconds=args.task_seconds, stream_interval=0.25)
    with serve_in_thread(emulator) as base_url:
        async with Client(stdio_server(server_env(base_url)), read_timeout_seconds=300) as client:
            await client.list_tools()
            pid = server_pid()
            cpu_idle, rss_idle = usage(pid)
            statuses: list[str] = []

            async def one(i: int) -> None:
                result = await client.call_tool("generate_image", {"prompt": f"crowd {i}", "wait_seconds": 300})
                statuses.append("error" if result.is_error else result.structured_content["status"])

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for i in range(args.calls):
                    tg.start_soon(one, i)
            wall = time.monotonic() - started
            cpu_end, rss_peak = usage(pid)
    write(
        "concurrency",
        {
            "calls": args.calls,
            "succeeded": statuses.count("success"),
            "task_seconds": args.task_seconds,
            "wall_s": round(wall, 2),
            "server_peak_rss_mb": round(rss_peak / 1024, 1),
            "server_rss_after_start_mb": round(rss_idle / 1024, 1),
            "server_cpu_s_per_task": round((cpu_end - cpu_idle) / args.calls, 4),
            "api_tasks_created": emulator.creates,
        },
    )


if __name__ == "__main__":
    anyio.run(main)
