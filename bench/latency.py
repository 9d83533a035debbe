"""Completion latency and requests per task: ours beside a client that follows the seed's advice.

    .venv/bin/python bench/latency.py [--tasks 20] [--poll 5]

For each task we take the time from the emulator marking it done (``Emulator.finished_at``) to the
moment the caller has the image: for us, `generate_image` returning over stdio from a real server
process (the image downloaded, a thumbnail made, the result sent); for the baseline, a plain httpx
client that creates the task and polls ``GET /tasks/{id}`` every 5 s (the published skill's advice),
then downloads the image. Both run in the same process run, against the same emulator, with the same
task durations (random, 1-6 s, so the baseline's poll phase is not aligned with completion).
Requests per task count API calls (``/api/v1``), not the image download: ours is one, the create on
``/tasks/sync`` whose event stream carries the task to its end.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid
from collections import Counter

import anyio
import httpx
from mcp import Client

from _common import KEY, server_env, stdio_server, summary_ms, write
from nano_banana_mcp.emulator import Emulator, serve_in_thread


def api_requests_per_task(emulator: Emulator, before: int) -> Counter[str]:
    return Counter(r.path for r in emulator.requests[before:] if r.path.startswith("/api/v1/"))


async def ours(emulator: Emulator, base_url: str, durations: list[float]) -> tuple[list[float], float]:
    latencies: list[float] = []
    before = len(emulator.requests)
    async with Client(stdio_server(server_env(base_url)), read_timeout_seconds=120) as client:
        await client.list_tools()

        async def one(duration: float) -> None:
            emulator.task_seconds = duration
            result = await client.call_tool("generate_image", {"prompt": "latency", "wait_seconds": 120})
            returned = time.monotonic()
            finished = emulator.finished_at(result.structured_content["task_id"])
            assert result.structured_content["status"] == "success" and finished is not None
            latencies.append(returned - finished)

        async with anyio.create_task_group() as tg:
            for duration in durations:
                tg.start_soon(one, duration)
                await anyio.sleep(0.05)  # a steady trickle, as agents send them
    requests = sum(api_requests_per_task(emulator, before).values())
    return latencies, requests / len(durations)


async def baseline(emulator: Emulator, base_url: str, durations: list[float], poll: float) -> tuple[list[float], float]:
    """The seed's loop: create, then GET every `poll` seconds until success, then download."""
    latencies: list[float] = []
    before = len(emulator.requests)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as http:

        async def one(duration: float) -> None:
            emulator.task_seconds = duration
            body = {"type": "image", "input": {"model": "nano-banana-2", "prompt": "latency"}}
            task = (await http.post("/api/v1/tasks/async", json=body | {"idempotency_key": str(uuid.uuid4())})).json()
            while True:
                await anyio.sleep(poll)
                task = (await http.get(f"/api/v1/tasks/{task['id']}")).json()
                if task["status"] in ("success", "failed"):
                    break
            image = await http.get(task["outputs"][0]["url"])
            assert image.status_code == 200
            finished = emulator.finished_at(task["id"])
            assert finished is not None, task
            latencies.append(time.monotonic() - finished)

        async with anyio.create_task_group() as tg:
            for duration in durations:
                tg.start_soon(one, duration)
                await anyio.sleep(0.05)
    requests = sum(api_requests_per_task(emulator, before).values())
    return latencies, requests / len(durations)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--poll", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    durations = [rng.uniform(1.0, 6.0) for _ in range(args.tasks)]
    emulator = Emulator(api_key=KEY, task_seconds=2.0, stream_interval=0.25)
    with serve_in_thread(emulator) as base_url:
        ours_lat, ours_req = await ours(emulator, base_url, durations)
        base_lat, base_req = await baseline(emulator, base_url, durations, args.poll)
    write(
        "latency",
        {
            "tasks": args.tasks,
            "ours": summary_ms(ours_lat) | {"api_requests_per_task": round(ours_req, 2)},
            f"baseline_poll_every_{args.poll:g}s": summary_ms(base_lat) | {"api_requests_per_task": round(base_req, 2)},
            "speedup_median": round(statistics.median(base_lat) / statistics.median(ours_lat), 1),
        },
    )


if __name__ == "__main__":
    anyio.run(main)
