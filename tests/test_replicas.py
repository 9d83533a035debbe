"""A team server for real: three `nano-banana-mcp serve --http` processes, each with its own data and output folders
(as separate machines have), on one PostgreSQL database, one S3 bucket and one bearer token, driven by the SDK's
client over streamable HTTP. One replica is SIGKILLed with tasks in flight: the others finish every one of them,
the API sees each create once, and every image is read through a replica that did not save it."""

from __future__ import annotations

import base64
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import BlobResourceContents

from nano_banana_mcp.emulator import Emulator

if TYPE_CHECKING:
    from tests.conftest import Hello, S3Server

pytestmark = pytest.mark.anyio

TOKEN = "team-token-0123456789abcdef"
TASK_SECONDS = 2.0
"""Long enough that every task is still running at the API when the replica that created it dies."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SERVED_AT = re.compile(r"http://127\.0\.0\.1:(\d+)/mcp")


@dataclass
class Replica:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    output_dir: Path
    base: str = ""

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.is_file() else ""

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def _start(name: str, command: str, env: dict[str, str], root: Path) -> Replica:
    """Spawn one replica on a port of its own choosing (``--port 0``); its stderr goes to ``root/<name>.log``."""
    home = root / name
    replica_env = env | {
        "NANO_BANANA_DATA_DIR": str(home / "data"),
        "NANO_BANANA_OUTPUT_DIR": str(home / "out"),
    }
    log = root / f"{name}.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [command, "serve", "--http", "--host", "127.0.0.1", "--port", "0"],
            env=replica_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return Replica(name, process, log, home / "out")


def _wait_ready(replica: Replica, timeout: float = 30.0) -> None:
    """Until the replica has printed its URL and ``GET /healthz`` answers 200 (ledger and image store checked)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            pytest.fail(f"replica {replica.name} exited ({replica.process.returncode}):\n{replica.log_tail()}")
        if not replica.base and (found := _SERVED_AT.search(replica.log_tail())):
            replica.base = f"http://127.0.0.1:{found.group(1)}"
        if replica.base:
            try:
                answer = httpx.get(f"{replica.base}/healthz", timeout=2)
            except httpx.HTTPError as err:
                last = repr(err)
            else:
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text}"
        time.sleep(0.05)
    pytest.fail(f"replica {replica.name} not ready within {timeout} s (last: {last}):\n{replica.log_tail()}")


@contextmanager
def replicas(names: str, command: str, env: dict[str, str], root: Path) -> Iterator[dict[str, Replica]]:
    """Start every replica at once, wait until each is healthy, and kill them all on the way out."""
    started: dict[str, Replica] = {}
    try:
        for name in names:
            started[name] = _start(name, command, env, root)
        for replica in started.values():
            _wait_ready(replica)
        yield started
    finally:
        for replica in started.values():
            replica.kill()


@asynccontextmanager
async def connect(replica: Replica) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
        Client(streamable_http_client(replica.url, http_client=http), read_timeout_seconds=30) as client,
    ):
        yield client


_HEADERS = {
    "Authorization": f"Bearer {TOKEN}",
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}


def _a_2025_session_lives_on_its_own_replica(first: Replica, other: Replica, hello: Any) -> None:
    """What docs/deploy.md says of sticky routing: a 2025-era session (``Mcp-Session-Id``) is known only to the
    replica that opened it; another answers 404, and the client must open a new session there."""
    opened = hello(first.base, {"Authorization": f"Bearer {TOKEN}"})
    assert opened.status_code == 200
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert httpx.post(first.url, json=ping, headers=_HEADERS | session, timeout=20).status_code == 200
    assert httpx.post(other.url, json=ping, headers=_HEADERS | session, timeout=20).status_code == 404


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
def team_env(process_env: dict[str, str], database_url: str, storage_url: str, s3_server: S3Server) -> dict[str, str]:
    """What every replica shares: the emulator, the database, the bucket (and the AWS variables), the token."""
    return (
        process_env
        | s3_server.env
        | {
            "NANO_BANANA_DATABASE_URL": database_url,
            "NANO_BANANA_STORAGE_URL": storage_url,
            "NANO_BANANA_HTTP_TOKEN": TOKEN,
        }
    )


