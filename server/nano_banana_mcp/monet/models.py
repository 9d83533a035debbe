"""The Monet API's objects as this client reads them: lenient models and the documented constants."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nano_banana_mcp.catalog import GenerateRequest

__all__ = [
    "API_PREFIX",
    "TERMINAL_STATUSES",
    "Task",
    "TaskOutput",
    "TaskPage",
    "UploadedFile",
    "create_body",
    "error_text",
]

API_PREFIX = "/api/v1"
"""Every endpoint lives under this path (documented)."""
TERMINAL_STATUSES = frozenset({"success", "failed"})
"""A task in one of these is over (documented); any other status, known or not, is still in progress."""
MAX_MESSAGE = 500
"""Longest error text taken from an answer."""


class _Lenient(BaseModel):
    """API objects: unknown fields are kept, so a newer API does not break us."""

    model_config = ConfigDict(extra="allow")


class TaskOutput(_Lenient):
    model: str | None = None
    status: str | None = None
    progress: float | None = None
    url: str | None = None
    error: Any = None


class Task(_Lenient):
    id: str
    status: str = "pending"
    type: str | None = None
    outputs: list[TaskOutput] = Field(default_factory=list)
    error: Any = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def progress(self) -> float | None:
        """Mean progress of the outputs in percent, if the API reported any."""
        if self.status == "success":
            return 100.0
        values = [o.progress for o in self.outputs if o.progress is not None]
        return sum(values) / len(values) if values else None

    @property
    def urls(self) -> list[str]:
        return [o.url for o in self.outputs if o.url]

    def error_message(self) -> str | None:
        """The failure reason, from the task or its outputs, as plain text."""
        for err in (self.error, *(o.error for o in self.outputs)):
            if text := error_text(err):
                return text
        return None


class TaskPage(_Lenient):
    tasks: list[Task] = Field(default_factory=list)
    page: int = 1
    page_size: int = Field(default=20, alias="pageSize")
    total: int = 0


class UploadedFile(_Lenient):
    id: str | None = None
    url: str
    filename: str | None = None
    size: int | None = None
    content_type: str | None = None
    created_at: str | None = None


def error_text(err: Any, depth: int = 0) -> str | None:
    """An error value of any documented or guessed shape (string, ``{code, message}``, nested) as one line."""
    if err is None or err == "":
        return None
    if isinstance(err, str):
        return err[:MAX_MESSAGE]
    if isinstance(err, dict) and depth < 4:
        message = err.get("message") or err.get("detail") or err.get("error")
        code = err.get("code")
        if isinstance(message, dict | list):
            message = error_text(message, depth + 1)
        if message and code:
            return f"{code}: {message}"[:MAX_MESSAGE]
        if message or code:
            return str(message or code)[:MAX_MESSAGE]
    try:
        return json.dumps(err, default=str)[:MAX_MESSAGE]
    except (ValueError, RecursionError):  # a circular or absurdly deep value: say so rather than crash
        return "an error the API described in an unreadable form"


def create_body(request: GenerateRequest, idempotency_key: str) -> dict[str, Any]:
    """The JSON body of both create endpoints (documented)."""
    return {"type": "image", "input": request.api_input(), "idempotency_key": idempotency_key}
