"""The runner: one create per request whatever happens (faults, cancelled calls, restarts, two processes), and
every result saved. The emulator runs with strict idempotency: a key dedupes only on its own endpoint."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator, RequestRecord
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster, TextOf

pytestmark = pytest.mark.anyio


def ledger_phases(data_dir: Path) -> list[str]:
    if not (data_dir / "ledger.sqlite3").exists():  # connecting would create it
        return []
    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    try:
        return [row[0] for row in db.execute("SELECT phase FROM tasks")]
    except sqlite3.OperationalError:  # the file exists, its table not yet
        return []
    finally:
        db.close()


async def wait_for(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.05) -> None:
    """Until ``condition()`` holds; ``timeout`` only guards against a hang."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(interval)


def ledger_task_ids(data_dir: Path) -> list[str]:
    db = sqlite3.connect(data_dir / "ledger.sqlite3")
    try:
        return [row[0] for row in db.execute("SELECT task_id FROM tasks")]
    finally:
        db.close()


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if not p.name.startswith(".")) if folder.exists() else []


async def restart_and_collect(command: str, env: dict[str, str], out: Path) -> list[Path]:
    """Start the server again on the same data dir and, without calling any tool, wait for the files."""
    async with Client(StdioServerParameters(command=command, args=[], env=env), read_timeout_seconds=30) as client:
        await client.list_tools()
        await wait_for(lambda: files_in(out))
    return files_in(out)