async def _create_and_kill(a: Replica, emulator: Any, n: int) -> list[str]:
    """Create ``n`` tasks through A without waiting, let the API receive every create, then SIGKILL A; none of them
    had finished at the API when A died."""
    async with connect(a) as client:
        made = [await client.call_tool("generate_image", {"prompt": f"team {i}", "wait_seconds": 0}) for i in range(n)]
    assert not any(m.is_error for m in made), [_text(m) for m in made if m.is_error]
    assert {m.structured_content["status"] for m in made} <= {"pending", "running"}
    with anyio.fail_after(60):  # only against a hang
        while emulator.creates < n:
            await anyio.sleep(0.01)
    a.kill()
    killed = time.monotonic()  # the emulator's clock: it runs in this process
    task_ids: list[str] = [m.structured_content["task_id"] for m in made]
    early = [t for t in task_ids if (finished := emulator.finished_at(t)) is not None and finished <= killed]
    assert not early, f"{early} finished at the API before A died (the tasks run {TASK_SECONDS} s)"
    return task_ids


async def _collect(clients: list[Client], task_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``get_task(wait_seconds=20)`` for every task, spread over ``clients``, all at once."""
    results: dict[str, dict[str, Any]] = {}

    async def one(client: Client, task_id: str) -> None:
        result = await client.call_tool("get_task", {"task_id": task_id, "wait_seconds": 20})
        assert not result.is_error, _text(result)
        results[task_id] = result.structured_content

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for index, task_id in enumerate(task_ids):
                tg.start_soon(one, clients[index % len(clients)], task_id)
    return results


async def test_a_killed_replicas_tasks_are_finished_by_the_others_created_once_and_read_through_any(
    team_env: dict[str, str],
    command: str,
    emulator: Emulator,
    s3_server: S3Server,
    storage_url: str,
    tmp_path: Path,
    hello: Hello,
) -> None:
    """Six tasks created through A, A SIGKILLed while all six run at the API: get_task through B and C returns
    success for each, saved by B or C (never A) into the bucket; ``resources/read`` of each image through B and
    through C gives the same PNG bytes, though only one of them saved it; the API saw six creates and no key on two
    endpoints."""
    emulator.task_seconds = TASK_SECONDS
    n = 6
    with replicas("ABC", command, team_env, tmp_path) as team:
        task_ids = await _create_and_kill(team["A"], emulator, n)
        async with connect(team["B"]) as b, connect(team["C"]) as c:
            results = await _collect([b, c], task_ids)
            assert {r["status"] for r in results.values()} == {"success"}, results
            assert all(len(r["images"]) == 1 for r in results.values())
            for result in results.values():  # A died before any task finished: it saved nothing
                path = result["images"][0]["path"]
                assert path is None or not Path(path).is_relative_to(team["A"].output_dir), path
            assert emulator.creates == n, f"{emulator.creates - n} duplicate creates"
            assert emulator.keys_on_two_endpoints() == set()

            # The images: in the bucket, served by every replica (needs NANO_BANANA_STORAGE_URL honoured).
            for task_id in task_ids:
                uri = f"nano-banana://tasks/{task_id}/images/0"
                read: list[bytes] = []
                for client in (b, c):  # one of the two did not save it
                    contents = (await client.read_resource(uri)).contents
                    assert len(contents) == 1 and contents[0].mime_type == "image/png", contents
                    assert isinstance(contents[0], BlobResourceContents)
                    read.append(base64.b64decode(contents[0].blob))
                assert read[0] == read[1]
                assert read[0].startswith(PNG_SIGNATURE)
        assert team["B"].process.poll() is None and team["C"].process.poll() is None
        _a_2025_session_lives_on_its_own_replica(team["B"], team["C"], hello)
    bucket = storage_url.removeprefix("s3://").split("/", 1)[0]
    in_bucket = {f"s3://{bucket}/{key}" for key in s3_server.keys(bucket)}
    assert {r["images"][0]["path"] for r in results.values()} <= in_bucket
    assert emulator.creates == n
