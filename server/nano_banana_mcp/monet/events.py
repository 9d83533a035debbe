"""Reading ``/tasks/sync`` events whatever their shape: the page documents none.

An event may be the task itself (whole or partial), a typed envelope around it, bare progress, a bare status, or not
JSON at all (``../shared/monet-api.md`` lists the readings this handles). Each event is read as leniently as it can be:

- a **task** is any object with an ``id`` and a ``status`` (strings), wherever it sits in the event (at the top, or
  nested in an envelope such as ``{"type": "task.updated", "data": {...}}``); once a task is named, a later partial
  event (``{"progress": 40}``) is merged onto it;
- output URLs are taken where they appear (the task's ``outputs``, or an ``outputs``/``urls``/``url`` beside it);
- anything else says at most a status and a progress (JSON fields, or words and a percentage in plain text), and
  never names the task: the runner then finds the task through the documented reads (``GET /tasks/list``).
"""

from __future__ import annotations

import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from nano_banana_mcp.monet.models import Task

__all__ = ["StreamEvent", "read_event"]

_MAX_DEPTH = 4  # how deep into an envelope a task is looked for
_MAX_NODES = 256  # objects visited per event: a hostile event cannot make this slow
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")
_SUCCESS_WORDS = re.compile(r"\b(success|succeeded|completed?|done|finished)\b", re.IGNORECASE)
_FAILURE_WORDS = re.compile(r"\b(fail|failed|failure|error)\b", re.IGNORECASE)
_TERMINAL_ALIASES = {"success": "success", "succeeded": "success", "completed": "success", "failed": "failed"}


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What one event said: the task when it names one (merged onto the last), else a bare status and progress."""

    task: Task | None = None
    status: str | None = None
    progress: float | None = None

    @property
    def finished(self) -> bool:
        """The event says the task is over (a terminal status), named or not."""
        if self.task is not None:
            return self.task.is_terminal
        return _TERMINAL_ALIASES.get((self.status or "").lower()) is not None

    @property
    def signature(self) -> tuple[object, ...]:
        """What a stall check compares: an event that changes nothing here reports no progress."""
        if self.task is not None:
            return (self.task.id, self.task.status, self.task.progress, len(self.task.urls))
        return (self.status, self.progress)


def read_event(data: str, last: Task | None) -> StreamEvent | None:
    """One event's ``data`` read as leniently as possible; None when it says nothing (blank, or no field we know)."""
    if not data.strip():
        return None
    try:
        payload = json.loads(data)
    except (json.JSONDecodeError, RecursionError):
        return _text_event(data)
    if not isinstance(payload, dict):
        return _text_event(payload) if isinstance(payload, str) else None
    found = _find(payload, _is_task)
    if found is not None:
        task = _task(found, payload, last)
        if task is not None:
            return StreamEvent(task=task)
    partial = _find(payload, _is_signal)
    if partial is None:
        return None
    if last is not None:  # a partial event about the task already named
        task = _task({**last.model_dump(by_alias=True), **partial}, payload, None)
        return StreamEvent(task=task) if task is not None else None
    return StreamEvent(status=_str(partial.get("status")), progress=_number(partial.get("progress")))


def _text_event(text: str) -> StreamEvent | None:
    """A plain-text event: a percentage is progress; a word of success or failure is the end."""
    status = None
    if _FAILURE_WORDS.search(text):
        status = "failed"
    elif _SUCCESS_WORDS.search(text):
        status = "success"
    match = _PERCENT.search(text)
    progress = float(match.group(1)) if match and float(match.group(1)) <= 100 else None
    if status is None and progress is None:
        return None
    return StreamEvent(status=status, progress=progress)


def _is_task(node: dict[str, Any]) -> bool:
    return isinstance(node.get("id"), str | int) and isinstance(node.get("status"), str)


def _is_signal(node: dict[str, Any]) -> bool:
    return any(k in node for k in ("status", "progress", "outputs"))


def _find(root: dict[str, Any], wanted: Any) -> dict[str, Any] | None:
    """The shallowest object in ``root`` (itself included) that ``wanted`` accepts, breadth first."""
    queue: deque[tuple[Any, int]] = deque([(root, 0)])
    visited = 0
    while queue and visited < _MAX_NODES:
        node, depth = queue.popleft()
        visited += 1
        if isinstance(node, dict):
            if wanted(node):
                return node
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth < _MAX_DEPTH:
            queue.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return None


def _task(found: dict[str, Any], payload: dict[str, Any], last: Task | None) -> Task | None:
    """``found`` as a task: merged onto ``last`` when it is the same one, outputs taken from beside it if need be."""
    fields = dict(found)
    fields["id"] = str(fields["id"])
    if last is not None and last.id == fields["id"]:
        fields = last.model_dump(by_alias=True) | fields
    if not fields.get("outputs") and (urls := _urls(payload)):
        fields["outputs"] = [{"url": url} for url in urls]
    try:
        return Task.model_validate(fields)
    except ValidationError:
        return None


def _urls(payload: dict[str, Any]) -> list[str]:
    """Output URLs anywhere in the event: an ``outputs`` list of objects, a ``urls`` list, or a ``url``."""
    outputs = _find(payload, lambda n: isinstance(n.get("outputs"), list) and bool(n["outputs"]))
    if outputs is not None:
        urls = [o.get("url") for o in outputs["outputs"] if isinstance(o, dict)]
        return [u for u in urls if isinstance(u, str) and u]
    urls_node = _find(payload, lambda n: isinstance(n.get("urls"), list))
    if urls_node is not None:
        return [u for u in urls_node["urls"] if isinstance(u, str) and u]
    url_node = _find(payload, lambda n: isinstance(n.get("url"), str) and n["url"].startswith("http"))
    return [url_node["url"]] if url_node is not None else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value <= 100 else None
