"""One result for the tasks of one call (``combine``), and a request_id bound to the whole request."""

from __future__ import annotations

import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import InvalidRequest
from nano_banana_mcp.runtime import open_service
from nano_banana_mcp.tasks import TaskResult, combine
from nano_banana_mcp.tasks.records import Status


def result(task_id: str, status: Status) -> TaskResult:
    return TaskResult(task_id=task_id, status=status, model="nano-banana-2", prompt="p", output_dir="/tmp")


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("pending", "pending"), "pending"),
        (("pending", "failed"), "pending"),
        (("pending", "running"), "running"),
        (("running", "running"), "running"),
        (("running", "failed"), "running"),
        (("success", "running"), "running"),
        (("success", "pending"), "running"),
        (("success", "failed"), "success"),
        (("failed", "failed"), "failed"),
    ],
)
def test_a_batch_is_pending_until_one_of_its_tasks_runs(statuses: tuple[Status, Status], expected: Status) -> None:
    """A call is pending while nothing has started, running once any task runs or is saved, over when all are."""
    combined = combine([result(f"task_{i}", s) for i, s in enumerate(statuses)])
    assert combined.status == expected
    assert combined.task_ids == ["task_0", "task_1"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "change",
    [{"output_format": "jpeg"}, {"aspect_ratio": "16:9"}, {"resolution": "2K"}, {"prompt": "another"}],
    ids=lambda c: next(iter(c)),
)
async def test_a_request_id_is_refused_for_a_request_that_differs_in_anything(
    settings: Settings, emulator: Emulator, change: dict[str, str]
) -> None:
    """The same request_id with another output format (or any other field) is another request: refused, not
    answered with the first request's images."""
    emulator.task_seconds = 0
    first = GenerateRequest(prompt="a fox", model="nano-banana-2", output_format="png")
    async with open_service(settings) as service:
        await service.generate(first, 10, request_id="r-1")
        with pytest.raises(InvalidRequest, match="already used for another request"):
            await service.generate(first.model_copy(update=change), 10, request_id="r-1")
    assert emulator.creates == 1
