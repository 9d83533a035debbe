"""MCP tasks under load: N tasks in flight at once, each polled with ``tasks/get`` every second.

    .venv/bin/python bench/tasks_poll.py [--tasks 1000] [--seconds 30] [--transports stdio,http,postgresql]
        [--command OTHER_CHECKOUT/.venv/bin/nano-banana-mcp --label before]

The emulator runs as a process of its own (``nano-banana-mcp emulator``) with tasks that take ``--task-seconds``
(900 by default), so every task stays in flight for the whole run. The servers create through ``/tasks/async`` and
ask the API about each task every ``--follow-seconds`` (30; ``NANO_BANANA_MAX_STREAMS=0``,
``NANO_BANANA_POLL_INTERVAL`` and ``NANO_BANANA_POLL_MAX_INTERVAL``): with the defaults (100 streams, a poll every
5 s), 1,000 tasks in flight cost the emulator and the runner more than this 2-core machine had to spare, and that is
not what is measured here.
For each transport a real server is started:

- ``stdio``: ``nano-banana-mcp`` over its stdin and stdout (SQLite ledger);
- ``http``: ``nano-banana-mcp serve --http`` (SQLite ledger);
- ``postgresql``: two ``serve --http`` replicas on one throwaway PostgreSQL cluster: the tasks are created through
  replica A, which works them, and polled through replica B (which only answers: any replica answers).

The tasks are created with ``tools/call generate_image`` declaring the extension (50 calls at a time). Then two
windows of ``--seconds`` each: **idle** (the tasks in flight, no polling: what following them at the API costs) and
**polling** (each task's ``tasks/get`` sent once a second, spread evenly: N requests a second). The client is a lean
one written here (raw JSON lines on stdio; raw HTTP/1.1 on keep-alive connections), not the SDK; it runs on the same
machine, in a process of its own, whose CPU is given too (``client_cpu_*``: a client that saturated would show
there, not as server latency). Figures: ``tasks/get`` latency (request written -> answer read) p50 / p99 / max,
answers that were not ``working``, the server's CPU (user + system, from ``/proc``) in both windows as a share of
one core, and for PostgreSQL the cluster's own CPU. A server that cannot keep up stretches the polling window (its
polls queue): so the CPU of one poll (the polling window's CPU less the idle share, divided by the polls) and what N
polls a second then cost (idle share + N x that) are given too; they do not depend on whether the machine let it
keep up.
Goal: p99 <= 10 ms and <= 25% of a core on SQLite.

``--per-request --tasks 50`` measures instead what one request costs the server
(``results/tasks_poll_per_request.json``). ``--command`` measures another checkout's server (its venv's
``nano-banana-mcp``) with this client, and ``--label`` keeps the figures under a label in
``results/tasks_poll_labelled.json`` (``..._per_request_labelled.json``): a before/after measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import COMMAND, KEY, percentile, server_env, write, write_labelled
from _team import Postgres, Replica, free_port, start_replica, wait_ready

PROTOCOL = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"
META = {
    "io.modelcontextprotocol/protocolVersion": PROTOCOL,
    "io.modelcontextprotocol/clientInfo": {"name": "tasks-poll-bench", "version": "1"},
    "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}},
}
TOKEN = "bench-token-0123456789abcdef"
CREATE_CONCURRENCY = 50
HTTP_CONNECTIONS = 32
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of the whole line)
    return total / CLK_TCK


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (a PostgreSQL postmaster's backends)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                found.append(int(entry.name))
    return found


def request(method: str, params: dict[str, Any], ident: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "method": method, "params": {**params, "_meta": META}}


# -- clients -------------------------------------------------------------------------------------------------


class StdioClient:
    """JSON lines over a server process's pipes; answers matched to requests by id."""

    def __init__(self, env: dict[str, str], command: str = COMMAND) -> None:
        self.env = env
        self.command = command
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            self.command,
            env=self.env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=2**24,
        )
        asyncio.get_running_loop().create_task(self._read())

    @property
    def pids(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid]

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            future = self.waiting.pop(message.get("id"), None) if "method" not in message else None
            if future is not None and not future.done():
                future.set_result(message)

    async def call(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """The answer, and the seconds from writing the request to reading the answer."""
        assert self.process is not None and self.process.stdin is not None
        ident = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[ident] = future
        started = time.perf_counter()
        self.process.stdin.write((json.dumps(request(method, params, ident)) + "\n").encode())
        answer = await future
        return answer, time.perf_counter() - started

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


class HttpClient:
    """Raw HTTP/1.1 POSTs on a few keep-alive connections, with the routing headers; JSON or event-stream answers."""

    def __init__(self, base: str, pids: list[int]) -> None:
        host_port = base.removeprefix("http://")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.ids = itertools.count(1)
        self.pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._pids = pids

    @property
    def pids(self) -> list[int]:
        return self._pids

    async def start(self) -> None:
        for _ in range(HTTP_CONNECTIONS):
            self.pool.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def call(self, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], float]:
        ident = next(self.ids)
        body = json.dumps(request(method, params, ident)).encode()
        name = params.get("taskId") or params.get("name") or ""
        head = (
            f"POST /mcp HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"MCP-Protocol-Version: {PROTOCOL}\r\nMcp-Method: {method}\r\nMcp-Name: {name}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        reader, writer = await self.pool.get()
        if reader.at_eof() or writer.is_closing():  # the server let an idle keep-alive connection go
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            started = time.perf_counter()
            writer.write(head + body)
            answer = await self._answer(reader, ident)
            took = time.perf_counter() - started
        except (OSError, asyncio.IncompleteReadError, ValueError):
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
            raise
        finally:
            self.pool.put_nowait((reader, writer))
        return answer, took

    async def _answer(self, reader: asyncio.StreamReader, ident: int) -> dict[str, Any]:
        status = await reader.readline()
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            payload = await reader.readexactly(int(headers["content-length"]))
        else:  # chunked (an event stream)
            chunks = []
            while (size := int((await reader.readline()).strip() or b"0", 16)) > 0:
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            await reader.readline()
            payload = b"".join(chunks)
        if headers.get("content-type", "").startswith("text/event-stream"):
            messages = [json.loads(line[5:]) for line in payload.splitlines() if line.startswith(b"data:")]
            return next(m for m in messages if m.get("id") == ident)
        if not status.startswith(b"HTTP/1.1 2"):
            raise RuntimeError(f"{status!r}: {payload[:300]!r}")
        return json.loads(payload)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        while not self.pool.empty():
            _, writer = self.pool.get_nowait()
            writer.close()


# -- the run -------------------------------------------------------------------------------------------------


@dataclass
class Figures:
    transport: str
    tasks: int
    latencies: list[float] = field(default_factory=list)
    not_working: int = 0
    errors: int = 0
    max_lag_ms: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        ms = sorted(x * 1000 for x in self.latencies)
        return {
            "transport": self.transport,
            "tasks_in_flight": self.tasks,
            "polls": len(ms),
            "p50_ms": round(statistics.median(ms), 2) if ms else None,
            "p99_ms": round(percentile(ms, 0.99), 2) if ms else None,
            "max_ms": round(ms[-1], 2) if ms else None,
            "answers_not_working": self.not_working,
            "errors": self.errors,
            "client_schedule_lag_max_ms": round(self.max_lag_ms, 1),
            **{k: round(v, 3) for k, v in self.cpu.items()},
        }


async def create_tasks(client: Any, n: int) -> list[str]:
    ids: list[str] = []
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            answer, _ = await client.call(
                "tools/call", {"name": "generate_image", "arguments": {"prompt": f"in flight {i}"}}
            )
        result = answer.get("result") or {}
        if result.get("resultType") != "task":
            raise RuntimeError(f"call {i} was not answered with a task: {json.dumps(answer)[:300]}")
        ids.append(result["taskId"])

    await asyncio.gather(*(one(i) for i in range(n)))
    return ids


async def poll_window(client: Any, ids: list[str], seconds: float, figures: Figures) -> None:
    """Each task's ``tasks/get`` once a second, spread evenly over the second, for ``seconds``."""
    pending: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.1
    step = 1.0 / len(ids)

    async def one(task_id: str) -> None:
        try:
            answer, took = await client.call("tasks/get", {"taskId": task_id})
        except Exception:
            figures.errors += 1
            return
        if "error" in answer:
            figures.errors += 1
            return
        figures.latencies.append(took)
        if answer["result"]["status"] != "working":
            figures.not_working += 1

    for k in range(int(seconds)):
        for i, task_id in enumerate(ids):
            due = start + k + i * step
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                figures.max_lag_ms = max(figures.max_lag_ms, -delay * 1000)
            task = asyncio.get_running_loop().create_task(one(task_id))
            pending.add(task)
            task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)