async def test_sigkill_mid_generation_then_restart_finishes_the_task(
    emulator: Emulator, process_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """Killed after the create: the restarted server follows the task and saves its image; one create."""
    emulator.task_seconds = 3.0
    proc = subprocess.Popen([command, "generate", "a survivor"], env=process_env)
    try:
        await wait_for(lambda: ledger_phases(tmp_path / "data") == ["created"])  # the task id reached the ledger
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
    out = tmp_path / "out"
    assert files_in(out) == []
    assert ledger_phases(tmp_path / "data") == ["created"]

    [saved] = await restart_and_collect(command, process_env, out)
    assert saved.read_bytes()[:4] == b"\x89PNG"
    assert emulator.creates == 1


async def test_sigkill_before_the_create_answered_resends_with_the_same_key(
    emulator: Emulator, process_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """Killed while the create was in flight: the restart resends it with the same key; still one task."""
    emulator.task_seconds = 0.2
    emulator.faults.latency = 1.0
    proc = subprocess.Popen([command, "generate", "in flight"], env=process_env)
    try:
        ledger = tmp_path / "data" / "ledger.sqlite3"
        await wait_for(lambda: ledger.exists() and ledger_phases(tmp_path / "data") == ["submitting"])
    finally:
        proc.kill()
        proc.wait()
    assert ledger_phases(tmp_path / "data") == ["submitting"]
    emulator.faults.latency = 0

    [saved] = await restart_and_collect(command, process_env, tmp_path / "out")
    assert saved.is_file()
    assert emulator.creates == 1


async def test_two_servers_on_one_data_dir(settings: Settings, emulator: Emulator) -> None:
    """Two servers sharing a data dir generate at once: each task made once, downloaded once, seen by both."""
    emulator.task_seconds = 0.3
    async with (
        Client(create_server(settings)) as first,
        Client(create_server(settings), mode="legacy") as second,
    ):
        results: list[dict[str, Any]] = []

        async def generate(client: Client, prompt: str) -> None:
            result = await client.call_tool("generate_image", {"prompt": prompt})
            results.append(result.structured_content)

        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(generate, first, f"first {i}")
                tg.start_soon(generate, second, f"second {i}")

        assert [r["status"] for r in results] == ["success"] * 8
        assert emulator.creates == 8
        downloads = [r for r in emulator.requests if r.path.startswith("/files/outputs/") and r.status in (200, 206)]
        assert len(downloads) == 8
        assert len({img["path"] for r in results for img in r["images"]}) == 8

        # Each sees the other's tasks, from the shared ledger.
        theirs = next(r for r in results if r["prompt"].startswith("second"))
        seen = await first.call_tool("get_task", {"task_id": theirs["task_id"]})
        assert seen.structured_content["images"] == theirs["images"]
        listed = await second.call_tool("list_tasks", {"page_size": 50})
        assert listed.structured_content["total_local"] == 8
        assert {t["task_id"] for t in listed.structured_content["tasks"]} == {r["task_id"] for r in results}


async def test_get_task_waits_on_a_task_another_process_follows(settings: Settings, emulator: Emulator) -> None:
    """get_task with a wait returns the files even when the other server is the one following the task."""
    emulator.task_seconds = 0.6
    async with Client(create_server(settings)) as first, Client(create_server(settings)) as second:
        handle = await first.call_tool("generate_image", {"prompt": "shared", "wait_seconds": 0})
        done = await second.call_tool("get_task", {"task_id": handle.structured_content["task_id"], "wait_seconds": 10})
    assert done.structured_content["status"] == "success"
    assert Path(done.structured_content["images"][0]["path"]).is_file()
    assert emulator.creates == 1


async def test_unwritable_output_dir_is_clear_and_recoverable(
    settings: Settings, emulator: Emulator, tmp_path: Path
) -> None:
    """An output folder that cannot be made once the server runs (one that cannot at start stops the start) gives a
    clear error; once fixed, get_task saves the files."""
    blocker = tmp_path / "blocked"
    blocked = settings.model_copy(update={"output_dir": blocker / "images"})
    async with Client(create_server(blocked)) as client:
        shutil.rmtree(blocker)
        blocker.write_text("a file where the output folder should be")
        result = await client.call_tool("generate_image", {"prompt": "patience", "wait_seconds": 1})
        data = result.structured_content
        assert "NANO_BANANA_OUTPUT_DIR" in data["error"]
        assert data["images"][0]["path"] is None
        assert data["images"][0]["url"]

        blocker.unlink()  # the user fixes the folder
        again = await client.call_tool("get_task", {"task_id": data["task_id"], "wait_seconds": 10})
    assert again.structured_content["status"] == "success"
    assert again.structured_content["error"] is None
    assert Path(again.structured_content["images"][0]["path"]).is_file()
    assert emulator.creates == 1


async def test_tasks_made_elsewhere_are_found_at_the_api(mcp_client: Client, emulator: Emulator, api_key: str) -> None:
    """A task created with the same key from another tool is answered by get_task and listed by list_tasks."""
    emulator.task_seconds = 0
    made = httpx.post(
        f"{emulator.base_url}/api/v1/tasks/async",
        headers={"Authorization": f"Bearer {api_key}"},
        json={
            "type": "image",
            "input": {"model": "nano-banana-1", "prompt": "x"},
            "idempotency_key": str(uuid.uuid4()),
        },
    ).json()
    got = await mcp_client.call_tool("get_task", {"task_id": made["id"]})
    assert got.structured_content["status"] == "success"
    assert got.structured_content["model"] == "nano-banana-1"
    assert got.structured_content["images"][0]["url"].startswith("http")
    listed = await mcp_client.call_tool("list_tasks", {"status": "success"})
    assert made["id"] in {t["task_id"] for t in listed.structured_content["tasks"]}


async def test_list_tasks_filters_by_status(mcp_client: Client, emulator: Emulator) -> None:
    """A status filter keeps only matching tasks."""
    await mcp_client.call_tool("generate_image", {"prompt": "fine"})
    emulator.faults.fail_tasks = 1
    failed = await mcp_client.call_tool("generate_image", {"prompt": "doomed"})
    listed = await mcp_client.call_tool("list_tasks", {"status": "failed"})
    assert [t["task_id"] for t in listed.structured_content["tasks"]] == [failed.structured_content["task_id"]]
    assert listed.structured_content["total_local"] == 1


async def test_a_call_that_ends_before_the_api_confirms_names_the_request(
    settings: Settings, emulator: Emulator
) -> None:
    """The API is down for the whole call: the result is pending with the request's own id, says it is never
    charged twice, and get_task with that id collects it once the API is back; one task in all."""
    emulator.faults.server_errors = 1000
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "persistent", "wait_seconds": 0.5})
        assert not result.is_error, result.content
        data = result.structured_content
        assert data["status"] == "pending"
        assert "never charged twice" in data["next_step"]
        assert "HTTP 503" in data["error"]
        emulator.faults.server_errors = 0  # the API comes back
        done = await client.call_tool("get_task", {"task_id": data["task_id"], "wait_seconds": 10})
    assert done.structured_content["status"] == "success"
    assert done.structured_content["task_id"].startswith("task_")
    assert emulator.creates == 1


