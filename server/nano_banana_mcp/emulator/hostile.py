"""The answers of the ``hostile`` fault: which requests each kind applies to, what it sends, and the bodies and
streams that carry it.

:class:`~nano_banana_mcp.emulator.faults.FaultInjector` decides when a hostile answer is sent and counts it; each
function here builds the answer of one kind. Bodies that are huge or never end go through the injector's
``streaming`` gauge 64 KB at a time, never held whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from nano_banana_mcp.emulator.wire import sse, sse_response

__all__ = [
    "HOSTILE_API",
    "HOSTILE_CREATE",
    "HOSTILE_DOWNLOAD",
    "HOSTILE_KINDS",
    "HOSTILE_STREAM",
    "Streaming",
    "api_answer",
    "create_answer",
    "download_answer",
    "stream_answer",
]

HOSTILE_API = ("malformed_json", "missing_fields", "wrong_types", "huge_body", "html_error")
"""Hostile kinds for the JSON endpoints: create async, get task, list, upload."""
HOSTILE_STREAM = ("endless_stream", "garbage_stream", "huge_event")
"""Hostile kinds for the SSE stream of ``POST /api/v1/tasks/sync``."""
HOSTILE_CREATE = ("bad_gzip", "redirect_data_url", "nested_error")
"""Hostile kinds for both create endpoints, sent after the task is made: a body that claims gzip but is not,
a redirect to a ``data:`` URL, and an error body nested too deep for a JSON parser."""
HOSTILE_DOWNLOAD = (
    "not_image",
    "endless_download",
    "redirect_offsite",
    "redirect_loopback",
    "redirect_loop",
    "redirect_data",
)
"""Hostile kinds for ``GET /files/outputs/...`` (``redirect_data``: a 302 to a ``data:`` URL of a PNG)."""
HOSTILE_KINDS = HOSTILE_API + HOSTILE_STREAM + HOSTILE_CREATE + HOSTILE_DOWNLOAD
"""The values of :attr:`Faults.hostile_kind`; each applies only to the requests named above."""

Streaming = Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]
"""Wraps a hostile body's chunks while they flow (the injector counts them in ``hostile_streams``)."""


def api_answer(kind: str, shape: str, streaming: Streaming) -> Response:
    """The answer of a kind in :data:`HOSTILE_API` to a JSON endpoint (``shape``: task, list or upload)."""
    if kind == "malformed_json":
        return Response(b'{"id": "task_', media_type="application/json")
    if kind == "missing_fields":
        return JSONResponse(_MISSING_FIELDS[shape])
    if kind == "wrong_types":
        return JSONResponse(_WRONG_TYPES[shape])
    if kind == "huge_body":
        return StreamingResponse(streaming(_huge_body()), media_type="application/json")
    return Response(_BAD_GATEWAY_HTML, status_code=502, media_type="text/html")


def create_answer(kind: str) -> Response:
    """The answer of a kind in :data:`HOSTILE_CREATE` to a create whose task is already made."""
    if kind == "bad_gzip":
        return Response(
            b'{"id": "plain, not gzip"}', media_type="application/json", headers={"Content-Encoding": "gzip"}
        )
    if kind == "redirect_data_url":
        return Response(status_code=302, headers={"Location": "data:text/plain;base64,Z290Y2hh"})
    # nested_error: an error body nested deeper than a JSON parser goes
    depth = 100_000
    body = b'{"error":' * depth + b"1" + b"}" * depth
    return Response(body, status_code=500, media_type="application/json")


def stream_answer(
    kind: str, *, task_id: str, model: str, created_at: str, interval: float, streaming: Streaming
) -> Response:
    """The answer of a kind in :data:`HOSTILE_STREAM` to a sync create (``interval``: of the endless events)."""
    if kind == "endless_stream":
        return sse_response(streaming(_endless_events(task_id, model, created_at, interval)))
    if kind == "garbage_stream":
        return sse_response(streaming(_garbage_events()))
    return sse_response(streaming(_huge_event(task_id)))