async def measured(
    client: Any, ids: list[str], seconds: float, figures: Figures, extra: Callable[[], list[int]] | None = None
) -> None:
    """The idle window, then the polling window; CPU of the server (and of ``extra`` processes) in each."""
    for label, run in (("idle", None), ("polling", poll_window)):
        before, before_extra, wall = (
            cpu_seconds(client.pids),
            cpu_seconds(extra() if extra else []),
            time.perf_counter(),
        )
        own = time.process_time()
        if run is None:
            await asyncio.sleep(seconds)
        else:
            await run(client, ids, seconds, figures)
        elapsed = time.perf_counter() - wall
        used = cpu_seconds(client.pids) - before
        figures.cpu[f"server_cpu_{label}_core_share"] = used / elapsed
        figures.cpu[f"client_cpu_{label}_core_share"] = (time.process_time() - own) / elapsed  # this process's
        if extra is not None:
            figures.cpu[f"postgresql_cpu_{label}_core_share"] = (cpu_seconds(extra()) - before_extra) / elapsed
        if run is not None:  # the polls' own cost, without what following the tasks costs meanwhile
            idle = figures.cpu["server_cpu_idle_core_share"]
            per_poll = max(used - idle * elapsed, 0.0) / max(len(figures.latencies), 1)
            figures.cpu["polling_window_seconds"] = elapsed
            figures.cpu["server_cpu_ms_per_poll"] = per_poll * 1000
            figures.cpu["server_core_share_at_one_poll_per_task_per_second"] = idle + per_poll * len(ids)


