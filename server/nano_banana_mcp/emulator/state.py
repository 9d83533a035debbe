"""What the emulator holds: its tasks (and the status each has at a given moment), uploads, idempotency keys,
counters and the requests it answered, all in one :class:`State` that a reset replaces as a whole."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from nano_banana_mcp.emulator.render_cache import RenderCache
from nano_banana_mcp.emulator.validation import DEFAULT_MODEL
from nano_banana_mcp.emulator.wire import ApiError

__all__ = ["Endpoint", "RequestRecord", "State", "Task", "Upload"]

Endpoint = Literal["async", "sync"]
"""A create endpoint: ``POST /api/v1/tasks/async`` or ``POST /api/v1/tasks/sync``."""
_PENDING_SHARE = 0.1
"""Share of ``task_seconds`` a task spends ``pending`` before it starts ``processing``."""


@dataclass(slots=True)
class RequestRecord:
    """One request the emulator answered (``aborted`` when it broke the connection on purpose)."""

    method: str
    path: str
    status: int
    aborted: bool = False


@dataclass(slots=True)
class Task:
    """One task; its status is not stored but computed from the time since it was created."""

    id: str
    seq: int
    input: dict[str, Any]
    idempotency_key: str
    endpoint: Endpoint
    started: float
    """``time.monotonic()`` at creation; status is computed from it."""
    created_at: datetime
    duration: float
    fails: bool
    error_message: str | None = None
    """The failed task's error message, when a fault chose one."""

    @property
    def model(self) -> str:
        return str(self.input.get("model") or DEFAULT_MODEL)

    @property
    def finishes(self) -> float:
        return self.started + max(self.duration, 0.0)

    def state(self, now: float) -> tuple[str, int, float]:
        """Status, progress and seconds after creation of the last change, at ``now``."""
        elapsed = now - self.started
        if elapsed >= self.duration:
            return ("failed" if self.fails else "success"), 100, max(self.duration, 0.0)
        pending_for = self.duration * _PENDING_SHARE
        if elapsed < pending_for:
            return "pending", 0, 0.0
        progress = int(99 * (elapsed - pending_for) / (self.duration - pending_for))
        return "processing", min(max(progress, 0), 99), elapsed


@dataclass(slots=True)
class Upload:
    id: str
    filename: str
    content_type: str
    data: bytes
    created_at: datetime
    expires: float


@dataclass(slots=True)
class State:
    """Everything :meth:`Emulator.reset` forgets; replaced as a whole so a reset is one assignment."""

    tasks: dict[str, Task] = field(default_factory=dict)
    by_key: dict[str, dict[Endpoint, str]] = field(default_factory=dict)
    """Idempotency key -> the endpoint a task was created on with it -> task id."""
    key_endpoints: dict[str, set[Endpoint]] = field(default_factory=dict)
    """Idempotency key -> every create endpoint it was sent to, whatever the answer."""
    uploads: dict[str, Upload] = field(default_factory=dict)
    renders: RenderCache = field(default_factory=RenderCache)
    seq: Iterator[int] = field(default_factory=itertools.count)
    creates: int = 0
    """Tasks created, on either endpoint."""
    creates_by_endpoint: Counter[Endpoint] = field(default_factory=Counter)
    """Tasks created, by the endpoint that created them (``async`` or ``sync``)."""
    creates_by_key: Counter[str] = field(default_factory=Counter)
    """Tasks created, by the API key of the request that created them."""
    upload_count: int = 0
    """Files uploaded."""
    uploads_by_key: Counter[str] = field(default_factory=Counter)
    """Files uploaded, by the API key of the request."""
    downloads: int = 0
    """Output downloads answered whole and uncut (a 200, or a 206 running to the last byte)."""
    requests: list[RequestRecord] = field(default_factory=list)
    """Every request answered, in order (not the control endpoints')."""

    def find_task(self, task_id: str) -> Task:
        """The task ``task_id``; an API 404 if there is none."""
        task = self.tasks.get(task_id)
        if task is None:
            raise ApiError(404, "not_found", f"Task {task_id} not found")
        return task
