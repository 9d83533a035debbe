"""What the server remembers about each task it created; :class:`nano_banana_mcp.ledger.Ledger` stores it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from nano_banana_mcp.catalog import GenerateRequest

__all__ = ["Phase", "SavedImage", "TaskRecord", "now"]

Phase = Literal["submitting", "created", "succeeded", "downloaded", "failed"]
"""Our side of a task's life: sent? created (task id known)? finished at the API? saved? failed?"""


def now() -> datetime:
    return datetime.now(UTC)


class SavedImage(BaseModel):
    path: str | None = Field(description="Absolute path on disk; null until saved")
    url: str = Field(description="API URL; may expire")
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
