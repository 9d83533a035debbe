"""The service without MCP: submit / wait / get / list / upload on a real runtime against the emulator."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Coroutine
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import InvalidRequest, MonetError, TaskNotFound
from nano_banana_mcp.runtime import open_service
from nano_banana_mcp.tasks import LEDGER_FILE, Status

pytestmark = pytest.mark.anyio


def rows_in_ledger(settings: Settings) -> int:
    """The rows in the ledger file, read as another process would (0 before the file or its table exists)."""
    path = settings.data_dir / LEDGER_FILE
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM tasks").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


async def cancelled_once_submitted(settings: Settings, call: Callable[[], Coroutine[Any, Any, object]]) -> None:
    """Run ``call`` and cancel it as soon as its row is in the ledger: a caller that walks away right after submit."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        with anyio.fail_after(60):  # only against a hang
            while not rows_in_ledger(settings):
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


async def test_submit_returns_at_once_and_wait_collects(settings: Settings, emulator: Emulator) -> None:
    """submit hands back the row before the API answers; wait on its key returns the saved images."""
    emulator.task_seconds = 0.3
    async with open_service(settings) as service:
        [record] = await service.submit(GenerateRequest(prompt="quick"))
        assert record.phase == "submitting"
        result = await service.wait(record.key, 10)
    assert result.status == "success"
    assert result.task_id.startswith("task_")
    assert Path(result.images[0].path or "").is_file()
    assert emulator.creates == 1


async def test_a_cancelled_wait_loses_nothing(settings: Settings, emulator: Emulator) -> None:
    """Cancelling the caller right after submit does not stop the task: it is made once and saved."""
    emulator.task_seconds = 0.2
    emulator.faults.latency = 0.3
    async with open_service(settings) as service:
        await cancelled_once_submitted(
            settings, lambda: service.generate(GenerateRequest(prompt="walk away"), wait_seconds=30)
        )
        # This machine's row (an API task it has not learned the id of yet is also listed, as one made elsewhere).
        [row] = [t for t in (await service.list_tasks()).tasks if t.prompt == "walk away"]
        done = await service.wait(row.task_id, 10)
    assert done.status == "success"
    assert emulator.creates == 1


async def test_status_filter_and_totals_agree(settings: Settings, emulator: Emulator) -> None:
    """A page filtered by status and its total count the same rows (the filter runs in SQL)."""
    emulator.task_seconds = 0
    async with open_service(settings) as service:
        for prompt in ("one", "two"):
            await service.generate(GenerateRequest(prompt=prompt), 10)
        emulator.faults.fail_tasks = 1
        await service.generate(GenerateRequest(prompt="three"), 10)
        emulator.task_seconds = 60  # still pending at the API (its first 6 s) when the call returns
        await service.generate(GenerateRequest(prompt="four"), 0.2)
        expectations: list[tuple[Status, int]] = [("success", 2), ("failed", 1), ("pending", 1), ("running", 0)]
        for status, expected in expectations:
            listed = await service.list_tasks(page_size=1, status=status)
            assert listed.total_local == expected, status
            assert len([t for t in listed.tasks if t.task_id.startswith("task_")]) == min(expected, 1), status
            assert all(t.status == status for t in listed.tasks)


async def test_refused_create_raises_and_invalid_input_never_reaches_the_api(
    settings: Settings, emulator: Emulator
) -> None:
    """The catalogue refuses before any request; an API refusal is raised with its reason; nothing charged."""
    async with open_service(settings) as service:
        with pytest.raises(InvalidRequest, match="nano-banana-1"):
            await service.generate(GenerateRequest(prompt="x", model="nano-banana-1", resolution="4K"), 5)
        assert emulator.requests == []
        emulator.faults.refuse_creates = 1
        with pytest.raises(MonetError, match="VALIDATION_ERROR"):
            await service.generate(GenerateRequest(prompt="refused"), 5)
    assert emulator.creates == 0


async def test_unknown_ids_and_unsaved_images(settings: Settings, emulator: Emulator) -> None:
    """An id known neither here nor at the API, or an image index out of range, is a clear TaskNotFound."""
    emulator.task_seconds = 0
    async with open_service(settings) as service:
        with pytest.raises(TaskNotFound, match="list_tasks"):
            await service.get("task_nope")
        result = await service.generate(GenerateRequest(prompt="one image"), 10)
        assert await service.image_bytes(result.task_id, 0) == Path(result.images[0].path or "").read_bytes()
        with pytest.raises(TaskNotFound, match="no image 1"):
            await service.image_bytes(result.task_id, 1)


# -- request_id: the caller's own idempotency ------------------------------------------------------


async def test_a_request_sent_again_with_its_request_id_is_made_once(settings: Settings, emulator: Emulator) -> None:
    """The same request_id, sent again after the first call finished or while it still runs (two calls racing), or
    from a new process after the first one died mid-call, gives the same tasks: one create each, one charge."""
    emulator.task_seconds = 0.3
    request = GenerateRequest(prompt="only once, please")
    async with open_service(settings) as service:
        # the caller's connection is cut once the request is submitted, before it learns the outcome
        await cancelled_once_submitted(settings, lambda: service.generate(request, wait_seconds=30, request_id="job-7"))
    async with open_service(settings) as again:  # a new process on the same ledger (another replica)
        results: list[str] = []

        async def call() -> None:
            result = await again.generate(request, wait_seconds=10, request_id="job-7")
            assert result.status == "success", result
            results.append(result.task_id)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            tg.start_soon(call)
        later = await again.generate(request, wait_seconds=10, request_id="job-7")
    assert emulator.creates == 1
    assert set(results) == {later.task_id}
    assert (await _count_rows(settings)) == 1


