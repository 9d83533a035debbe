"""What the endpoints and the faults all put on the wire: paths, statuses, JSON errors, SSE, broken connections."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

__all__ = [
    "API_PREFIX",
    "EXCEPTION_HANDLERS",
    "TERMINAL",
    "ApiError",
    "ConnectionAborted",
    "base_url",
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
_HTTP_CODES = {400: "VALIDATION_ERROR", 404: "not_found", 405: "method_not_allowed"}


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


def base_url(request: Request, served_at: str | None) -> str:
    """The URL the emulator's files are linked under: where it is served (``served_at``), else the request's own."""
    return served_at or str(request.base_url).rstrip("/")


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


def _api_error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error(exc.status, exc.code, str(exc))


def _http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"No such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), message, exc.headers)


EXCEPTION_HANDLERS = {ApiError: _api_error_response, HTTPException: _http_error_response}
"""Starlette exception handlers: an :class:`ApiError`, an unknown path or a wrong method answers a JSON error."""
