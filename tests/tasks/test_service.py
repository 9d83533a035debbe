"""The service without MCP: submit / wait / get / list / upload on a real runtime against the emulator."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import InvalidRequest, MonetError, TaskNotFound
from nano_banana_mcp.runtime import open_service

pytestmark = pytest.mark.anyio


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
        with anyio.move_on_after(0.05):
            await service.generate(GenerateRequest(prompt="walk away"), wait_seconds=30)
        [row] = (await service.list_tasks()).tasks
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
        for status, expected in (("success", 2), ("failed", 1), ("pending", 1), ("running", 0)):
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
