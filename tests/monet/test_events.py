"""Reading /tasks/sync events whatever their shape: a task wherever it sits, partial events merged onto it, outputs
where they appear; bare progress, bare status and plain text understood without naming any task."""

from __future__ import annotations

import json

import pytest

from nano_banana_mcp.monet import StreamEvent, Task
from nano_banana_mcp.monet.events import read_event

TASK = {"id": "task_1", "status": "processing", "outputs": [{"model": "nano-banana-2", "progress": 40}]}
DONE = {"id": "task_1", "status": "success", "outputs": [{"url": "https://files.monet.vision/a.png"}]}


def read(data: object, last: Task | None = None) -> StreamEvent | None:
    return read_event(data if isinstance(data, str) else json.dumps(data), last)


@pytest.mark.parametrize(
    "data",
    [
        TASK,
        {"type": "task.updated", "data": TASK},
        {"event": "progress", "payload": {"task": TASK}},
        {"data": [TASK]},
    ],
    ids=["bare", "envelope", "nested", "in-a-list"],
)
def test_a_task_is_found_wherever_it_sits(data: object) -> None:
    """An object with an id and a status is the task, at the top or inside an envelope."""
    event = read(data)
    assert event is not None and event.task is not None
    assert (event.task.id, event.task.status, event.task.progress) == ("task_1", "processing", 40)
    assert not event.finished


def test_a_partial_event_is_merged_onto_the_task_named_before() -> None:
    """{"progress": 70} after the task was named updates that task."""
    first = read(TASK)
    assert first is not None and first.task is not None
    later = read({"outputs": [{"progress": 70}]}, first.task)
    assert later is not None and later.task is not None
    assert (later.task.id, later.task.progress) == ("task_1", 70)


def test_output_urls_are_taken_from_beside_the_task() -> None:
    """An envelope whose URLs sit next to the task still yields them."""
    event = read({"type": "task.completed", "data": {"id": "task_1", "status": "success"}, "urls": ["https://x/a"]})
    assert event is not None and event.task is not None
    assert event.task.urls == ["https://x/a"]
    assert event.finished


@pytest.mark.parametrize(
    ("data", "status", "progress", "finished"),
    [
        ({"progress": 40}, None, 40, False),
        ({"status": "success"}, "success", None, True),
        ({"status": "failed"}, "failed", None, True),
        ("progress 40%", None, 40, False),
        ("success", "success", None, True),
        ("Generation failed: content policy", "failed", None, True),
    ],
)
def test_events_that_never_name_the_task(
    data: object, status: str | None, progress: float | None, finished: bool
) -> None:
    """Bare progress, a bare status and plain text say what they can, with no task."""
    event = read(data)
    assert event is not None
    assert event.task is None
    assert (event.status, event.progress, event.finished) == (status, progress, finished)


@pytest.mark.parametrize("data", ["", "   ", "{}", '{"hello": "world"}', "[1, 2]", "null", "keepalive"])
def test_events_that_say_nothing_are_skipped(data: str) -> None:
    """Blank lines, empty objects, unknown fields and chatter are not events."""
    assert read(data) is None


def test_a_deep_or_wide_event_is_read_in_bounded_time() -> None:
    """A hostile event (very deep, very wide) is searched only so far: no task, no hang, no crash."""
    deep: object = TASK
    for _ in range(50):
        deep = {"data": deep}
    assert read(deep) is None
    wide = {f"k{i}": {"x": i} for i in range(10_000)}
    assert read(wide) is None