def download_answer(kind: str, request: Request, base: str, streaming: Streaming) -> Response:
    """The answer of a kind in :data:`HOSTILE_DOWNLOAD` to an output download (``base``: this emulator's URL)."""
    if kind == "not_image":
        return Response(_NOT_IMAGE_HTML, media_type="image/png")
    if kind == "endless_download":
        return StreamingResponse(streaming(_endless_png()), media_type="image/png")
    if kind == "redirect_offsite":
        location = _OFFSITE_URL
    elif kind == "redirect_data":
        location = "data:image/png;base64,iVBORw0KGgo="
    elif kind == "redirect_loopback":
        task_id, name = request.path_params["task_id"], request.path_params["name"]
        location = f"{base}/files/mirror/outputs/{task_id}/{name}"
    else:  # redirect_loop: this very URL again
        query = request.url.query
        location = f"{base}{request.url.path}{'?' + query if query else ''}"
    return Response(status_code=302, headers={"Location": location})


# --- payloads --------------------------------------------------------------------------------------

_HOSTILE_CHUNK = 64 * 1024
_HUGE_BODY_BYTES = 64 * 1024 * 1024
_HUGE_EVENT_BYTES = 16 * 1024 * 1024
_OFFSITE_URL = "https://evil.example.invalid/steal.png"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MISSING_FIELDS: dict[str, dict[str, Any]] = {"task": {}, "list": {"page": 1}, "upload": {"id": "file_x"}}
_WRONG_TYPES: dict[str, dict[str, Any]] = {
    "task": {"id": 12345, "status": ["success"], "outputs": "nope", "created_at": 7},
    "list": {"tasks": "many", "total": "lots"},
    "upload": {"url": 42},
}
_BAD_GATEWAY_HTML = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>"
    b"<p>The proxy server received an invalid response from an upstream server.</p><hr>"
    b"<address>nginx (emulated)</address></body></html>"
)
_NOT_IMAGE_HTML = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Please sign in</h1>"
    b"<p>This HTML page is served as image/png by the emulator's not_image fault.</p></body></html>"
)
_GARBAGE_DATA = (
    b"this is not JSON",
    b'{"id": "task_',
    b"[1, 2, 3]",
    b'["success"]',
    b'{"status": "processing", "outputs": [{"progress": 50}]}',
    b'{"progress": 60}',
)


async def _padded(head: bytes, tail: bytes, total: int) -> AsyncIterator[bytes]:
    """``head``, then ``x`` up to ``total`` bytes in all, then ``tail``: 64 KB at a time, never all at once."""
    pad = b"x" * _HOSTILE_CHUNK
    yield head
    left = total - len(head) - len(tail)
    while left > 0:
        yield pad if left >= len(pad) else pad[:left]
        left -= len(pad)
    yield tail


def _huge_body() -> AsyncIterator[bytes]:
    """A valid JSON object of 64 MiB."""
    return _padded(b'{"id":"task_x","pad":"', b'"}', _HUGE_BODY_BYTES)


def _huge_event(task_id: str) -> AsyncIterator[bytes]:
    """An event line, then one ``data:`` line of 16 MiB that never ends in a newline."""
    event = b"event: progress\n"
    data = f'data: {{"id":"{task_id}","status":"processing","pad":"'.encode()
    return _padded(event + data, b'"}', len(event) + _HUGE_EVENT_BYTES)


async def _garbage_events() -> AsyncIterator[bytes]:
    """Events whose data is not JSON, a JSON array, or an object without an id; then the end, untimely."""
    for data in _GARBAGE_DATA:
        yield b"event: progress\ndata: " + data + b"\n\n"


async def _endless_events(task_id: str, model: str, created_at: str, interval: float) -> AsyncIterator[bytes]:
    """A ``progress`` event stuck at 50% every ``interval`` seconds, until the client goes away."""
    output = {"model": model, "status": "processing", "progress": 50}
    body = {"id": task_id, "status": "processing", "type": "image", "outputs": [output], "created_at": created_at}
    event = sse("progress", body | {"updated_at": created_at})
    while True:
        yield event
        await anyio.sleep(interval)


async def _endless_png() -> AsyncIterator[bytes]:
    """A PNG signature, then zeros, 64 KB at a time, forever."""
    yield _PNG_SIGNATURE + bytes(_HOSTILE_CHUNK - len(_PNG_SIGNATURE))
    zeros = bytes(_HOSTILE_CHUNK)
    while True:
        yield zeros
