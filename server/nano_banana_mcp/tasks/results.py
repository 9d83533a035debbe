"""What an agent or a person is told of a task: the result models, their one-line summary, one result for the tasks
of one call (:func:`combine`), and the mapping of a ledger row (:func:`result_of`) or of a task made elsewhere
(:func:`foreign_result`) onto a result.

A create the API refused for every task of a call made nothing: :func:`outcome` raises it, as the error class the
client raised when the create was refused (an ``AuthError`` stays an ``AuthError``, with its status code), so the
edge (a tool's error, the CLI's exit) sees the refusal itself rather than a flattened copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema

from nano_banana_mcp.errors import MonetError
from nano_banana_mcp.monet import Task
from nano_banana_mcp.storage import ImageStore
from nano_banana_mcp.tasks.records import Call, SavedImage, Status, TaskRecord, status_at_api
from nano_banana_mcp.uris import image_uri

__all__ = [
    "COLLECT_WAIT",
    "OFFLINE_NOTE",
    "CallState",
    "TaskList",
    "TaskResult",
    "TaskSummary",
    "combine",
    "foreign_result",
    "outcome",
    "result_of",
]

COLLECT_WAIT = 30
"""The ``wait_seconds`` our advice names: well under the ~60 s at which hosts cut a call off."""
OFFLINE_NOTE = "Offline mode: these are placeholder images from the built-in emulator, not generated images."


def _bare_array(schema: dict[str, Any]) -> None:
    """A list of strings described as an array only: every byte of an output schema is paid in tools/list."""
    schema.pop("items", None)


class TaskResult(BaseModel):
    task_id: str  # this request's own id (the idempotency key) until the API names the task
    task_ids: list[str] = Field(default_factory=list)  # every task of the call (count > 1), task_id first
    status: Status = Field(description="success: saved; else next_step")
    model: str
    prompt: str
    progress: float | None = Field(default=None, description="Percent")
    images: list[SavedImage] = Field(default_factory=list)
    error: str | None = None
    output_dir: str
    offline: bool = False  # emulator placeholders, not generated images (the summary line says so)
    created_at: datetime | None = None
    next_step: str | None = None
    sets: list[str] = Field(default_factory=list, json_schema_extra=_bare_array)  # nano-banana://sets/{name} used
    # "2 images with nano-banana-2 at 2K, cost 0.12 USD": what is paid for (spend.Made). In the structured content and
    # the text, not in the declared output schema: tools/list is at its 8.5 KB budget (tests/mcp_server/test_schema).
    made: SkipJsonSchema[str | None] = None

    def summary(self) -> str:
        """One line for the agent to read."""
        if self.status == "success" and all(i.path for i in self.images):
            files = "; ".join(f"{i.path} ({i.width}x{i.height}, {_size(i.size_bytes)})" for i in self.images if i.path)
            count = len(self.images)
            tasks = f"tasks {', '.join(self.task_ids)}" if len(self.task_ids) > 1 else f"task {self.task_id}"
            line = f"Saved {count} image{'s' * (count != 1)} from {self.model} ({tasks}): {files}"
            if self.error:  # a batch where some tasks failed
                line = f"{line}. {self.error}"
            return f"{line}. {OFFLINE_NOTE}" if self.offline else line
        if self.status == "failed":
            return f"Task {self.task_id} failed: {self.error}"
        done = f" ({self.progress:.0f}%)" if self.progress is not None else ""
        problem = f" Problem: {self.error}" if self.error else ""
        return f"Task {self.task_id} is {self.status}{done}.{problem} {self.next_step or ''}".strip()


class TaskSummary(BaseModel):
    """One line of list_tasks; get_task has the rest."""

    task_id: str
    status: Status
    model: str
    prompt: str  # the first 120 characters
    created_at: datetime | None = None
    paths: list[str] = Field(default_factory=list)
    error: str | None = None

    @classmethod
    def of(cls, result: TaskResult) -> TaskSummary:
        return cls(
            task_id=result.task_id,
            status=result.status,
            model=result.model,
            prompt=result.prompt[:120],
            created_at=result.created_at,
            paths=[i.path for i in result.images if i.path],
            error=result.error,
        )


class TaskList(BaseModel):
    tasks: list[TaskSummary]
    page: int
    page_size: int
    total_local: int = Field(description="In this machine's ledger")
    total_api: int | None = Field(default=None, description="At the API")
    api_error: str | None = None


def combine(results: Sequence[TaskResult]) -> TaskResult:
    """One result for the tasks of one call: every image, every id; a failed task named with its error."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    statuses = {r.status for r in results}
    failed = [r for r in results if r.status == "failed"]
    if statuses <= {"success", "failed"}:
        status: Status = "failed" if statuses == {"failed"} else "success"
    else:
        status = "pending" if statuses <= {"pending", "failed"} else "running"
    problems = [f"{r.task_id}: {r.error}" for r in results if r.error]
    error = None
    if failed and status != "failed":
        error = f"{len(failed)} of {len(results)} tasks failed. " + " ".join(problems)
    elif problems:
        error = " ".join(problems)
    progress = [r.progress or 0.0 for r in results]
    next_step = None
    if status in ("pending", "running"):
        ids = ", ".join(f'"{r.task_id}"' for r in results if r.status in ("pending", "running"))
        next_step = (
            f"They keep running in the background; collect each with get_task(task_id=..., "
            f"wait_seconds={COLLECT_WAIT}) for {ids}. Do not generate again."
        )
    return first.model_copy(
        update={
            "task_ids": [r.task_id for r in results],
            "status": status,
            "progress": sum(progress) / len(progress),
            "images": [image for r in results for image in r.images],
            "error": error,
            "next_step": next_step,
        }
    )


