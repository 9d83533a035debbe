"""How the emulator's ``/tasks/sync`` events look: the page documents no event format, so the emulator plays each
plausible one (``../shared/monet-api.md``, "Create and stream"), chosen by :attr:`Faults.stream_format`."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["STREAM_FORMATS", "stream_event"]

STREAM_FORMATS = ("task", "progress_then_task", "envelope", "bare_status", "text")
"""1. each event's data is the task (the default);
2. bare progress (``{"progress": 40}``), the whole task only in the last event;
3. a typed envelope around the task (``{"type": "task.updated", "data": {...}}``);
4. progress, then a bare final status, never naming the task (``{"status": "success"}``);
5. not JSON at all (``progress 40%`` ... ``success``)."""


def stream_event(stream_format: str, task: dict[str, Any], *, terminal: bool) -> bytes:
    """One server-sent event telling ``task`` (as ``GET /tasks/{id}`` shows it) in ``stream_format``."""
    progress = task["outputs"][0]["progress"] if task.get("outputs") else 0
    name = "done" if terminal else "progress"
    if stream_format == "progress_then_task":
        return _event(name, task if terminal else {"progress": progress})
    if stream_format == "envelope":
        return _event(name, {"type": "task.completed" if terminal else "task.updated", "data": task})
    if stream_format == "bare_status":
        return _event(name, {"status": task["status"]} if terminal else {"progress": progress})
    if stream_format == "text":
        text = task["status"] if terminal else f"progress {progress:.0f}%"
        return f"event: {name}\ndata: {text}\n\n".encode()
    return _event(name, task)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
