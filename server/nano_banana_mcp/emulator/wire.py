"""What the contract and the faults both put on the wire: paths, statuses, JSON errors, SSE, broken connections."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from starlette.responses import JSONResponse, StreamingResponse

__all__ = [
    "API_PREFIX",
    "TERMINAL",
    "ApiError",
    "ConnectionAborted",
    "error",
    "invalid",
    "is_abort",
    "iso",
    "sse",
    "sse_response",
]

API_PREFIX = "/api/v1"
TERMINAL = frozenset({"success", "failed"})
"""The statuses after which a task never changes."""


class ApiError(Exception):
    """Answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ConnectionAborted(Exception):
    """Raised after a response has started so that uvicorn drops the connection."""


def is_abort(exc: BaseException | None) -> bool:
    """True for a :class:`ConnectionAborted`, or a group made only of them."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_abort(e) for e in exc.exceptions)
    return isinstance(exc, ConnectionAborted)


def invalid(message: str) -> ApiError:
    """A 400 ``VALIDATION_ERROR``."""
    return ApiError(400, "VALIDATION_ERROR", message)


def error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sse(event: str, data: Mapping[str, Any]) -> bytes:
    """One server-sent event whose ``data`` is compact JSON."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
