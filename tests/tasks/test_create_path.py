"""The create path under every plausible reading of ``/tasks/sync`` (the page shows no event format): one create, the
image saved, at most 3 create requests; a stream that never names its task is not posted again but the task is found
through ``GET /tasks/list``; later creates, here and in the next process, use the documented ``/tasks/async``."""

from __future__ import annotations

from pathlib import Path

import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import STREAM_FORMATS, Emulator
from nano_banana_mcp.runtime import open_service
from nano_banana_mcp.tasks.create_path import CreatePath

pytestmark = pytest.mark.anyio

CREATES = ("/api/v1/tasks/sync", "/api/v1/tasks/async")
UNREADABLE = ("bare_status", "text")  # their events never name the task


def create_requests(emulator: Emulator) -> list[str]:
    return [r.path for r in emulator.requests if r.method == "POST" and r.path in CREATES]


@pytest.mark.parametrize("stream_format", STREAM_FORMATS)
async def test_every_stream_format_ends_in_the_image_with_one_create(
    settings: Settings, emulator: Emulator, stream_format: str
) -> None:
    """Whatever the events look like, the call returns the saved image: 1 task made, at most 3 create requests."""
    emulator.task_seconds = 0.4
    emulator.faults.stream_format = stream_format
    async with open_service(settings) as service:
        result = await service.generate(GenerateRequest(prompt=f"a {stream_format} cat"), wait_seconds=30)
    assert result.status == "success", result.error
    assert result.task_id.startswith("task_")
    assert Path(result.images[0].path or "").is_file()
    assert emulator.creates == 1
    assert len(create_requests(emulator)) <= 3
    assert create_requests(emulator)[0] == "/api/v1/tasks/sync"


@pytest.mark.parametrize("stream_format", UNREADABLE)
async def test_an_unreadable_stream_is_posted_once_then_the_documented_path_is_used(
    settings: Settings, emulator: Emulator, stream_format: str
) -> None:
    """A stream that never names its task is not posted again; the next tasks, in this process and the next, are
    created through /tasks/async and polled."""
    emulator.task_seconds = 0.3
    emulator.faults.stream_format = stream_format
    async with open_service(settings) as service:
        first = await service.generate(GenerateRequest(prompt="first"), wait_seconds=30)
        second = await service.generate(GenerateRequest(prompt="second"), wait_seconds=30)
    async with open_service(settings) as service:  # the next process remembers it
        third = await service.generate(GenerateRequest(prompt="third"), wait_seconds=30)
    assert [r.status for r in (first, second, third)] == ["success"] * 3
    assert create_requests(emulator) == ["/api/v1/tasks/sync", "/api/v1/tasks/async", "/api/v1/tasks/async"]
    assert emulator.creates == 3
    assert len({first.task_id, second.task_id, third.task_id}) == 3
    path = CreatePath.load(settings.data_dir, settings.base_url)
    assert path.endpoint == "async"
    assert "unreadable" in path.reason


async def test_a_readable_stream_costs_one_request_per_task(settings: Settings, emulator: Emulator) -> None:
    """Where events name the task (the default reading), one request carries it to its end: no list, no poll."""
    emulator.task_seconds = 0.3
    async with open_service(settings) as service:
        result = await service.generate(GenerateRequest(prompt="streamed"), wait_seconds=30)
    assert result.status == "success"
    api_calls = [r.path for r in emulator.requests if r.path.startswith("/api/v1/tasks")]
    assert api_calls == ["/api/v1/tasks/sync"]
    assert CreatePath.load(settings.data_dir, settings.base_url).endpoint == "sync"


async def test_a_found_task_is_never_one_another_row_has(settings: Settings, emulator: Emulator) -> None:
    """Two tasks of one model made at once on an unreadable stream each get their own task from the list."""
    emulator.task_seconds = 0.5
    emulator.faults.stream_format = "text"
    async with open_service(settings) as service:
        records = await service.submit(GenerateRequest(prompt="twins"), count=2)
        results = [await service.wait(r.key, 30) for r in records]
    assert [r.status for r in results] == ["success", "success"]
    assert len({r.task_id for r in results}) == 2
    assert emulator.creates == 2
    assert len({r.images[0].path for r in results}) == 2


async def test_a_stream_that_breaks_before_any_event_is_resent_once(settings: Settings, emulator: Emulator) -> None:
    """A stream cut before it said anything is the documented retry (same key, same endpoint), not a search."""
    emulator.task_seconds = 0.3
    emulator.faults.lose_create_responses = 1
    async with open_service(settings) as service:
        result = await service.generate(GenerateRequest(prompt="cut"), wait_seconds=30)
    assert result.status == "success"
    assert create_requests(emulator) == ["/api/v1/tasks/sync", "/api/v1/tasks/sync"]
    assert emulator.creates == 1
    assert CreatePath.load(settings.data_dir, settings.base_url).endpoint == "sync"


async def test_streams_that_always_break_end_in_a_search_not_a_third_post(
    settings: Settings, emulator: Emulator
) -> None:
    """Every stream cut before any event: two posts, then the task is found in the list and saved."""
    emulator.task_seconds = 0.3
    emulator.faults.lose_create_responses = 5
    async with open_service(settings) as service:
        result = await service.generate(GenerateRequest(prompt="cut again"), wait_seconds=30)
    assert result.status == "success", result.error
    assert create_requests(emulator) == ["/api/v1/tasks/sync", "/api/v1/tasks/sync"]
    assert emulator.creates == 1
    assert any(r.path == "/api/v1/tasks/list" for r in emulator.requests)
    assert CreatePath.load(settings.data_dir, settings.base_url).endpoint == "sync"  # a broken network, not a format


async def test_a_create_answered_already_finished_is_read_again_for_its_image(
    settings: Settings, emulator: Emulator
) -> None:
    """A /tasks/async create whose answer already says success but lists no output (a create's answer need not) is
    followed with GET /tasks/{id} for the image, not failed as a success without one."""
    emulator.task_seconds = 0
    polled = settings.model_copy(update={"max_streams": 0})
    async with open_service(polled) as service:
        result = await service.generate(GenerateRequest(prompt="instant"), wait_seconds=30)
    assert result.status == "success", result.error
    assert Path(result.images[0].path or "").is_file()
    assert emulator.creates == 1