async def per_request(client: Any, ids: list[str], figures: Figures, rounds: int = 40) -> None:
    """CPU of one request, ``len(ids)`` at a time for ``rounds`` rounds, after 2 s of quiet: a method the server does
    not have (the SDK's and the transport's own cost), ``tasks/get`` of an unknown id (one ledger read), of a task."""
    await asyncio.sleep(2)
    kinds: tuple[tuple[str, str, Callable[[str], dict[str, Any]]], ...] = (
        ("unknown_method", "ping", lambda _: {}),
        ("tasks_get_unknown_id", "tasks/get", lambda i: {"taskId": f"x{i}"}),
        ("tasks_get", "tasks/get", lambda i: {"taskId": i}),
    )
    for label, method, params in kinds:
        before = cpu_seconds(client.pids)
        for _ in range(rounds):
            await asyncio.gather(*(client.call(method, params(i)) for i in ids), return_exceptions=True)
        figures.cpu[f"cpu_us_per_{label}"] = (cpu_seconds(client.pids) - before) / (rounds * len(ids)) * 1e6


def emulator(task_seconds: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [COMMAND, "emulator", "--port", str(port), "--api-key", KEY, "--task-seconds", str(task_seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/tasks/list", headers={"Authorization": f"Bearer {KEY}"}, timeout=1)
        except httpx.HTTPError:
            time.sleep(0.1)
        else:
            return process, base
    raise SystemExit("the emulator did not start")


async def run_transport(transport: str, args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"nb-tasks-{transport}-"))
    env = server_env(
        base_url,
        work,
        NANO_BANANA_HTTP_TOKEN=TOKEN,
        NANO_BANANA_MAX_STREAMS=str(args.max_streams),
        NANO_BANANA_POLL_INTERVAL=str(args.follow_seconds),
        NANO_BANANA_POLL_MAX_INTERVAL=str(args.follow_seconds),
    )
    figures = Figures(transport, args.tasks)
    replicas: list[Replica] = []
    postgres: Postgres | None = None
    extra = None
    try:
        if transport == "stdio":
            client: Any = StdioClient(env, args.command)
            await client.start()
            creator = client
        elif transport == "http":
            replicas.append(start_replica("http", env, work / "http", args.command))
            wait_ready(replicas[0])
            client = creator = HttpClient(replicas[0].base, [replicas[0].process.pid])
            await client.start()
        else:
            postgres = Postgres()
            postgres.start()
            env = env | {"NANO_BANANA_DATABASE_URL": postgres.new_database("bench")}
            for name in ("A", "B"):
                replicas.append(start_replica(name, env, work / name, args.command))
            for replica in replicas:
                wait_ready(replica)
            creator = HttpClient(replicas[0].base, [replicas[0].process.pid])
            client = HttpClient(replicas[1].base, [replicas[1].process.pid])
            await creator.start()
            await client.start()
            postmaster = int((postgres.data / "postmaster.pid").read_text().split()[0])

            def extra() -> list[int]:
                return [postmaster, *children_of(postmaster)]

        started = time.perf_counter()
        ids = await create_tasks(creator, args.tasks)
        figures.cpu["create_seconds"] = time.perf_counter() - started
        if args.per_request:
            await per_request(client, ids, figures, args.rounds)
        else:
            await measured(client, ids, args.seconds, figures, extra)
        for c in {id(creator): creator, id(client): client}.values():
            await c.stop()
    finally:
        for replica in replicas:
            replica.stop()
        if postgres is not None:
            postgres.stop()
    summary = figures.summary()
    print(json.dumps(summary), flush=True)
    return summary


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    process, base_url = emulator(args.task_seconds)
    try:
        runs = [await run_transport(t, args, base_url) for t in args.transports.split(",")]
    finally:
        process.kill()
        process.wait()
    return {
        "tasks": args.tasks,
        "seconds_per_window": args.seconds,
        "task_seconds": args.task_seconds,
        "follow_seconds": args.follow_seconds,
        "max_streams": args.max_streams,
        "cores": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each window (idle, polling)")
    parser.add_argument("--task-seconds", type=float, default=900.0, help="how long the emulator's tasks take")
    parser.add_argument("--transports", default="stdio,http,postgresql")
    parser.add_argument(
        "--follow-seconds",
        type=float,
        default=30.0,
        help="how often the server's runner asks the API about each task in flight (NANO_BANANA_POLL_INTERVAL and "
        "NANO_BANANA_POLL_MAX_INTERVAL: from the first poll on)",
    )
    parser.add_argument("--max-streams", type=int, default=0, help="NANO_BANANA_MAX_STREAMS for the servers")
    parser.add_argument(
        "--per-request",
        action="store_true",
        help="instead of the windows: the CPU of one request (use with --tasks 50): a method the server does not "
        "have, tasks/get of an unknown id, tasks/get",
    )
    parser.add_argument(
        "--rounds", type=int, default=40, help="--per-request: rounds of --tasks requests of each kind (more: steadier)"
    )
    parser.add_argument(
        "--command", default=COMMAND, help="the nano-banana-mcp to measure (another checkout's, for a before/after)"
    )
    parser.add_argument(
        "--label", help="keep the figures under this label in the results file, beside other labels' (before/after)"
    )
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    name = "tasks_poll_per_request" if args.per_request else "tasks_poll"
    if args.label is None:
        write(name, figures)
    else:
        measure = "per-request CPU" if args.per_request else "tasks/get latency, server CPU: idle and polling windows"
        command = " ".join(["bench/tasks_poll.py", *sys.argv[1:]])
        write_labelled(f"{name}_labelled", args.label, figures, command=command, measure=measure)


if __name__ == "__main__":
    main()