async def test_concurrent_processes_on_one_data_dir(
    emulator: Emulator, process_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """Four real processes generating at once on one data dir: four creates, four downloads, four files."""
    emulator.task_seconds = 0.5
    procs = [
        subprocess.Popen([command, "generate", f"process {i}"], env=process_env, stdout=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    paths = {Path(out.strip()) for out in outputs}
    assert len(paths) == 4
    assert all(p.is_file() for p in paths)
    assert emulator.creates == 4
    assert emulator.downloads == 4
    assert ledger_phases(tmp_path / "data") == ["downloaded"] * 4


async def test_upload_cache_survives_restart_and_renews_near_expiry(
    settings: Settings, emulator: Emulator, tmp_path: Path
) -> None:
    """A reference uploaded by one server run is reused by the next; within an hour of expiry it is sent again."""

    ref = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), "blue").save(ref)
    for _ in range(2):
        async with Client(create_server(settings)) as client:
            up = await client.call_tool("upload_reference", {"path": str(ref)})
            assert not up.is_error
    assert emulator.uploads == 1

    db = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
    soon = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    db.execute("UPDATE uploads SET expires_at=?", (soon,))
    db.commit()
    db.close()
    async with Client(create_server(settings)) as client:
        await client.call_tool("upload_reference", {"path": str(ref)})
    assert emulator.uploads == 2


def api_requests(emulator: Emulator) -> list[RequestRecord]:
    return [r for r in emulator.requests if r.path.startswith("/api/v1/")]


async def test_happy_path_is_one_request_to_one_endpoint(mcp_client: Client, emulator: Emulator) -> None:
    """A generation is one API request: the create on /tasks/sync, whose stream carries the task to its end."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "one request"})
    assert result.structured_content["status"] == "success"
    assert [(r.method, r.path) for r in api_requests(emulator)] == [("POST", "/api/v1/tasks/sync")]
    assert emulator.creates_by_endpoint == {"sync": 1}
    assert emulator.keys_on_two_endpoints() == set()


FAULTS = {
    "rate_limit": 2,
    "server_errors": 3,
    "lose_create_responses": 2,
    "drop_streams": 3,
    "cut_downloads": 2,
}


@pytest.mark.parametrize("fault", FAULTS)
async def test_every_fault_makes_exactly_one_task(mcp_client: Client, emulator: Emulator, fault: str) -> None:
    """Whatever fails on the way, the request is made once, on one endpoint, and its image saved."""
    setattr(emulator.faults, fault, FAULTS[fault])
    result = await mcp_client.call_tool("generate_image", {"prompt": f"despite {fault}"})
    assert result.structured_content["status"] == "success", result.content
    assert Path(result.structured_content["images"][0]["path"]).is_file()
    assert emulator.creates == 1
    assert emulator.keys_on_two_endpoints() == set()


async def test_busy_streams_create_through_async_and_poll(settings: Settings, emulator: Emulator) -> None:
    """With every stream slot taken, a request goes to /tasks/async and is polled; no key crosses endpoints."""
    emulator.task_seconds = 0.5
    one_stream = settings.model_copy(update={"max_streams": 1})
    async with Client(create_server(one_stream)) as client, anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(client.call_tool, "generate_image", {"prompt": f"slot {i}"})
    assert emulator.creates == 3
    assert emulator.creates_by_endpoint["sync"] >= 1
    assert emulator.creates_by_endpoint["async"] >= 1
    assert emulator.keys_on_two_endpoints() == set()
    assert emulator.downloads == 3


async def test_call_cancelled_during_the_create_is_still_made_once_and_saved(
    settings: Settings, emulator: Emulator, tmp_path: Path
) -> None:
    """The host cancels generate_image while the create is in flight: the task is made once, followed and saved
    by the same server, with no restart and no second call."""
    emulator.faults.latency = 0.6  # the create request is still in flight when the call is cancelled
    async with Client(create_server(settings)) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "generate_image", {"prompt": "cancelled"})
            await wait_for(lambda: ledger_phases(settings.data_dir) == ["submitting"])  # the create is on its way
            tg.cancel_scope.cancel()
        await wait_for(lambda: ledger_phases(settings.data_dir) == ["downloaded"])  # saved, and its row says so
        listed = await client.call_tool("list_tasks", {})
    [task] = listed.structured_content["tasks"]
    assert task["status"] == "success"
    assert len(files_in(tmp_path / "out")) == 1
    assert emulator.creates == 1
    assert emulator.keys_on_two_endpoints() == set()


async def test_api_refusal_is_an_error_and_charges_nothing(
    mcp_client: Client, emulator: Emulator, text_of: TextOf
) -> None:
    """A create the API refuses for good is reported as an error with the API's reason; it is not resent."""
    emulator.faults.refuse_creates = 1
    result = await mcp_client.call_tool("generate_image", {"prompt": "refused"})
    assert result.is_error
    assert "HTTP 400 VALIDATION_ERROR" in text_of(result)
    assert emulator.creates == 0
    assert len([r for r in api_requests(emulator) if r.method == "POST"]) == 1


async def test_sigkill_then_restart_saves_the_orphan_quickly(
    emulator: Emulator, process_env: dict[str, str], tmp_path: Path, command: str
) -> None:
    """A killed owner is known dead at once: the restarted server's start-up sweep saves the orphan's image, without
    waiting for any lease or a later sweep (bench/restart.py measures how soon: its median)."""
    emulator.task_seconds = 0.3
    env = process_env | {"NANO_BANANA_SWEEP_INTERVAL": "3600"}  # only the start-up sweep may find it
    proc = subprocess.Popen([command, "generate", "orphan"], env=env)
    try:
        await wait_for(lambda: ledger_phases(tmp_path / "data") == ["created"])
    finally:
        proc.kill()
        proc.wait()
    [task_id] = ledger_task_ids(tmp_path / "data")
    await wait_for(lambda: emulator.finished_at(task_id) is not None)  # finished at the API: only the download is left
    [saved] = await restart_and_collect(command, env, tmp_path / "out")  # within 60 s, long before another sweep
    assert saved.is_file()
    assert emulator.creates == 1


@pytest.mark.parametrize("kind", ["bad_gzip", "redirect_data_url", "nested_error"])
async def test_unreadable_create_answers_are_sent_again_not_lost(
    mcp_client: Client, emulator: Emulator, kind: str
) -> None:
    """The create is made but its answer cannot be read (a false gzip header, a redirect to a data: URL, an error
    nested too deep to parse): the same request is sent again with the same key, the task followed and saved."""
    emulator.faults.hostile = 1
    emulator.faults.hostile_kind = kind
    result = await mcp_client.call_tool("generate_image", {"prompt": f"despite {kind}"})
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "success"
    assert emulator.hostile_fired[kind] == 1
    assert emulator.creates == 1
    assert emulator.keys_on_two_endpoints() == set()


# -- on PostgreSQL -----------------------------------------------------------------------------------------------


def pg_phases(postgres: PostgresCluster, url: str) -> list[str]:
    import psycopg  # noqa: PLC0415 - the team extra

    try:
        return [row[0] for row in postgres.query(url, "SELECT phase FROM tasks")]
    except psycopg.errors.UndefinedTable:  # the server has not migrated the database yet
        return []


async def test_a_server_on_postgresql_generates_over_stdio(
    emulator: Emulator,
    postgres: PostgresCluster,
    database_url: str,
    process_env: dict[str, str],
    tmp_path: Path,
    command: str,
) -> None:
    """The real server over stdio with NANO_BANANA_DATABASE_URL: the image is saved, the row is in PostgreSQL, and
    no SQLite ledger is made."""
    env = process_env | {"NANO_BANANA_DATABASE_URL": database_url}
    async with Client(StdioServerParameters(command=command, args=[], env=env), read_timeout_seconds=30) as client:
        result = await client.call_tool("generate_image", {"prompt": "a shared ledger", "aspect_ratio": "1:1"})
    assert not result.is_error, result.content
    [image] = result.structured_content["images"]
    assert Path(image["path"]).parent == tmp_path / "out"
    assert pg_phases(postgres, database_url) == ["downloaded"]
    assert not (tmp_path / "data" / "ledger.sqlite3").exists()
    assert emulator.creates == 1


async def test_a_replica_killed_mid_generation_is_finished_by_another(
    emulator: Emulator,
    postgres: PostgresCluster,
    database_url: str,
    process_env: dict[str, str],
    tmp_path: Path,
    command: str,
) -> None:
    """Replica A is SIGKILLed after the create; replica B (its own data dir and output folder, the same database)
    finishes the task at once; one create."""
    emulator.task_seconds = 2.0
    env_a = process_env | {"NANO_BANANA_DATABASE_URL": database_url}
    proc = subprocess.Popen([command, "generate", "a survivor"], env=env_a)
    try:
        await wait_for(lambda: pg_phases(postgres, database_url) == ["created"])
    finally:
        proc.kill()
        proc.wait()
    out_b = tmp_path / "b" / "out"
    env_b = env_a | {"NANO_BANANA_DATA_DIR": str(tmp_path / "b" / "data"), "NANO_BANANA_OUTPUT_DIR": str(out_b)}
    [saved] = await restart_and_collect(command, env_b, out_b)
    assert saved.read_bytes()[:4] == b"\x89PNG"
    assert files_in(tmp_path / "out") == []
    assert emulator.creates == 1


async def test_a_runner_whose_row_was_taken_over_stops(
    settings: Settings,
    emulator: Emulator,
    postgres: PostgresCluster,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The runner's session is cut while it follows a task and another replica claims the row: the runner's next write
    is refused, it stops following (no retry loop), and the row stays the other's; one create."""
    from nano_banana_mcp.runtime import open_service  # noqa: PLC0415
    from nano_banana_mcp.tasks.ledger_pg import PostgresLedger  # noqa: PLC0415

    emulator.task_seconds = 1.5
    async with open_service(settings.model_copy(update={"database_url": SecretStr(database_url)})) as service:
        runner = service.runner
        assert runner is not None
        [rec] = await service.submit(GenerateRequest(prompt="taken over"))
        await wait_for(lambda: emulator.creates == 1)
        other = await PostgresLedger(SecretStr(database_url), api_scope=settings.base_url).open()
        try:
            postgres.cut_off(database_url, service.ledger.owner)
            with anyio.fail_after(60):  # only against a hang: the row is free once PostgreSQL ended the session
                while not await other.claim(rec.key):
                    await anyio.sleep(0.01)
            await wait_for(lambda: not runner.is_following(rec.key))
            assert postgres.query(database_url, "SELECT owner FROM tasks") == [(other.owner,)]
            assert "another process took the row over" in caplog.text
        finally:
            await other.close()
    assert emulator.creates == 1
