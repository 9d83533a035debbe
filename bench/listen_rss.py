"""Memory of `subscriptions/listen` streams (2026 wire): many streams of many made-up URIs, in a real server.

    .venv/bin/python bench/listen_rss.py [--label after] [--streams 200] [--uris 5000]

A real `nano-banana-mcp serve --http` process (one bearer token, the emulator beside it) is sent ``--streams``
listen requests at once over real HTTP, each held open once acknowledged; then every stream is closed; three
rounds of that. Two
scenarios, one after the other on the same server:

- ``made_up``: each stream names ``--uris`` made-up task URIs (the attack);
- ``own``: each names the 100 image URIs of a task the server made (the most a stream may name).

The server's VmRSS is read (Linux, ``/proc``) before, while the streams are open (or refused), and after they
are closed (once it has settled), with VmHWM, the peak so far. Figures go under ``--label`` in
``bench/results/listen_rss.json`` (run with ``--label before`` on the code before a change).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from _common import KEY, server_env, write_labelled
from _team import start_replica, wait_ready
from nano_banana_mcp.emulator import Emulator, serve_in_thread

TOKEN = "bench-listen-token-0123456789"


def memory_mb(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: round(int(fields[key].split()[0]) / 1024, 1) for key in ("VmHWM", "VmRSS")}


async def settled_rss(pid: int, seconds: float = 3.0) -> float:
    """VmRSS once it has stopped falling for a second (at most ``seconds`` of waiting)."""
    last = memory_mb(pid)["VmRSS"]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await anyio.sleep(1.0)
        now = memory_mb(pid)["VmRSS"]
        if now >= last:
            return now
        last = now
    return last


async def flood(url: str, pid: int, streams: int, names: list[list[str]]) -> dict[str, Any]:
    """Open ``streams`` listen streams at once (stream i names ``names[i]``), hold them, then close them all."""
    outcome = {"opened": 0, "refused": 0, "failed": 0}
    refusals: set[str] = set()
    opened = anyio.Event()
    release = anyio.Event()
    pending = streams

    async def one(index: int, client: Client) -> None:
        nonlocal pending
        try:
            async with client.listen(resource_subscriptions=names[index]):
                outcome["opened"] += 1
                pending -= 1
                if pending == 0:
                    opened.set()
                await release.wait()
                return
        except MCPError as err:
            outcome["refused"] += 1
            refusals.add(re.sub(r"nano-banana://\S+", "<uri>", err.error.message)[:160])
        except Exception as err:  # a benchmark counts what happened
            outcome["failed"] += 1
            refusals.add(f"{type(err).__name__}: {str(err)[:120]}")
        pending -= 1
        if pending == 0:
            opened.set()

    limits = httpx2.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120, limits=limits)
        )
        client = await stack.enter_async_context(
            Client(streamable_http_client(url, http_client=http), read_timeout_seconds=120)
        )
        await client.list_tools()
        async with anyio.create_task_group() as tg:
            for index in range(streams):
                tg.start_soon(one, index, client)
            with anyio.fail_after(600):
                await opened.wait()
            held = memory_mb(pid)
            release.set()
    return {**outcome, "refusals": sorted(refusals), "rss_while_open_mb": held["VmRSS"]}


async def run(streams: int, uris: int) -> dict[str, Any]:
    emulator = Emulator(api_key=KEY, task_seconds=0.2, stream_interval=0.05)
    work = Path(tempfile.mkdtemp(prefix="nb-bench-listen-"))
    with serve_in_thread(emulator) as base_url:
        env = server_env(base_url, work, NANO_BANANA_HTTP_TOKEN=TOKEN)
        replica = start_replica("listen", env, work / "server")
        try:
            wait_ready(replica)
            pid = replica.process.pid
            made_up = [
                [f"nano-banana://tasks/made-up-{i}-{n:05d}-{'x' * 40}" for n in range(uris)] for i in range(streams)
            ]
            figures = {"made_up": await scenario(replica.url, pid, streams, made_up)}
            async with AsyncExitStack() as stack:
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
                )
                client = await stack.enter_async_context(Client(streamable_http_client(replica.url, http_client=http)))
                made = await client.call_tool("generate_image", {"prompt": "watched", "wait_seconds": 30})
                task_id = (made.structured_content or {})["task_id"]
            own = [[f"nano-banana://tasks/{task_id}/images/{n}" for n in range(100)]] * streams
            figures["own"] = await scenario(replica.url, pid, streams, own)
        finally:
            replica.stop()
    return figures


async def scenario(url: str, pid: int, streams: int, names: list[list[str]], rounds: int = 3) -> dict[str, Any]:
    """The flood ``rounds`` times: the first round's figures, and the settled RSS after each round (memory a
    closed stream kept would add up from round to round)."""
    before = await settled_rss(pid)
    first: dict[str, Any] = {}
    after: list[float] = []
    for _ in range(rounds):
        flooded = await flood(url, pid, streams, names)
        first = first or flooded
        after.append(await settled_rss(pid, seconds=10.0))
    return {
        "streams": streams,
        "uris_per_stream": len(names[0]),
        "rss_before_mb": before,
        **first,
        "rss_after_close_mb": after[0],
        "rss_after_each_round_mb": after,
        "peak_rss_mb": memory_mb(pid)["VmHWM"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--label", default="after", help="where the figures go in the results file")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--uris", type=int, default=5000)
    args = parser.parse_args()
    figures = anyio.run(run, args.streams, args.uris)
    write_labelled(
        "listen_rss",
        args.label,
        figures,
        command=".venv/bin/python bench/listen_rss.py --label LABEL",
        measure="server VmRSS (MB) before, with every listen stream open (or refused), after they closed; "
        "VmHWM the peak so far",
    )


if __name__ == "__main__":
    main()
