"""Team soak: replicas on one PostgreSQL ledger and one S3 bucket, API faults, one replica SIGKILLed mid-run.

    .venv/bin/python bench/team_soak.py [--tasks 300] [--replicas 3] [--kill-after 2.0] [--chaos 0.10]
                                        [--seed 7] [--no-storage]

Started here: a throwaway PostgreSQL cluster (initdb in a temp folder, free port), moto's S3 server with one
bucket (unless ``--no-storage``), the emulator in this process with chaos on (each API call, stream and download
has a ``--chaos`` chance of a random fault: 429, 503, a create whose response is lost, a dropped event stream, a
cut download), and ``--replicas`` real `nano-banana-mcp serve --http` processes, each with its own data and output
folders, all on the one database, bucket, bearer token and emulator.

The tasks are spread round-robin over the replicas (``generate_image``, ``wait_seconds=0``, through the SDK's
client over streamable HTTP), each with a ``request_id`` of its own. ``--kill-after`` seconds after the first call,
replica A gets SIGKILL. Every call that got no answer (A's unsent share, calls cut by the kill) is sent again
through the survivors with its ``request_id``, as an agent would, not knowing whether A wrote its row: a row A
wrote is found, not made again, and finished by the survivors (the sweep every ``--sweep-interval``).
Then we wait until every row is finished, and count:

- finished: rows whose image is saved (in the bucket, or with --no-storage in a replica's output folder);
- lost: requests not finished with a saved image (rows not success, and requests that never got a row); goal 0;
- duplicate creates: tasks the emulator created minus the requests (and, per prompt, tasks beyond one); goal 0;
- keys on two endpoints: idempotency keys sent to both create endpoints (strict emulator); goal 0;
- takeover: the orphans are A's rows unfinished when it died (owner = A's ledger owner id). From the SIGKILL:
  ``first_claim_s`` until a survivor owns one of them, ``first_progress_s`` until one of them changed (phase,
  API status or progress) under a survivor, ``all_claimed_s`` until every one is owned by a survivor or finished.
- wall: from the first call to the last row finished.

Figures are printed and written to bench/results/team_soak.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from _common import KEY, server_env, write
from _team import S3, Postgres, Replica, start_replica, wait_ready
from nano_banana_mcp.emulator import Emulator, serve_in_thread

TOKEN = secrets.token_urlsafe(24)
BUCKET = "nano-banana-team-soak"
UNFINISHED = ("submitting", "created", "succeeded")


@dataclass
class Run:
    """What the submitters and the watcher saw."""

    accepted: dict[str, str] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    takeover: dict[str, Any] = field(default_factory=dict)


async def submit(replica: Replica, prompts: list[str], concurrency: int, run: Run) -> None:
    """``generate_image(wait_seconds=0)`` for each prompt through ``replica``; accepted ids and error kinds."""
    limiter = anyio.Semaphore(concurrency)

    async def one(client: Client, prompt: str) -> None:
        async with limiter:
            try:
                args = {"prompt": prompt, "wait_seconds": 0, "request_id": f"soak-{prompt}"}  # as an agent retries
                result = await client.call_tool("generate_image", args)
            except Exception as err:
                run.errors[f"{replica.name}: {type(err).__name__}"] += 1
                return
            if result.is_error:
                text = " ".join(getattr(c, "text", "") for c in result.content)
                run.errors[f"{replica.name}: tool error: {text[:60]}"] += 1
            else:
                run.accepted[prompt] = result.structured_content["task_id"]

    try:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http,
            Client(streamable_http_client(replica.url, http_client=http), read_timeout_seconds=60) as client,
            anyio.create_task_group() as tg,
        ):
            for prompt in prompts:
                tg.start_soon(one, client, prompt)
    except Exception as err:
        run.errors[f"{replica.name}: session lost: {type(err).__name__}"] += 1


def rows(url: str) -> list[tuple[str, str, str | None, str, str | None, float | None, str]]:
    """Every ledger row: key, prompt, owner, phase, API status, progress, images (JSON)."""
    return Postgres.query(
        url, "SELECT key, request::json->>'prompt', owner, phase, api_status, progress, images FROM tasks"
    )


async def kill_and_watch(url: str, victim: Replica, victim_prompts: set[str], after: float, run: Run) -> None:
    """SIGKILL ``victim`` after ``after`` seconds, then time how fast the survivors take its unfinished rows."""
    await anyio.sleep(after)
    before = await anyio.to_thread.run_sync(rows, url)
    owners = {owner for _, prompt, owner, *_ in before if prompt in victim_prompts and owner}
    victim.kill()
    killed = victim.killed_at or time.monotonic()
    after_kill = await anyio.to_thread.run_sync(rows, url)
    owned_before = {key for key, _, owner, phase, *_ in before if owner in owners and phase in UNFINISHED}
    orphans = {  # unfinished at the kill and A's (a row a survivor took in the instant between counts as taken)
        key: (phase, api_status, progress)
        for key, _, owner, phase, api_status, progress, _ in after_kill
        if phase in UNFINISHED and (owner in owners or key in owned_before)
    }
    run.takeover.update(victim_owner_ids=len(owners), orphans=len(orphans), rows_at_kill=len(after_kill))
    first_claim = first_progress = all_claimed = None
    with anyio.move_on_after(120):
        while orphans and (all_claimed is None or first_progress is None):
            now_rows = {r[0]: r for r in await anyio.to_thread.run_sync(rows, url) if r[0] in orphans}
            elapsed = time.monotonic() - killed
            taken = {
                key
                for key, (_, _, owner, phase, *_rest) in now_rows.items()
                if phase not in UNFINISHED or (owner is not None and owner not in owners)
            }
            if taken and first_claim is None:
                first_claim = elapsed
            if first_progress is None and any(now_rows[key][3:6] != orphans[key] for key in taken):
                first_progress = elapsed
            if len(taken) == len(orphans) and all_claimed is None:
                all_claimed = elapsed
            await anyio.sleep(0.02)
    run.takeover.update(
        {
            name: None if value is None else round(value, 3)
            for name, value in (
                ("first_claim_s", first_claim),
                ("first_progress_s", first_progress),
                ("all_claimed_s", all_claimed),
            )
        }
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--kill-after", type=float, default=2.0, help="seconds after the first call (default 2)")
    parser.add_argument("--chaos", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--task-seconds", type=float, default=3.0)
    parser.add_argument("--sweep-interval", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=20, help="calls in flight per replica")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--no-storage", action="store_true", help="no bucket: each replica saves to its own folder")
    args = parser.parse_args()
    if args.replicas < 2:
        parser.error("--replicas must be at least 2 (one is killed)")
    storage = not args.no_storage
    if storage and importlib.util.find_spec("nano_banana_mcp.storage") is None:
        parser.error("this nano-banana-mcp has no object storage yet (nano_banana_mcp.storage): use --no-storage")

    work = Path(tempfile.mkdtemp(prefix="nb-team-soak-"))
    postgres, s3 = Postgres(), S3()
    replicas: list[Replica] = []
    try:
        postgres.start()
        database = postgres.new_database("nano_banana")
        extra = {
            "NANO_BANANA_DATABASE_URL": database,
            "NANO_BANANA_HTTP_TOKEN": TOKEN,
            "NANO_BANANA_RETRY_BASE_DELAY": "0.05",
            "NANO_BANANA_RETRY_MAX_DELAY": "0.5",
            "NANO_BANANA_POLL_INTERVAL": "0.25",
            "NANO_BANANA_POLL_MAX_INTERVAL": "1",
            "NANO_BANANA_SWEEP_INTERVAL": str(args.sweep_interval),
        }
        if storage:
            s3.start()
            s3.client().create_bucket(Bucket=BUCKET)
            extra |= s3.env | {"NANO_BANANA_STORAGE_URL": f"s3://{BUCKET}/images"}
        emulator = Emulator(api_key=KEY, task_seconds=args.task_seconds, stream_interval=0.25)
        with serve_in_thread(emulator) as base_url:
            env = server_env(base_url, work, **extra)
            replicas = [start_replica(chr(ord("A") + i), env, work / f"replica-{i}") for i in range(args.replicas)]
            for replica in replicas:
                wait_ready(replica)
            emulator.set_chaos(args.chaos, seed=args.seed)
            figures = await soak(args, database, emulator, replicas, storage, s3)
    finally:
        for replica in replicas:
            replica.stop()
        s3.stop()
        postgres.stop()
        shutil.rmtree(work, ignore_errors=True)
    write("team_soak", figures)


async def soak(
    args: argparse.Namespace, database: str, emulator: Emulator, replicas: list[Replica], storage: bool, s3: S3
) -> dict[str, Any]:
    prompts = [f"team soak {i}" for i in range(args.tasks)]
    shares = {r.name: prompts[i :: len(replicas)] for i, r in enumerate(replicas)}
    victim, survivors = replicas[0], replicas[1:]
    run = Run()
    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_and_watch, database, victim, set(shares[victim.name]), args.kill_after, run)
        for replica in replicas:
            tg.start_soon(submit, replica, shares[replica.name], args.concurrency, run)
    # Every call that got no answer is sent again through the survivors with its request_id, as an agent retries
    # elsewhere: without knowing whether the dead replica wrote its row (the request_id makes that safe).
    resent = 0
    in_ledger = {prompt for _, prompt, *_ in await anyio.to_thread.run_sync(rows, database)}
    resent_with_a_row = len([p for p in prompts if p not in run.accepted and p in in_ledger])
    for _ in range(3):
        missing = [p for p in prompts if p not in run.accepted]
        if not missing:
            break
        resent += len(missing)
        async with anyio.create_task_group() as tg:
            for i, replica in enumerate(survivors):
                tg.start_soon(submit, replica, missing[i :: len(survivors)], args.concurrency, run)
    timed_out = False
    try:
        with anyio.fail_after(args.timeout):
            while True:
                current = await anyio.to_thread.run_sync(rows, database)
                if len(current) >= args.tasks and all(r[3] not in UNFINISHED for r in current):
                    break
                await anyio.sleep(0.1)
    except TimeoutError:
        timed_out = True
        print("timed out waiting for the ledger to finish", file=sys.stderr)
    wall = time.monotonic() - started

    final = await anyio.to_thread.run_sync(rows, database)
    phases = Counter(r[3] for r in final)
    in_bucket = {f"s3://{BUCKET}/{k}" for k in s3.keys(BUCKET)} if storage else set()

    def saved(images_json: str) -> bool:
        images = json.loads(images_json)
        paths = [i.get("path") for i in images]
        if not images or not all(paths):
            return False
        return all(p in in_bucket if storage else Path(p).is_file() for p in paths)

    finished_prompts = {
        prompt for _, prompt, _, phase, _, _, images in final if phase == "downloaded" and saved(images)
    }
    per_prompt = Counter(t["prompt"] for t in emulator.task_inputs())
    return {
        "tasks": args.tasks,
        "replicas": args.replicas,
        "storage": f"s3 (moto), s3://{BUCKET}/images" if storage else "none (each replica's own output folder)",
        "rows_in_ledger": len(final),
        "finished": len(finished_prompts),
        "failed": phases.get("failed", 0),
        "unfinished_rows": sum(phases.get(p, 0) for p in UNFINISHED),
        "lost": args.tasks - len(finished_prompts),
        "api_creates": emulator.creates,
        "duplicate_creates": emulator.creates - args.tasks,
        "prompts_created_more_than_once": sum(n - 1 for n in per_prompt.values() if n > 1),
        "keys_on_two_endpoints": len(emulator.keys_on_two_endpoints()),
        "objects_in_bucket": len(in_bucket) if storage else None,
        "accepted_by_tool_call": len(run.accepted),
        "resent_through_survivors": resent,
        "resent_whose_row_was_written": resent_with_a_row,  # found by request_id, not made again
        "tool_call_errors": dict(run.errors),
        "killed": victim.name,
        "kill_after_s": args.kill_after,
        "takeover": run.takeover,
        "sweep_interval_s": args.sweep_interval,
        "task_seconds": args.task_seconds,
        "chaos_rate": args.chaos,
        "seed": args.seed,
        "faults_fired": dict(emulator.chaos_fired),
        "timed_out": timed_out,
        "wall_s": round(wall, 2),
    }


if __name__ == "__main__":
    anyio.run(main)
