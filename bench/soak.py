"""Soak: many tasks through one real server process, random API faults, one SIGKILL and restart.

    .venv/bin/python bench/soak.py [--tasks 500] [--chaos 0.10] [--seed 7]

The emulator runs in this process on 127.0.0.1 with chaos on (each API call, stream and download has a
``--chaos`` chance of a random fault: 429, 503, lost create response, dropped stream, cut download). The
server is ``nano-banana-mcp serve --http`` in a subprocess. Half the requests go in, the server is
killed with SIGKILL while tasks are in flight, it is started again on the same data dir, and the rest
go in. Then we wait until every request the ledger holds is finished, and count:

- finished: tasks whose image is on disk;
- lost: requests the ledger holds that never finished, plus accepted task ids with no file (goal 0);
- duplicate creates: tasks the API made beyond one per logical request (goal 0).

Figures are printed and written to bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from nano_banana_mcp.emulator import Emulator, serve_in_thread

KEY = "monet_soak"
RESULTS = Path(__file__).parent / "results"
COMMAND = str(Path(sys.executable).with_name("nano-banana-mcp"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


TOKEN = secrets.token_urlsafe(24)
"""The HTTP server always requires a bearer token; the benchmark gives it one through the environment."""


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [COMMAND, "serve", "--http", "--port", str(port)],
        env=env | {"NANO_BANANA_HTTP_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start")


def ledger_rows(data_dir: Path) -> list[tuple[str, str, str | None, str]]:
    db = sqlite3.connect(data_dir / "ledger.sqlite3", timeout=30)
    try:
        return db.execute("SELECT key, phase, task_id, images FROM tasks").fetchall()
    finally:
        db.close()


def ledger_prompts(data_dir: Path) -> set[str]:
    if not (data_dir / "ledger.sqlite3").exists():
        return set()
    db = sqlite3.connect(data_dir / "ledger.sqlite3", timeout=30)
    try:
        return {json.loads(r[0])["prompt"] for r in db.execute("SELECT request FROM tasks")}
    except sqlite3.OperationalError:  # the schema is not there yet
        return set()
    finally:
        db.close()


async def submit(
    url: str, prompts: list[str], concurrency: int, accepted: dict[str, str], errors: Counter[str]
) -> None:
    """Send generate_image for each prompt (wait_seconds=0); record accepted task ids and error kinds."""
    limiter = anyio.Semaphore(concurrency)

    async def one(client: Client, prompt: str) -> None:
        async with limiter:
            try:
                result = await client.call_tool("generate_image", {"prompt": prompt, "wait_seconds": 0})
            except Exception as err:  # the server was killed under this call
                errors[type(err).__name__] += 1
                return
            if result.is_error:
                first = result.content[0]
                assert isinstance(first, TextContent)
                errors["tool error: " + first.text.split(":")[1].strip()[:40]] += 1
            else:
                accepted[prompt] = result.structured_content["task_id"]

    try:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
            anyio.create_task_group() as tg,
        ):
            for prompt in prompts:
                tg.start_soon(one, client, prompt)
    except Exception as err:  # the connection itself died with the server
        errors["session lost: " + type(err).__name__] += 1


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--chaos", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--task-seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="nb-soak-"))
    data_dir, out_dir = work / "data", work / "out"
    emulator = Emulator(api_key=KEY, task_seconds=args.task_seconds, stream_interval=0.25)
    with serve_in_thread(emulator) as base_url:
        emulator.set_chaos(args.chaos, seed=args.seed)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(work),
            "MONET_API_KEY": KEY,
            "MONET_BASE_URL": base_url,
            "NANO_BANANA_DATA_DIR": str(data_dir),
            "NANO_BANANA_OUTPUT_DIR": str(out_dir),
            "NANO_BANANA_RETRY_BASE_DELAY": "0.05",
            "NANO_BANANA_RETRY_MAX_DELAY": "0.5",
            "NANO_BANANA_POLL_INTERVAL": "0.25",
            "NANO_BANANA_POLL_MAX_INTERVAL": "1",
            "NANO_BANANA_LEASE_SECONDS": "2",
            "NANO_BANANA_SWEEP_INTERVAL": "0.5",
        }
        prompts = [f"soak {i}" for i in range(args.tasks)]
        half = len(prompts) // 2
        accepted: dict[str, str] = {}
        errors: Counter[str] = Counter()
        started = time.monotonic()

        port = free_port()
        server = start_server(env, port)
        url = f"http://127.0.0.1:{port}/mcp"
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, url, prompts[:half], args.concurrency, accepted, errors)
            # Kill in the middle: once a quarter of all requests are in and many are in flight.
            with anyio.fail_after(120):
                while len(ledger_prompts(data_dir)) < len(prompts) // 4:
                    await anyio.sleep(0.02)
            server.kill()
            server.wait()
            killed_at = time.monotonic() - started
        server = start_server(env, port)
        # What never reached the server goes in now; what reached it is the server's to finish.
        known = ledger_prompts(data_dir)
        await submit(url, [p for p in prompts if p not in known], args.concurrency, accepted, errors)

        try:
            with anyio.fail_after(args.timeout):
                while True:
                    rows = ledger_rows(data_dir)
                    if rows and all(phase in ("downloaded", "failed") for _, phase, _, _ in rows):
                        break
                    await anyio.sleep(0.5)
        except TimeoutError:
            print("timed out waiting for the ledger to finish", file=sys.stderr)
        wall = time.monotonic() - started
        server.terminate()
        server.wait(timeout=10)

        rows = ledger_rows(data_dir)
        phases = Counter(phase for _, phase, _, _ in rows)
        saved = {  # a call that returned before the API named its task gave the request's own id (the key)
            handle
            for key, phase, task_id, images in rows
            if phase == "downloaded" and all(Path(i["path"]).is_file() for i in json.loads(images))
            for handle in (key, task_id)
        }
        tasks_per_prompt = Counter(t["prompt"] for t in emulator.task_inputs())
        duplicates = sum(n - 1 for n in tasks_per_prompt.values() if n > 1)
        unfinished = [key for key, phase, _, _ in rows if phase not in ("downloaded", "failed")]
        accepted_lost = [t for t in accepted.values() if t not in saved]
        figures: dict[str, Any] = {
            "tasks_requested": args.tasks,
            "requests_in_ledger": len(rows),
            "accepted_by_tool_call": len(accepted),
            "tool_call_errors": dict(errors),
            "finished_with_files": sum(1 for key, _, _, _ in rows if key in saved),
            "failed": phases.get("failed", 0),
            "lost": len(unfinished) + len(accepted_lost),
            "duplicate_creates": duplicates,
            "keys_sent_to_two_endpoints": len(emulator.keys_on_two_endpoints()),
            "api_tasks_created": emulator.creates,
            "faults_fired": dict(emulator.chaos_fired),
            "chaos_rate": args.chaos,
            "seed": args.seed,
            "killed_at_s": round(killed_at, 2),
            "wall_s": round(wall, 2),
            "files_on_disk": len([p for p in out_dir.glob("*") if not p.name.startswith(".")]),
        }
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    anyio.run(main)