async def test_a_batch_sent_again_gives_the_same_tasks(settings: Settings, emulator: Emulator) -> None:
    emulator.task_seconds = 0
    request = GenerateRequest(prompt="three of a kind")
    async with open_service(settings) as service:
        first = await service.generate(request, wait_seconds=10, count=3, request_id="batch-1")
        second = await service.generate(request, wait_seconds=10, count=3, request_id="batch-1")
        other = await service.generate(request, wait_seconds=10, request_id="batch-2")
    assert first.task_ids == second.task_ids and len(set(first.task_ids)) == 3
    assert other.task_id not in first.task_ids
    assert emulator.creates == 4


async def test_a_request_id_used_for_another_request_is_refused_before_any_call(
    settings: Settings, emulator: Emulator
) -> None:
    emulator.task_seconds = 0
    async with open_service(settings) as service:
        await service.generate(GenerateRequest(prompt="a red door"), wait_seconds=10, request_id="door")
        with pytest.raises(InvalidRequest, match=r"request_id 'door' was already used for another request"):
            await service.generate(GenerateRequest(prompt="a blue door"), wait_seconds=10, request_id="door")
        with pytest.raises(InvalidRequest, match="request_id must be 1 to 200 characters"):
            await service.generate(GenerateRequest(prompt="x"), wait_seconds=10, request_id="")
    assert emulator.creates == 1


async def test_request_ids_are_each_tenants_own(settings: Settings, emulator: Emulator) -> None:
    """Two tenants choosing the same request_id get a task each: neither sees, nor is given, the other's."""
    emulator.task_seconds = 0
    request = GenerateRequest(prompt="same words")
    async with open_service(settings) as service:
        alice = await service.generate(request, wait_seconds=10, request_id="r1", tenant="alice")
        bob = await service.generate(request, wait_seconds=10, request_id="r1", tenant="bob")
    assert alice.task_id != bob.task_id
    assert emulator.creates == 2


async def test_a_tenant_and_request_id_cannot_pass_for_another_pair(settings: Settings, emulator: Emulator) -> None:
    """Tenant ``bob\\0x`` with request_id ``r`` is not bob with request_id ``x\\0r``: keys that joined the parts
    with NUL made both one row, and the second caller was told bob's task id (same words) or his prompt (others)."""
    emulator.task_seconds = 0
    async with open_service(settings) as service:
        bob = await service.generate(GenerateRequest(prompt="bob's secret"), 10, request_id="x\x00r", tenant="bob")
        same = await service.generate(GenerateRequest(prompt="bob's secret"), 10, request_id="r", tenant="bob\x00x")
        other = await service.generate(GenerateRequest(prompt="mallory"), 10, request_id="r", tenant="bob\x00y")
        assert same.task_id != bob.task_id and other.task_id not in (bob.task_id, same.task_id)
    assert emulator.creates == 3


async def test_request_id_keys_are_those_earlier_versions_wrote(settings: Settings, emulator: Emulator) -> None:
    """A request sent again after an upgrade finds the rows the version before wrote: for a tenant and request_id
    without NUL, the rows' keys (and the API's idempotency keys) are what they were."""
    async with open_service(settings) as service:
        records = await service.submit(GenerateRequest(prompt="kept"), count=2, tenant="alice", request_id="job-7")
    assert [r.key for r in records] == ["809fc653-43fd-514a-aa9a-fd4fd6b4b267", "dc17df0a-ef4c-5be3-a9b0-4efc8dbffa67"]


async def _count_rows(settings: Settings) -> int:
    async with open_service(settings) as service:
        return (await service.list_tasks(page_size=100)).total_local


async def test_walking_every_page_shows_every_task_once(settings: Settings, emulator: Emulator, api_key: str) -> None:
    """Tasks of this machine and tasks made elsewhere, interleaved in time: pages of 2 show all 6, each once."""
    emulator.task_seconds = 0
    async with open_service(settings) as service, httpx.AsyncClient(base_url=str(emulator.base_url)) as api:
        made: set[str] = set()
        for n in range(3):
            made.add((await service.generate(GenerateRequest(prompt=f"here {n}"), 10)).task_id)
            answer = await api.post(
                "/api/v1/tasks/async",
                headers={"Authorization": f"Bearer {api_key}"},
                json={
                    "type": "image",
                    "input": {"model": "nano-banana-2", "prompt": f"elsewhere {n}"},
                    "idempotency_key": str(uuid.uuid4()),
                },
            )
            made.add(answer.json()["id"])
        seen: list[str] = []
        for page in range(1, 5):
            listed = await service.list_tasks(page=page, page_size=2)
            assert listed.api_error is None
            seen += [t.task_id for t in listed.tasks]
    assert len(made) == 6
    assert sorted(seen) == sorted(made)