def outcome(records: Sequence[TaskRecord], results: Sequence[TaskResult]) -> TaskResult:
    """The one result of a call's rows (as they stand now: a refusal is read off the row); when the API refused every
    create (nothing was made), the refusal is raised as the error the client raised for it."""
    pairs = list(zip(results, records, strict=True))
    refused = [record for r, record in pairs if r.status == "failed" and r.task_id == record.key]
    if len(refused) == len(results):
        raise refusal_of(refused[0])
    return combine(results)


def refusal_of(record: TaskRecord) -> MonetError:
    """The error a refused create raised, rebuilt from the row (its class, status code and code are kept on it)."""
    message = record.error or "The Monet API refused the request."
    refusal = record.create_log.refusal
    return refusal.error(message) if refusal is not None else MonetError(message)


@dataclass(frozen=True)
class CallState:
    """A call answered with a task (its :class:`Call`) and its rows as they stand: this process's working copies for
    the rows it works on (progress included), the ledger's for the others."""

    call: Call
    records: list[TaskRecord]

    @property
    def finished(self) -> bool:
        """Every row is finished: its images saved, or failed for good."""
        return all(r.finished for r in self.records)

    @property
    def updated_at(self) -> datetime:
        """When the call or one of its rows last changed."""
        moments = [self.call.created_at, *(r.updated_at for r in self.records)]
        if self.call.cancelled_at is not None:
            moments.append(self.call.cancelled_at)
        return max(moments)


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def result_of(record: TaskRecord, store: ImageStore, *, links: bool = True) -> TaskResult:
    """What an agent is told of a task of ours; ``links``: with a presigned link per image kept in a bucket (signing
    one costs ~0.2 ms: not done for what is not shown)."""
    status = record.status
    next_step = None
    if record.phase == "submitting":
        next_step = (
            f'The request is saved as "{record.key}" and is sent again with the same idempotency key until the '
            "API confirms it, so it is never charged twice. Do not generate again: call "
            f'get_task(task_id="{record.key}", wait_seconds={COLLECT_WAIT}) to collect it.'
        )
    elif status in ("pending", "running"):
        next_step = (
            f"It keeps running in the background and its images will be saved to {store.where}. "
            f'Call get_task(task_id="{record.handle}", wait_seconds={COLLECT_WAIT}) to collect it.'
        )
    images = []
    for index, image in enumerate(record.images):
        update: dict[str, object] = {"uri": image_uri(record.handle, index)}
        link = store.link(image.path) if links and image.path is not None else None
        if link is not None:
            update["url"], update["url_expires_at"] = link
        images.append(image.model_copy(update=update))
    return TaskResult(
        task_id=record.handle,
        task_ids=[record.handle],
        status=status,
        model=record.request.model,
        prompt=record.request.prompt,
        progress=100.0 if status == "success" else record.progress,
        images=images,
        error=record.error,
        output_dir=store.where,
        offline=record.offline,
        created_at=record.created_at,
        next_step=next_step,
        sets=list(record.request.sets),
    )


def foreign_result(task: Task, store: ImageStore, *, offline: bool) -> TaskResult:
    """What an agent is told of a task made elsewhere (on the same account): the API's word only, and its URLs."""
    status = status_at_api(task.status)
    model = next((o.model for o in task.outputs if o.model), None) or "unknown"
    created = None
    if task.created_at:
        with contextlib.suppress(ValueError):
            created = datetime.fromisoformat(task.created_at)
            created = created if created.tzinfo is not None else created.replace(tzinfo=UTC)
    return TaskResult(
        task_id=task.id,
        status=status,
        model=model,
        prompt="",
        progress=task.progress,
        images=[SavedImage(path=None, url=u) for u in task.urls],
        error=task.error_message() if status == "failed" else None,
        output_dir=store.where,
        offline=offline,
        created_at=created,
        next_step="Not created from this machine, so its images are not saved here; use the URLs.",
    )
