"""What the server remembers about each task it created, behind one small interface.

``MemoryStore`` keeps it for the life of the process; a durable ledger implements the same
``TaskStore`` protocol.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from nano_banana_mcp.catalog import GenerateRequest

__all__ = ["MemoryStore", "Phase", "SavedImage", "TaskRecord", "TaskStore", "now"]

Phase = Literal["submitting", "created", "succeeded", "downloaded", "failed"]
"""Our side of a task's life: sent? created (task id known)? finished at the API? saved? failed?"""


def now() -> datetime:
    return datetime.now(UTC)


class SavedImage(BaseModel):
    """One output image: where it is on disk and where it came from."""

    path: str | None = Field(description="Absolute path of the saved file; null until it is downloaded.")
    url: str = Field(description="The image URL from the API (it may expire).")
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None


class TaskRecord(BaseModel):
    """One logical request, keyed by the idempotency key made before anything was sent."""

    key: str
    request: GenerateRequest
    phase: Phase = "submitting"
    task_id: str | None = None
    api_status: str | None = None
    progress: float | None = None
    images: list[SavedImage] = Field(default_factory=list)
    error: str | None = None
    offline: bool = False
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    @property
    def finished(self) -> bool:
        return self.phase in ("downloaded", "failed")


class TaskStore(Protocol):
    """Where task records live. Every method may be called concurrently from many tasks."""

    async def add(self, record: TaskRecord) -> None: ...

    async def save(self, record: TaskRecord) -> None: ...

    async def get(self, key: str) -> TaskRecord | None: ...

    async def by_task_id(self, task_id: str) -> TaskRecord | None: ...

    async def recent(self, limit: int, offset: int = 0) -> list[TaskRecord]: ...

    async def count(self) -> int: ...


class MemoryStore:
    """A ``TaskStore`` in a dict; records are copied in and out so callers cannot alias them."""

    def __init__(self) -> None:
        self._by_key: dict[str, TaskRecord] = {}
        self._by_task: dict[str, str] = {}

    async def add(self, record: TaskRecord) -> None:
        if record.key in self._by_key:
            raise ValueError(f"a task with key {record.key} already exists")
        await self.save(record)

    async def save(self, record: TaskRecord) -> None:
        stored = record.model_copy(deep=True, update={"updated_at": now()})
        self._by_key[record.key] = stored
        if stored.task_id:
            self._by_task[stored.task_id] = stored.key

    async def get(self, key: str) -> TaskRecord | None:
        record = self._by_key.get(key)
        return record.model_copy(deep=True) if record else None

    async def by_task_id(self, task_id: str) -> TaskRecord | None:
        key = self._by_task.get(task_id)
        return await self.get(key) if key else None

    async def recent(self, limit: int, offset: int = 0) -> list[TaskRecord]:
        ordered = sorted(self._by_key.values(), key=lambda r: r.created_at, reverse=True)
        return [r.model_copy(deep=True) for r in ordered[offset : offset + limit]]

    async def count(self) -> int:
        return len(self._by_key)
