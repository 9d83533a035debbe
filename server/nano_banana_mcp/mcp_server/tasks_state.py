"""What an MCP task says about itself: ``statusMessage``, ``pollIntervalMs``, ``ttlMs``, the ids, and the task object
(``DetailedTask``) that ``tasks/get`` answers and ``notifications/tasks`` carries, for a task still working or
cancelled. The rules are those of :mod:`nano_banana_mcp.mcp_server.tasks_extension`'s docstring; the completed task
(the plain call's result) is built there, where the request is at hand.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

from mcp.server.context import ServerRequestContext
from mcp_types import RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from nano_banana_mcp.tasks import CallState, Service, TaskRecord

__all__ = [
    "EXTENSION_ID",
    "INLINE_SECONDS",
    "MAX_ID_LENGTH",
    "NOT_FOUND",
    "TOOL",
    "TTL_MS",
    "VERSIONS",
    "TaskParams",
    "UpdateParams",
    "declares_tasks",
    "extensions_declare_tasks",
    "open_task",
    "poll_interval_ms",
    "task_times",
    "working_message",
]

EXTENSION_ID = "io.modelcontextprotocol/tasks"
TOOL = "generate_image"
"""The one tool answered with a task: the only one that waits for the API."""
INLINE_SECONDS = 1.0
"""How long a call that may become a task waits for its images before it does (then: the plain result)."""
TTL_MS: int | None = None
"""Tasks are never purged (see the module docstring of ``tasks_extension``)."""
POLL_NEAR_END_MS, POLL_GENERATING_MS, POLL_QUEUED_MS, POLL_TROUBLE_MS = 1000, 2000, 3000, 5000
NEAR_END_PROGRESS = 50.0
NOT_FOUND = (
    "Failed to retrieve task: Task not found. No task with this id is yours on this server; use the taskId that "
    "tools/call answered."
)
VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS)
"""The protocol versions the extension is served at (2026-07-28)."""
MAX_ID_LENGTH = 200
"""A longer task id is nobody's: it is answered as unknown without a ledger read."""


class TaskParams(RequestParams):
    """``tasks/get`` and ``tasks/cancel``."""

    task_id: str


class UpdateParams(TaskParams):
    """``tasks/update``: responses to input requests, which this server never makes."""

    input_responses: dict[str, Any] | None = None


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """The request is of the 2026 protocol and declares the extension in its own capabilities."""
    if ctx.protocol_version not in VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return extensions_declare_tasks(capabilities.extensions if capabilities else None)


def extensions_declare_tasks(extensions: Mapping[str, Any] | None) -> bool:
    """The client capabilities' ``extensions`` name this extension."""
    return bool(extensions) and EXTENSION_ID in cast("Mapping[str, Any]", extensions)


def poll_interval_ms(records: Sequence[TaskRecord]) -> int:
    """The rule of the module docstring: the shortest interval any unfinished row asks for."""
    intervals = [_row_interval(r) for r in records if not r.finished]
    return min(intervals, default=POLL_NEAR_END_MS)


def _row_interval(record: TaskRecord) -> int:
    if record.error:
        return POLL_TROUBLE_MS
    if record.phase == "succeeded" or (record.progress or 0.0) >= NEAR_END_PROGRESS:
        return POLL_NEAR_END_MS
    if record.status == "pending":
        return POLL_QUEUED_MS
    return POLL_GENERATING_MS


def working_message(records: Sequence[TaskRecord]) -> str:
    """What a person reads of an unfinished call: the model, progress, what it waits on, a problem being retried."""
    model = records[0].request.model
    if len(records) == 1:
        text = _row_message(records[0])
    else:
        finished = sum(r.finished for r in records)
        mean = sum(100.0 if r.finished else r.progress or 0.0 for r in records) / len(records)
        text = (
            f"{len(records)} images with {model}: {finished} of {len(records)} finished, {mean:.0f}% in all; waiting "
            "for the Monet API."
        )
    problem = next((r.error for r in records if r.error and not r.finished), None)
    return f"{text} Retrying after a problem: {problem}" if problem else text


def _row_message(record: TaskRecord) -> str:
    model = record.request.model
    if record.phase == "submitting":
        return f"Sending the request to the Monet API ({model}); waiting for it to accept."
    if record.phase == "succeeded":
        return f"{model} made the image; saving it."
    if record.status == "pending":
        return f"Queued at the Monet API ({model}); waiting for it to start."
    return f"Generating with {model}: {record.progress or 0.0:.0f}%; waiting for the Monet API to finish."


@functools.lru_cache(maxsize=4096)  # a task's times are read again at every poll; formatting them is not free
def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def task_times(state: CallState) -> dict[str, Any]:
    """The fields every state of a task carries: its id, when it was made and last changed, how long it is kept."""
    return {
        "taskId": state.call.id,
        "createdAt": _iso(state.call.created_at),
        "lastUpdatedAt": _iso(state.updated_at),
        "ttlMs": TTL_MS,
    }


def open_task(state: CallState, service: Service) -> dict[str, Any] | None:
    """The task as ``tasks/get`` gives it (a ``DetailedTask``) while it is working or once cancelled; None once
    completed (its result is the plain call's: ``BackgroundTasks`` builds it, with the request at hand)."""
    if state.call.cancelled_at is not None:
        return task_times(state) | {"status": "cancelled", "statusMessage": _cancelled_message(state, service)}
    if state.finished:
        return None
    return task_times(state) | {
        "status": "working",
        "statusMessage": working_message(state.records),
        "pollIntervalMs": poll_interval_ms(state.records),
    }


def _cancelled_message(state: CallState, service: Service) -> str:
    handles = ", ".join(r.handle for r in state.records)
    images = "its image is" if len(state.records) == 1 else "its images are"
    return (
        f"Cancelled. The Monet API cannot stop a task, so {images} still made and paid for: saved to "
        f"{service.where} and listed by list_tasks and get_task ({handles})."
    )
