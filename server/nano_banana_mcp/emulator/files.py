"""The file endpoints: uploads (``POST /api/v1/files``, kept ``upload_ttl`` seconds), the files they are served
under, and task outputs, each with an ``ETag`` and single byte ranges (RFC 9110 §14.2) for resumed downloads."""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nano_banana_mcp.emulator.gate import caller_key
from nano_banana_mcp.emulator.state import Task, Upload
from nano_banana_mcp.emulator.wire import API_PREFIX, ApiError, base_url, error, invalid, iso

if TYPE_CHECKING:
    from nano_banana_mcp.emulator.app import Emulator
    from nano_banana_mcp.emulator.faults import FaultInjector

__all__ = ["MAX_UPLOAD_BYTES", "FileEndpoints"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
_RANGE = re.compile(r"bytes=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


class FileEndpoints:
    """``POST /api/v1/files``, ``GET /files/uploads/...``, ``GET /files/outputs/...`` and the outputs' mirror path
    (where the ``redirect_loopback`` fault sends a client) of an emulator."""

    def __init__(self, emulator: Emulator, faults: FaultInjector) -> None:
        self._emulator = emulator
        self._faults = faults

    def routes(self) -> list[Route]:
        return [
            Route(f"{API_PREFIX}/files", self._upload, methods=["POST"]),
            Route("/files/outputs/{task_id}/{name}", self._download_output, methods=["GET"]),
            Route("/files/mirror/outputs/{task_id}/{name}", self._download_mirror, methods=["GET"]),
            Route("/files/uploads/{file_id}/{name}", self._download_upload, methods=["GET"]),
        ]

    async def _upload(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise invalid("Send the file as multipart/form-data in a field named 'file'.")
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise invalid("No file in the upload: send it as multipart/form-data in a field named 'file'.")
            data = await upload.read()
            filename = (upload.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1] or "upload"
            content_type = upload.content_type or "application/octet-stream"
        if len(data) > MAX_UPLOAD_BYTES:
            raise ApiError(
                413,
                "payload_too_large",
                f"The file is {len(data) / 1024 / 1024:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 1024 // 1024} MB.",
            )
        item = Upload(
            id=f"file_{secrets.token_hex(8)}",
            filename=filename,
            content_type=content_type,
            data=data,
            created_at=datetime.now(UTC),
            expires=time.monotonic() + self._emulator.upload_ttl,
        )
        state = self._emulator.state
        state.uploads[item.id] = item
        state.upload_count += 1
        state.uploads_by_key[caller_key(request)] += 1
        return self._faults.api_answer(
            request,
            "upload",
            {
                "id": item.id,
                "url": f"{base_url(request, self._emulator.base_url)}/files/uploads/{item.id}/{quote(filename)}",
                "filename": filename,
                "size": len(data),
                "content_type": content_type,
                "created_at": iso(item.created_at),
            },
        )

    async def _download_upload(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        item = self._emulator.state.uploads.get(file_id)
        if item is None or time.monotonic() >= item.expires:
            raise ApiError(
                404,
                "not_found",
                f"File {file_id} not found: uploaded files are kept 24 hours; upload it again.",
            )
        return self._file_response(request, item.data, item.content_type)

    async def _download_output(self, request: Request) -> Response:
        task = self._finished_output(request)
        hostile = self._faults.hostile_download(request, base_url(request, self._emulator.base_url))
        if hostile is not None:
            return hostile
        return self._file_response(request, await self._output(task), "image/png", output=True)

    async def _download_mirror(self, request: Request) -> Response:
        """The same output under another path: where ``redirect_loopback`` sends a client; never hostile."""
        task = self._finished_output(request)
        return self._file_response(request, await self._output(task), "image/png", output=True)

    async def _output(self, task: Task) -> bytes:
        """The task's output file: its rendered PNG, or the bytes of the ``output_bytes`` fault."""
        served = self._faults.output_file()
        return served if served is not None else await self._emulator.state.renders.png(task)

    def _finished_output(self, request: Request) -> Task:
        task = self._emulator.state.find_task(request.path_params["task_id"])
        status, _, _ = task.state(time.monotonic())
        if request.path_params["name"] != "0.png" or status != "success":
            raise ApiError(404, "not_found", f"Task {task.id} has no output {request.path_params['name']}.")
        return task

    def _file_response(self, request: Request, data: bytes, media_type: str, *, output: bool = False) -> Response:
        """The file, or the one byte range asked for (206); ``ETag`` and ``Accept-Ranges`` always."""
        total = len(data)
        etag = f'"{hashlib.sha256(data).hexdigest()[:32]}"'
        headers = {"Accept-Ranges": "bytes", "ETag": etag}
        span: tuple[int, int] | None = None
        asked = request.headers.get("range")
        # Range applies to GET only; an If-Range naming another version asks for the whole file.
        if asked is not None and request.method == "GET" and request.headers.get("if-range", etag) == etag:
            try:
                span = _byte_range(asked, total)
            except _RangeNotSatisfiable:
                return error(
                    416,
                    "range_not_satisfiable",
                    f"Range {asked!r} is outside the file, which has {total} bytes.",
                    headers={**headers, "Content-Range": f"bytes */{total}"},
                )
        status, body = 200, data
        if span is not None:
            start, end = span
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        cut = self._faults.cut_download(body, status, headers, media_type)
        if cut is not None:
            return cut
        if output and request.method == "GET" and (span is None or span[1] == total - 1):
            self._emulator.state.downloads += 1  # counted before it is sent, so a client never races the counter
        return Response(body, status_code=status, headers=headers, media_type=media_type)


class _RangeNotSatisfiable(Exception):
    """The Range header asks for bytes the file does not have."""


def _byte_range(header: str, total: int) -> tuple[int, int] | None:
    """The inclusive span a single ``bytes=`` range asks for; None to ignore the header (RFC 9110 §14.2).

    ``START-``, ``START-END`` (END clamped to the file) and ``-SUFFIX``; several ranges or a malformed or
    backwards one are ignored (the whole file is sent). Raises :class:`_RangeNotSatisfiable`.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        if not last:
            return None
        if int(last) == 0 or total == 0:
            raise _RangeNotSatisfiable
        return max(total - int(last), 0), total - 1
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= total:
        raise _RangeNotSatisfiable
    return start, min(int(last), total - 1) if last else total - 1
