"""A task's state machine: every phase's public status, and each transition the API's answers cause."""

from __future__ import annotations

from typing import Any

import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.monet import Task
from nano_banana_mcp.tasks import Phase, SavedImage, Status, TaskRecord, status_of
from nano_banana_mcp.tasks.records import MAX_OUTPUTS

URL = "https://files.monet.vision/task_1/0.png"


def record(**changes: Any) -> TaskRecord:
    return TaskRecord(key="key-1", request=GenerateRequest(prompt="a red fox"), **changes)


def created(**changes: Any) -> TaskRecord:
    """A row the API has named, still in progress."""
    return record(phase="created", task_id="task_1", api_status="processing", **changes)


def task(status: str, *, progress: float | None = None, url: str | None = None, **fields: Any) -> Task:
    output: dict[str, Any] = {"status": status, "progress": progress, "url": url}
    return Task.model_validate({"id": "task_1", "status": status, "outputs": [output], **fields})


@pytest.mark.parametrize(
    ("phase", "api_status", "status"),
    [
        ("submitting", None, "pending"),
        ("submitting", "processing", "pending"),
        ("created", None, "pending"),
        ("created", "pending", "pending"),
        ("created", "processing", "running"),
        ("created", "queued_somewhere_new", "running"),
        ("succeeded", "success", "running"),
        ("downloaded", "success", "success"),
        ("failed", "failed", "failed"),
        ("failed", None, "failed"),
    ],
)
def test_every_phase_has_one_public_status(phase: Phase, api_status: str | None, status: Status) -> None:
    """Not created: pending; at work: running; saved: success; failed: failed (unknown API statuses are work)."""
    assert status_of(phase, api_status) == status
    assert record(phase=phase, api_status=api_status).status == status


@pytest.mark.parametrize(
    ("phase", "finished"),
    [("submitting", False), ("created", False), ("succeeded", False), ("downloaded", True), ("failed", True)],
)
def test_only_saved_or_failed_rows_are_finished(phase: Phase, finished: bool) -> None:
    """A row is over once its images are saved or it failed; until then it is worked on."""
    assert record(phase=phase).finished is finished


def test_the_handle_is_the_key_until_the_api_names_the_task() -> None:
    """Agents get our key before the create is confirmed, the API's task id after."""
    row = record()
    assert row.handle == "key-1"
    row.observe(task("pending"))
    assert row.handle == "task_1"


def test_the_first_answer_names_the_task() -> None:
    """The API's first word about the task moves the row to created, with its id, clearing old trouble."""
    row = record(error="connection reset; trying again")
    assert row.observe(task("pending", progress=0))
    assert (row.phase, row.task_id, row.status, row.error) == ("created", "task_1", "pending", None)


def test_processing_makes_the_task_running() -> None:
    """A change of the API's status is a change worth writing down."""
    row = record(phase="created", task_id="task_1", api_status="pending")
    assert row.observe(task("processing", progress=10))
    assert row.status == "running"


def test_progress_alone_is_kept_but_not_a_change() -> None:
    """Progress is remembered on the row, but does not ask for a ledger write."""
    row = created(progress=10)
    assert not row.observe(task("processing", progress=40))
    assert row.progress == 40


def test_success_with_urls_is_ready_to_download() -> None:
    """A task that succeeded with outputs moves to succeeded, each image known by URL and not yet saved."""
    row = created()
    assert row.observe(task("success", progress=100, url=URL))
    assert row.phase == "succeeded"
    assert row.status == "running"
    assert row.images == [SavedImage(path=None, url=URL)]


def test_success_without_urls_is_a_failure() -> None:
    """A success with no image URL cannot be saved: the row fails and says why."""
    row = created()
    assert row.observe(task("success", progress=100))
    assert row.status == "failed"
    assert row.error is not None
    assert "no image URL" in row.error


def test_failure_carries_the_apis_reason() -> None:
    """A failed task fails the row with the API's error text."""
    row = created()
    assert row.observe(task("failed", error={"code": "generation_failed", "message": "the model refused"}))
    assert row.status == "failed"
    assert row.error == "generation_failed: the model refused"


def test_failure_without_a_reason_still_says_something() -> None:
    """A failed task with no error gives a readable reason, never an empty one."""
    row = created()
    assert row.observe(task("failed"))
    assert row.status == "failed"
    assert row.error


def test_a_finished_row_stays_finished() -> None:
    """A late answer (a replayed stream event) never moves a saved row back."""
    row = record(phase="downloaded", task_id="task_1", api_status="success")
    row.observe(task("processing", progress=50))
    assert row.phase == "downloaded"
    assert row.status == "success"


def test_send_to_fixes_the_endpoint_once() -> None:
    """The first choice of endpoint is kept: a key is never sent to the other one."""
    row = record()
    assert row.send_to("sync")
    assert not row.send_to("async")
    assert row.endpoint == "sync"


def test_a_refused_create_fails_the_row() -> None:
    """When the API refuses the create for good, the row fails with its reason and has no task id."""
    row = record()
    row.refused("HTTP 400 VALIDATION_ERROR: no such ratio")
    assert (row.status, row.task_id, row.error) == ("failed", None, "HTTP 400 VALIDATION_ERROR: no such ratio")


def test_a_lost_task_fails_the_row() -> None:
    """A task the API no longer knows fails with the reason."""
    row = created()
    row.lost("The API no longer knows task task_1")
    assert (row.status, row.error) == ("failed", "The API no longer knows task task_1")


def test_the_row_succeeds_only_once_every_image_is_saved() -> None:
    """Saving images one by one: success comes with the last one, and clears any trouble."""
    row = created()
    row.observe(Task.model_validate({"id": "task_1", "status": "success", "outputs": [{"url": URL}, {"url": URL}]}))
    row.trouble("disk full; trying again")
    row.saved(0, SavedImage(path="/out/a.png", url=URL))
    assert (row.status, row.error) == ("running", "disk full; trying again")
    row.saved(1, SavedImage(path="/out/b.png", url=URL))
    assert (row.status, row.error) == ("success", None)
    assert [i.path for i in row.images] == ["/out/a.png", "/out/b.png"]


def test_trouble_is_shown_without_ending_the_task() -> None:
    """A passing problem is recorded as the error while the task carries on."""
    row = created()
    row.trouble("connection reset; trying again")
    assert (row.status, row.error) == ("running", "connection reset; trying again")


def test_an_api_listing_hundreds_of_outputs_gets_a_few_files() -> None:
    """A success that lists 300 image URLs keeps only MAX_OUTPUTS of them: a peer cannot make us write 300 files."""
    row = created()
    many = Task.model_validate(
        {
            "id": "task_1",
            "status": "success",
            "outputs": [{"status": "success", "url": f"https://files.monet.vision/{i}.png"} for i in range(300)],
        }
    )
    row.observe(many)
    assert row.phase == "succeeded"
    assert [i.url for i in row.images] == [f"https://files.monet.vision/{i}.png" for i in range(MAX_OUTPUTS)]
