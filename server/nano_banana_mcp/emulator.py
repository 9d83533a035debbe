"""A Monet-compatible API server for offline use and for every test.

It serves the contract of ``shared/monet-api.md`` on 127.0.0.1: tasks whose status advances with
time, idempotent creates, an SSE stream, pagination, uploads that expire, real PNG placeholders of
the requested size, and switchable :class:`Faults` (latency, 429, 5xx, refused or failed tasks,
connections that break mid-answer, and hostile answers: see :data:`HOSTILE_KINDS`). Every image it
makes says, in its pixels and in its PNG metadata, that it is an offline placeholder, so no agent
mistakes it for a generated image.

Nothing here writes to stdout: in offline mode stdout is the MCP stdio transport.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import itertools
import json
import logging
import math
import random
import re
import secrets
import socket
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import anyio.lowlevel
import uvicorn
from PIL import Image, ImageDraw, ImageFont, ImageOps, PngImagePlugin
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nano_banana_mcp import catalog
from nano_banana_mcp.errors import InvalidRequest

__all__ = [
    "CHAOS_KINDS",
    "CONTROL_PREFIX",
    "HOSTILE_KINDS",
    "MAX_UPLOAD_BYTES",
    "PLACEHOLDER_DESCRIPTION",
    "PLACEHOLDER_TITLE",
    "Emulator",
    "Faults",
    "RequestRecord",
    "output_size",
    "serve",
    "serve_in_thread",
]

API_PREFIX = "/api/v1"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
PLACEHOLDER_TITLE = "OFFLINE PLACEHOLDER — nano-banana emulator"
PLACEHOLDER_DESCRIPTION = "Offline placeholder from the nano-banana-mcp emulator; not a generated image."

_LONG_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}
_INPUT_FIELDS = ("model", "prompt", "images", "aspect_ratio", "resolution")
_TERMINAL = frozenset({"success", "failed"})
_PENDING_SHARE = 0.1
"""Share of ``task_seconds`` a task spends ``pending`` before it starts ``processing``."""
_MIN_STREAM_TICK = 0.001
_GRACEFUL_SHUTDOWN_SECONDS = 2.0
CONTROL_PREFIX = "/_emulator"
"""Path prefix of the control endpoints (served only by ``Emulator(control=True)``)."""
CHAOS_KINDS = ("rate_limit", "server_error", "lost_create", "dropped_stream", "cut_download")
"""The faults chaos mode picks from (never a failed task: that is a legitimate result, not a fault)."""
_CHAOS_SCOPE_KEY = "nano_banana.chaos"
"""Where the gate leaves a chaos fault that only the handler can apply (``lost_create``, ``dropped_stream``)."""
_HOSTILE_API = ("malformed_json", "missing_fields", "wrong_types", "huge_body", "html_error")
"""Hostile kinds for the JSON endpoints: create async, get task, list, upload."""
_HOSTILE_STREAM = ("endless_stream", "garbage_stream", "huge_event")
"""Hostile kinds for the SSE stream of ``POST /api/v1/tasks/sync``."""
_HOSTILE_DOWNLOAD = ("not_image", "endless_download", "redirect_offsite", "redirect_loopback", "redirect_loop")
"""Hostile kinds for ``GET /files/outputs/...``."""
HOSTILE_KINDS = _HOSTILE_API + _HOSTILE_STREAM + _HOSTILE_DOWNLOAD
"""The values of :attr:`Faults.hostile_kind`; each applies only to the requests named above."""
_HOSTILE_CHUNK = 64 * 1024
_HUGE_BODY_BYTES = 64 * 1024 * 1024
_HUGE_EVENT_BYTES = 16 * 1024 * 1024
_OFFSITE_URL = "https://evil.example.invalid/steal.png"
_RANGE = re.compile(r"bytes=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)

logger = logging.getLogger(__name__)


@dataclass
class Faults:
    """Switchable misbehaviour; each counter is consumed (decremented) as it fires."""

    latency: float = 0.0
    """Seconds added before every ``/api/v1`` response."""
    rate_limit: int = 0
    """The next N ``/api/v1`` requests answer 429 with ``Retry-After``."""
    retry_after: float = 0.05
    """The ``Retry-After`` value of those 429s, in (possibly fractional) seconds."""
    server_errors: int = 0
    """The next N ``/api/v1`` requests answer 503."""
    lose_create_responses: int = 0
    """The next N create requests (async or sync, new or replayed) make the task, then break the connection."""
    drop_streams: int = 0
    """The next N SSE streams send their first event, then break the connection."""
    fail_tasks: int = 0
    """The next N newly created tasks end ``failed``."""
    refuse_creates: int = 0
    """The next N creates of a new task answer 400 VALIDATION_ERROR although the request is valid."""
    cut_downloads: int = 0
    """The next N file downloads send half the body (or half the requested range), then break the connection."""
    chaos: float = 0.0
    """Probability (0..1) that any one request gets a random fault of a kind that applies to it (see
    :data:`CHAOS_KINDS`): any ``/api/v1`` request 429 or 503, a create also a lost response, a sync create
    also a dropped stream, a file download a cut download. Counting faults above fire first."""
    chaos_seed: int | None = None
    """Seed of the chaos dice, for a reproducible run; applied by :meth:`Emulator.set_chaos`, by
    ``POST /_emulator/faults`` and by :meth:`Emulator.reset`."""
    hostile: int = 0
    """The next N responses to which ``hostile_kind`` applies are hostile (see :data:`HOSTILE_KINDS`).
    The request is handled first (a create makes its task, an upload is stored) and only a successful
    answer is replaced; refusals by the gate (auth, 429, 503, chaos), errors, lost creates and ``HEAD``
    requests are left alone and consume nothing."""
    hostile_kind: str = "malformed_json"
    """Which hostile answer :attr:`hostile` sends; one of :data:`HOSTILE_KINDS`."""

    def reset(self) -> None:
        """Switch every fault off."""
        for f in fields(self):
            setattr(self, f.name, f.default)


@dataclass(slots=True)
class RequestRecord:
    """One request the emulator answered (``aborted`` when it broke the connection on purpose)."""

    method: str
    path: str
    status: int
    aborted: bool = False


def output_size(aspect_ratio: str | None, resolution: str | None) -> tuple[int, int]:
    """Pixel size of an output: long side 1024/2048/4096 for 1K/2K/4K, short side from the ratio."""
    long_side = _LONG_SIDE.get(resolution or "1K")
    if long_side is None:
        raise ValueError(f"Unknown resolution {resolution!r}; expected one of {', '.join(_LONG_SIDE)}.")
    width, _, height = (aspect_ratio or "1:1").partition(":")
    w, h = int(width), int(height)
    if w >= h:
        return long_side, round(long_side * h / w)
    return round(long_side * w / h), long_side


class _ApiError(Exception):
    """Answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class _ConnectionAborted(Exception):
    """Raised after a response has started so that uvicorn drops the connection."""


class _QuietAborts(logging.Filter):
    """Keeps uvicorn from logging a traceback for every connection broken on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_abort(record.exc_info[1]))


def _is_abort(exc: BaseException | None) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_abort(e) for e in exc.exceptions)
    return isinstance(exc, _ConnectionAborted)


_QUIET_ABORTS = _QuietAborts()


@dataclass(slots=True)
class _Task:
    id: str
    seq: int
    input: dict[str, Any]
    idempotency_key: str
    started: float
    """``time.monotonic()`` at creation; status is computed from it."""
    created_at: datetime
    duration: float
    fails: bool

    @property
    def model(self) -> str:
        return str(self.input.get("model") or catalog.DEFAULT)

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
class _Upload:
    id: str
    filename: str
    content_type: str
    data: bytes
    created_at: datetime
    expires: float


_IMAGE_CACHE = 64
"""Rendered images kept in memory (a 4K placeholder is ~0.4 MB)."""


@dataclass(slots=True)
class _State:
    """Everything :meth:`Emulator.reset` forgets; replaced as a whole so a reset is one assignment."""

    tasks: dict[str, _Task] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    render_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    seq: Iterator[int] = field(default_factory=itertools.count)


class Emulator:
    """The Monet API in one object: an ASGI :attr:`app` plus the state and faults tests inspect.

    With ``control=True`` it also serves ``GET /_emulator/state`` and ``POST /_emulator/faults`` (no
    auth, no faults, not recorded) so that another process can steer and read it.
    """

    def __init__(
        self,
        *,
        api_key: str = "monet_offline",
        task_seconds: float = 3.0,
        stream_interval: float = 0.25,
        upload_ttl: float = 86_400.0,
        faults: Faults | None = None,
        control: bool = False,
    ) -> None:
        self.api_key = api_key
        self.faults = faults if faults is not None else Faults()
        self.control = control
        self._defaults = (task_seconds, stream_interval, upload_ttl)
        self.task_seconds = task_seconds
        self.stream_interval = stream_interval
        self.upload_ttl = upload_ttl
        self.creates = 0
        self.uploads = 0
        self.downloads = 0
        """Output downloads answered whole and uncut (a 200, or a 206 running to the last byte)."""
        self.chaos_fired: Counter[str] = Counter()
        """Chaos faults that fired, by kind (see :data:`CHAOS_KINDS`)."""
        self.hostile_fired: Counter[str] = Counter()
        """Hostile answers sent, by kind (see :data:`HOSTILE_KINDS`)."""
        self.hostile_streams = 0
        """Hostile bodies being streamed right now (a live gauge: :meth:`reset` leaves it alone)."""
        self.requests: list[RequestRecord] = []
        self.base_url: str | None = None
        self._renders: set[asyncio.Task[bytes]] = set()
        self._state = _State()
        self._chaos_rng = random.Random(self.faults.chaos_seed)  # noqa: S311 - fault dice, not secrets
        self.app: Starlette = self._build_app()

    def reset(self) -> None:
        """Forget all tasks, uploads, requests and counters; switch faults off; restore the timings."""
        self._state = _State()
        self.task_seconds, self.stream_interval, self.upload_ttl = self._defaults
        self.creates = 0
        self.uploads = 0
        self.downloads = 0
        self.chaos_fired = Counter()
        self.hostile_fired = Counter()
        self.requests = []
        self.faults.reset()
        self._chaos_rng.seed(self.faults.chaos_seed)

    def set_chaos(self, rate: float, seed: int | None = None) -> None:
        """Give each request probability ``rate`` of a random fault; reseed the dice with ``seed``.

        Raises ValueError unless ``0 <= rate <= 1``.
        """
        self._set_faults({"chaos": rate, "chaos_seed": seed})

    def task_inputs(self) -> list[dict[str, Any]]:
        """The ``input`` of every task created, oldest first (to count tasks per logical request)."""
        return [dict(t.input) for t in sorted(self._state.tasks.values(), key=lambda t: t.seq)]

    def snapshot(self) -> dict[str, Any]:
        """Counters, chaos and hostile faults fired and current faults, as ``GET /_emulator/state`` answers them."""
        return {
            "creates": self.creates,
            "uploads": self.uploads,
            "tasks": len(self._state.tasks),
            "downloads": self.downloads,
            "requests": len(self.requests),
            "chaos_fired": dict(self.chaos_fired),
            "hostile_fired": dict(self.hostile_fired),
            "faults": asdict(self.faults),
        }

    def finished_at(self, task_id: str) -> float | None:
        """``time.monotonic()`` when the task reached its terminal status; None if unknown or unfinished."""
        task = self._state.tasks.get(task_id)
        if task is None or time.monotonic() < task.finishes:
            return None
        return task.finishes

    # --- the app -------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            Route(f"{API_PREFIX}/tasks/async", self._create_async, methods=["POST"]),
            Route(f"{API_PREFIX}/tasks/sync", self._create_sync, methods=["POST"]),
            Route(f"{API_PREFIX}/tasks/list", self._list_tasks, methods=["GET"]),
            Route(f"{API_PREFIX}/tasks/{{task_id}}", self._get_task, methods=["GET"]),
            Route(f"{API_PREFIX}/files", self._upload, methods=["POST"]),
            Route("/files/outputs/{task_id}/{name}", self._download_output, methods=["GET"]),
            Route("/files/mirror/outputs/{task_id}/{name}", self._download_mirror, methods=["GET"]),
            Route("/files/uploads/{file_id}/{name}", self._download_upload, methods=["GET"]),
        ]
        if self.control:
            routes += [
                Route(f"{CONTROL_PREFIX}/state", self._control_state, methods=["GET"]),
                Route(f"{CONTROL_PREFIX}/faults", self._control_faults, methods=["POST"]),
            ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(_Gate, emulator=self)],
            exception_handlers={_ApiError: _api_error_response, HTTPException: _http_error_response},
        )

    async def _gate(self, scope: Scope) -> Response | None:
        """Latency, auth and per-request faults for ``/api/v1``; None lets the request through."""
        path: str = scope["path"]
        if path != API_PREFIX and not path.startswith(f"{API_PREFIX}/"):
            return None
        if self.faults.latency > 0:
            await anyio.sleep(self.faults.latency)
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), self.api_key.encode()):
            return _error(401, "unauthorized", "Invalid or missing API key")
        if self._take("rate_limit"):
            return self._rate_limited()
        if self._take("server_errors"):
            return self._unavailable()
        kind = self._roll_chaos(_chaos_kinds(scope["method"], path))
        if kind == "rate_limit":
            return self._rate_limited(chaos=True)
        if kind == "server_error":
            return self._unavailable(chaos=True)
        if kind is not None:  # applied, and counted, only if the handler gets that far
            scope[_CHAOS_SCOPE_KEY] = kind
        return None

    def _rate_limited(self, *, chaos: bool = False) -> Response:
        if chaos:
            self.chaos_fired["rate_limit"] += 1
        wait = f"{self.faults.retry_after:f}".rstrip("0").rstrip(".")  # "0.05", "2": never "5e-05"
        return _error(
            429,
            "rate_limited",
            f"Too many requests (emulated); retry after {wait} seconds.",
            headers={"Retry-After": wait},
        )

    def _unavailable(self, *, chaos: bool = False) -> Response:
        if chaos:
            self.chaos_fired["server_error"] += 1
        return _error(503, "unavailable", "The service is temporarily unavailable (emulated); try again.")

    def _roll_chaos(self, kinds: tuple[str, ...]) -> str | None:
        """With probability ``faults.chaos``, one of ``kinds`` picked uniformly; else None."""
        rate = self.faults.chaos
        if rate <= 0 or not kinds or self._chaos_rng.random() >= rate:
            return None
        return self._chaos_rng.choice(kinds)

    def _chaos_hit(self, request: Request, kind: str) -> bool:
        """True (and counted) when the gate chose chaos fault ``kind`` for this request."""
        if request.scope.get(_CHAOS_SCOPE_KEY) != kind:
            return False
        del request.scope[_CHAOS_SCOPE_KEY]
        self.chaos_fired[kind] += 1
        return True

    def _take(self, fault: str) -> bool:
        """Consume one unit of a counting fault; True when it fires."""
        left: int = getattr(self.faults, fault)
        if left <= 0:
            return False
        setattr(self.faults, fault, left - 1)
        return True

    def _base(self, request: Request) -> str:
        return self.base_url or str(request.base_url).rstrip("/")

    # --- tasks ---------------------------------------------------------------------------------

    async def _create_async(self, request: Request) -> Response:
        task, lose = await self._admit(request)
        body = _create_json(task, time.monotonic())
        if lose:
            return _CutResponse(json.dumps(body).encode(), media_type="application/json")
        return self._api_response(request, "task", body)

    async def _create_sync(self, request: Request) -> Response:
        task, lose = await self._admit(request)
        if lose:
            return _sse_response(_lost_stream())
        hostile = self._take_hostile(request, _HOSTILE_STREAM)
        if hostile is not None:
            return _sse_response(self._streaming(self._hostile_events(hostile, task)))
        drop = self._take("drop_streams") or self._chaos_hit(request, "dropped_stream")
        return _sse_response(self._events(task, self._base(request), drop=drop))

    async def _admit(self, request: Request) -> tuple[_Task, bool]:
        """Validate a create; return the new or replayed task and whether to lose the response."""
        key, task_input = await _parse_create(request)
        state = self._state
        existing = state.tasks.get(state.by_key.get(key, ""))
        if existing is not None:
            if existing.input != task_input:
                raise _ApiError(
                    409,
                    "idempotency_conflict",
                    f"idempotency_key {key!r} was already used for a different request; use a new key for a new task.",
                )
            return existing, self._lose_response(request)
        self._check_uploads(request, task_input.get("images") or [])
        if self._take("refuse_creates"):
            raise _invalid("The API refused this request although it is valid (emulated refusal).")
        task = _Task(
            id=f"task_{secrets.token_hex(6)}",
            seq=next(state.seq),
            input=task_input,
            idempotency_key=key,
            started=time.monotonic(),
            created_at=datetime.now(UTC),
            duration=self.task_seconds,
            fails=self._take("fail_tasks"),
        )
        state.tasks[task.id] = task
        state.by_key[key] = task.id
        self.creates += 1
        # Render while the task "runs", as a real API has the file ready when it reports success. The
        # emulator has no task group of its own (uvicorn runs it without a lifespan), so the pending
        # renders are held here until they finish.
        render = asyncio.get_running_loop().create_task(self._image(task))
        self._renders.add(render)
        render.add_done_callback(self._renders.discard)
        return task, self._lose_response(request)

    def _lose_response(self, request: Request) -> bool:
        return self._take("lose_create_responses") or self._chaos_hit(request, "lost_create")

    def _check_uploads(self, request: Request, images: list[str]) -> None:
        """Refuse references to this emulator's own uploads that are unknown or expired."""
        own_hosts = {request.url.netloc}
        if self.base_url:
            own_hosts.add(urlsplit(self.base_url).netloc)
        now = time.monotonic()
        for url in images:
            parts = urlsplit(url)
            segments = parts.path.split("/")
            if parts.netloc not in own_hosts or segments[1:3] != ["files", "uploads"]:
                continue
            upload = self._state.uploads.get(segments[3] if len(segments) > 3 else "")
            if upload is None or now >= upload.expires:
                raise _invalid(
                    f"Reference image {url} has expired: uploaded files are kept 24 hours. "
                    "Upload the file again and use the new URL."
                )

    async def _get_task(self, request: Request) -> Response:
        task = self._find_task(request.path_params["task_id"])
        return self._api_response(request, "task", self._task_json(task, time.monotonic(), self._base(request)))

    def _find_task(self, task_id: str) -> _Task:
        task = self._state.tasks.get(task_id)
        if task is None:
            raise _ApiError(404, "not_found", f"Task {task_id} not found")
        return task

    async def _list_tasks(self, request: Request) -> Response:
        page = _int_param(request, "page", 1)
        page_size = _int_param(request, "pageSize", 20)
        if page < 1:
            raise _invalid(f"page must be 1 or more, got {page}.")
        if not 1 <= page_size <= 100:
            raise _invalid(f"pageSize must be between 1 and 100, got {page_size}.")
        tasks = sorted(self._state.tasks.values(), key=lambda t: t.seq, reverse=True)
        now, base = time.monotonic(), self._base(request)
        start = (page - 1) * page_size
        return self._api_response(
            request,
            "list",
            {
                "tasks": [self._task_json(t, now, base) for t in tasks[start : start + page_size]],
                "page": page,
                "pageSize": page_size,
                "total": len(tasks),
            },
        )

    def _task_json(self, task: _Task, now: float, base: str) -> dict[str, Any]:
        status, progress, changed = task.state(now)
        output: dict[str, Any] = {"model": task.model, "status": status, "progress": progress}
        if status == "success":
            output["url"] = f"{base}/files/outputs/{task.id}/0.png"
        body: dict[str, Any] = {
            "id": task.id,
            "status": status,
            "type": "image",
            "outputs": [output],
            "created_at": _iso(task.created_at),
            "updated_at": _iso(task.created_at + timedelta(seconds=changed)),
        }
        if status == "failed":
            body["error"] = {
                "code": "generation_failed",
                "message": "Image generation failed (emulated failure); try again or change the prompt.",
            }
        return body

    async def _events(self, task: _Task, base: str, *, drop: bool) -> AsyncIterator[bytes]:
        """One event per change of status or progress; the terminal one the moment the task ends."""
        last: tuple[str, int] | None = None
        while True:
            now = time.monotonic()
            body = self._task_json(task, now, base)
            current = (body["status"], body["outputs"][0]["progress"])
            terminal = current[0] in _TERMINAL
            if terminal or current != last:
                last = current
                yield _sse("done" if terminal else "progress", body)
                if drop:
                    raise _ConnectionAborted
                if terminal:
                    return
            wake = min(now + max(self.stream_interval, _MIN_STREAM_TICK), task.finishes)
            await anyio.sleep(max(wake - time.monotonic(), 0.0))

    # --- files ---------------------------------------------------------------------------------

    async def _upload(self, request: Request) -> Response:
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise _invalid("Send the file as multipart/form-data in a field named 'file'.")
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise _invalid(
                    "No file in the upload: send it as multipart/form-data in a field named 'file'.",
                )
            data = await upload.read()
            filename = (upload.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1] or "upload"
            content_type = upload.content_type or "application/octet-stream"
        if len(data) > MAX_UPLOAD_BYTES:
            raise _ApiError(
                413,
                "payload_too_large",
                f"The file is {len(data) / 1024 / 1024:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 1024 // 1024} MB.",
            )
        item = _Upload(
            id=f"file_{secrets.token_hex(8)}",
            filename=filename,
            content_type=content_type,
            data=data,
            created_at=datetime.now(UTC),
            expires=time.monotonic() + self.upload_ttl,
        )
        self._state.uploads[item.id] = item
        self.uploads += 1
        return self._api_response(
            request,
            "upload",
            {
                "id": item.id,
                "url": f"{self._base(request)}/files/uploads/{item.id}/{quote(filename)}",
                "filename": filename,
                "size": len(data),
                "content_type": content_type,
                "created_at": _iso(item.created_at),
            },
        )

    async def _download_upload(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        item = self._state.uploads.get(file_id)
        if item is None or time.monotonic() >= item.expires:
            raise _ApiError(
                404,
                "not_found",
                f"File {file_id} not found: uploaded files are kept 24 hours; upload it again.",
            )
        return self._file_response(request, item.data, item.content_type)

    async def _download_output(self, request: Request) -> Response:
        task = self._finished_output(request)
        hostile = self._take_hostile(request, _HOSTILE_DOWNLOAD)
        if hostile is not None:
            return self._hostile_download(request, hostile)
        return self._file_response(request, await self._image(task), "image/png", output=True)

    async def _download_mirror(self, request: Request) -> Response:
        """The same output under another path: where ``redirect_loopback`` sends a client; never hostile."""
        task = self._finished_output(request)
        return self._file_response(request, await self._image(task), "image/png", output=True)

    def _finished_output(self, request: Request) -> _Task:
        task = self._find_task(request.path_params["task_id"])
        status, _, _ = task.state(time.monotonic())
        if request.path_params["name"] != "0.png" or status != "success":
            raise _ApiError(404, "not_found", f"Task {task.id} has no output {request.path_params['name']}.")
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
                return _error(
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
        if self._take("cut_downloads") or self._fire_chaos("cut_download"):
            return _CutResponse(body, status_code=status, headers=headers, media_type=media_type)
        if output and request.method == "GET" and (span is None or span[1] == total - 1):
            self.downloads += 1  # counted before it is sent, so a client never races the counter
        return Response(body, status_code=status, headers=headers, media_type=media_type)

    def _fire_chaos(self, kind: str) -> bool:
        """Roll the chaos dice for a request to which only ``kind`` applies; True (and counted) if it fires."""
        if self._roll_chaos((kind,)) is None:
            return False
        self.chaos_fired[kind] += 1
        return True

    # --- hostile answers -----------------------------------------------------------------------

    def _take_hostile(self, request: Request, applicable: tuple[str, ...]) -> str | None:
        """The hostile kind to answer ``request`` with (consumed and counted), or None to answer normally."""
        kind = self.faults.hostile_kind
        if request.method == "HEAD" or kind not in applicable or not self._take("hostile"):
            return None
        self.hostile_fired[kind] += 1
        return kind

    def _api_response(self, request: Request, shape: str, body: dict[str, Any]) -> Response:
        """``body`` as JSON, unless a hostile fault replaces it (``shape``: task, list or upload)."""
        kind = self._take_hostile(request, _HOSTILE_API)
        if kind is None:
            return JSONResponse(body)
        if kind == "malformed_json":
            return Response(b'{"id": "task_', media_type="application/json")
        if kind == "missing_fields":
            return JSONResponse(_MISSING_FIELDS[shape])
        if kind == "wrong_types":
            return JSONResponse(_WRONG_TYPES[shape])
        if kind == "huge_body":
            return StreamingResponse(self._streaming(_huge_body()), media_type="application/json")
        return Response(_BAD_GATEWAY_HTML, status_code=502, media_type="text/html")

    def _hostile_events(self, kind: str, task: _Task) -> AsyncIterator[bytes]:
        if kind == "endless_stream":
            return self._endless_events(task)
        if kind == "garbage_stream":
            return _garbage_events()
        return _huge_event(task.id)

    async def _endless_events(self, task: _Task) -> AsyncIterator[bytes]:
        """A ``progress`` event stuck at 50% every ``stream_interval``, until the client goes away."""
        created = _iso(task.created_at)
        output = {"model": task.model, "status": "processing", "progress": 50}
        body = {"id": task.id, "status": "processing", "type": "image", "outputs": [output], "created_at": created}
        event = _sse("progress", body | {"updated_at": created})
        while True:
            yield event
            await anyio.sleep(max(self.stream_interval, _MIN_STREAM_TICK))

    def _hostile_download(self, request: Request, kind: str) -> Response:
        if kind == "not_image":
            return Response(_NOT_IMAGE_HTML, media_type="image/png")
        if kind == "endless_download":
            return StreamingResponse(self._streaming(_endless_png()), media_type="image/png")
        if kind == "redirect_offsite":
            location = _OFFSITE_URL
        elif kind == "redirect_loopback":
            task_id, name = request.path_params["task_id"], request.path_params["name"]
            location = f"{self._base(request)}/files/mirror/outputs/{task_id}/{name}"
        else:  # redirect_loop: this very URL again
            query = request.url.query
            location = f"{self._base(request)}{request.url.path}{'?' + query if query else ''}"
        return Response(status_code=302, headers={"Location": location})

    async def _streaming(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, counted in :attr:`hostile_streams` while they flow; each chunk is a checkpoint.

        The checkpoint lets the event loop serve other requests and lets Starlette cancel the stream
        the moment the client disconnects (uvicorn silently drops writes to a closed connection).
        """
        self.hostile_streams += 1
        try:
            async for chunk in chunks:
                yield chunk
                await anyio.lowlevel.checkpoint()
        finally:
            self.hostile_streams -= 1

    # --- control -------------------------------------------------------------------------------

    async def _control_state(self, _request: Request) -> Response:
        return JSONResponse(self.snapshot())

    async def _control_faults(self, request: Request) -> Response:
        try:
            changes = await request.json()
        except ValueError:
            raise _invalid("The request body must be a JSON object of Faults fields.") from None
        if not isinstance(changes, dict):
            raise _invalid("The request body must be a JSON object of Faults fields.")
        try:
            self._set_faults(changes)
        except ValueError as e:
            raise _invalid(str(e)) from None
        return JSONResponse(self.snapshot())

    def _set_faults(self, changes: Mapping[str, Any]) -> None:
        """Check every change, then apply them all; setting ``chaos_seed`` reseeds the chaos dice."""
        known = {f.name for f in fields(Faults)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"Unknown fault field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        checked = {name: _check_fault(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self.faults, name, value)
        if "chaos_seed" in checked:
            self._chaos_rng.seed(self.faults.chaos_seed)

    async def _image(self, task: _Task) -> bytes:
        """The task's PNG, rendered once off the event loop and cached."""
        state = self._state
        lock = state.render_locks.setdefault(task.id, anyio.Lock())
        async with lock:
            png = state.images.get(task.id)
            if png is None:
                png = await run_in_threadpool(
                    _render_placeholder,
                    model=task.model,
                    prompt=str(task.input.get("prompt", "")),
                    aspect_ratio=task.input.get("aspect_ratio"),
                    resolution=task.input.get("resolution"),
                    seed=task.id,
                )
                state.images[task.id] = png
                # Offline mode runs for days inside the server: keep only recent images (a render is
                # deterministic, so an evicted one comes back byte for byte, ETag included).
                while len(state.images) > _IMAGE_CACHE:
                    evicted = next(iter(state.images))
                    del state.images[evicted]
                    state.render_locks.pop(evicted, None)
        return png


class _Gate:
    """ASGI middleware: records every request and applies auth, latency and per-request faults."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.emulator.control and scope["path"].startswith(f"{CONTROL_PREFIX}/")):
            await self.app(scope, receive, send)  # the control endpoints are not API traffic: not recorded
            return
        record: RequestRecord | None = None

        async def recording_send(message: Message) -> None:
            nonlocal record
            if message["type"] == "http.response.start":
                # Recorded before the client can see the answer, so tests never race the record.
                record = RequestRecord(scope["method"], scope["path"], message["status"])
                self.emulator.requests.append(record)
            await send(message)

        try:
            refusal = await self.emulator._gate(scope)
            if refusal is None:
                await self.app(scope, receive, recording_send)
            else:
                await refusal(scope, receive, recording_send)
        except _ConnectionAborted:
            if record is not None:
                record.aborted = True
            raise
        finally:
            if record is None:  # failed before answering: uvicorn sends a 500
                self.emulator.requests.append(RequestRecord(scope["method"], scope["path"], 500))


class _CutResponse(Response):
    """Announces the full body, sends half of it, then breaks the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise _ConnectionAborted


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


def _chaos_kinds(method: str, path: str) -> tuple[str, ...]:
    """The chaos faults that apply to an ``/api/v1`` request."""
    if method == "POST" and path == f"{API_PREFIX}/tasks/async":
        return ("rate_limit", "server_error", "lost_create")
    if method == "POST" and path == f"{API_PREFIX}/tasks/sync":
        return ("rate_limit", "server_error", "lost_create", "dropped_stream")
    return ("rate_limit", "server_error")


def _check_fault(name: str, value: Any) -> Any:
    """``value`` if it is a valid setting of fault ``name``; else ValueError saying why."""
    if name == "hostile_kind":
        if isinstance(value, str) and value in HOSTILE_KINDS:
            return value
        raise ValueError(f"hostile_kind must be one of {', '.join(HOSTILE_KINDS)}; got {value!r}.")
    if name == "chaos_seed":
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ValueError(f"chaos_seed must be an integer or null, got {value!r}.")
    if isinstance(Faults.__dataclass_fields__[name].default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
        if name == "chaos" and value > 1:
            raise ValueError(f"chaos is a probability from 0 to 1, got {value!r}.")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return value


async def _lost_stream() -> AsyncIterator[bytes]:
    """A stream that breaks before its first event."""
    raise _ConnectionAborted
    yield b""  # pragma: no cover - makes this an async generator


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
_PAD = b"x" * _HOSTILE_CHUNK
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_ENDLESS_FIRST = _PNG_SIGNATURE + bytes(_HOSTILE_CHUNK - len(_PNG_SIGNATURE))
_ENDLESS_NEXT = bytes(_HOSTILE_CHUNK)


async def _padded(head: bytes, tail: bytes, total: int) -> AsyncIterator[bytes]:
    """``head``, then ``x`` up to ``total`` bytes in all, then ``tail``: 64 KB at a time, never all at once."""
    yield head
    left = total - len(head) - len(tail)
    while left > 0:
        yield _PAD if left >= len(_PAD) else _PAD[:left]
        left -= len(_PAD)
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


async def _endless_png() -> AsyncIterator[bytes]:
    """A PNG signature, then zeros, 64 KB at a time, forever."""
    yield _ENDLESS_FIRST
    while True:
        yield _ENDLESS_NEXT


def _sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _create_json(task: _Task, now: float) -> dict[str, Any]:
    status, _, _ = task.state(now)
    return {"id": task.id, "status": status, "type": "image", "created_at": _iso(task.created_at)}


async def _parse_create(request: Request) -> tuple[str, dict[str, Any]]:
    """The idempotency key and ``input`` of a create request, checked against the catalogue."""
    try:
        body = await request.json()
    except ValueError:
        raise _invalid("The request body must be a JSON object.") from None
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object with type, input and idempotency_key.")
    if body.get("type") != "image":
        raise _invalid(f'type must be "image", got {body.get("type")!r}.')
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not key.strip():
        raise _invalid("idempotency_key is required: a unique string per task, reused when the request is retried.")
    task_input = body.get("input")
    if not isinstance(task_input, dict):
        raise _invalid("input must be an object with at least a prompt.")
    _check_input(task_input)
    return key, task_input


def _check_input(task_input: dict[str, Any]) -> None:
    unknown = sorted(set(task_input) - set(_INPUT_FIELDS))
    if unknown:
        raise _invalid(f"input has unknown field(s) {', '.join(unknown)}; accepted: {', '.join(_INPUT_FIELDS)}.")
    prompt = task_input.get("prompt")
    if not isinstance(prompt, str):
        raise _invalid("input.prompt is required and must be a string.")
    for name in ("model", "aspect_ratio", "resolution"):
        if not isinstance(task_input.get(name), str | None):
            raise _invalid(f"input.{name} must be a string.")
    images = task_input.get("images") or []
    if not isinstance(images, list) or not all(isinstance(url, str) for url in images):
        raise _invalid("input.images must be a list of image URLs.")
    try:
        catalog.check(
            task_input.get("model") or catalog.DEFAULT,
            prompt=prompt,
            image_count=len(images),
            aspect_ratio=task_input.get("aspect_ratio"),
            resolution=task_input.get("resolution"),
        )
    except InvalidRequest as e:
        raise _invalid(str(e)) from None
    for i, url in enumerate(images):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise _invalid(
                f"input.images[{i}] is not an http(s) URL: {url!r}. Upload local files with "
                "POST /api/v1/files and pass the returned url."
            )


def _invalid(message: str) -> _ApiError:
    return _ApiError(400, "VALIDATION_ERROR", message)


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise _invalid(f"{name} must be an integer, got {raw!r}.") from None


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _api_error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _ApiError)
    return _error(exc.status, exc.code, str(exc))


_HTTP_CODES = {400: "VALIDATION_ERROR", 404: "not_found", 405: "method_not_allowed"}


def _http_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"No such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return _error(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), message, exc.headers)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- images --------------------------------------------------------------------------------------

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_DASH = "—"  # Pillow's built-in font has no em dash: it is drawn as a bar
_DETAIL_SCALE = 0.7
_LINE_HEIGHT = 1.35
_WRAP_WIDTHS = (80, 48, 32, 22, 16, 11)
_WRAP_GAIN = 1.3


def _render_placeholder(
    *, model: str, prompt: str, aspect_ratio: str | None, resolution: str | None, seed: str
) -> bytes:
    """A PNG of the output size that says, large and plainly, that it is an offline placeholder."""
    width, height = output_size(aspect_ratio, resolution)
    hue = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big") / 65_535
    top = _rgb(hue, 0.55, 0.35)
    bottom = _rgb((hue + 0.15) % 1.0, 0.45, 0.85)
    # A 1-pixel-wide gradient stretched to size: cheap to make, and flat rows compress fast.
    column = ImageOps.colorize(Image.linear_gradient("L").resize((1, 256)), black=top, white=bottom)
    image = column.resize((width, height), Image.Resampling.BILINEAR)

    head = " ".join(prompt.split())
    head = head if len(head) <= 60 else f"{head[:59]}…"
    details = [
        f"{model} · {aspect_ratio or '1:1'} · {resolution or '1K'} · {width}x{height} px",
        f"“{head}”",
        "Not a generated image.",
    ]
    size, title_lines, detail_lines = _layout(width, height, details)
    title_font = ImageFont.load_default(size=size)
    detail_font = ImageFont.load_default(size=max(round(size * _DETAIL_SCALE), 6))

    draw = ImageDraw.Draw(image)
    border = max(min(width, height) // 64, 2)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(20, 20, 20), width=border)
    step = size * _LINE_HEIGHT
    block = step * (len(title_lines) + _DETAIL_SCALE * len(detail_lines))
    y = (height - block) / 2
    pad = size * 0.5
    draw.rectangle((0, y - pad, width, y + block + pad), fill=(15, 15, 20))
    for line in title_lines:
        _draw_centered(draw, width / 2, y, line, title_font, (255, 214, 10))
        y += step
    for line in detail_lines:
        _draw_centered(draw, width / 2, y, line, detail_font, (235, 235, 235))
        y += step * _DETAIL_SCALE

    info = PngImagePlugin.PngInfo()
    info.add_text("Description", PLACEHOLDER_DESCRIPTION)
    info.add_text("Software", "nano-banana-mcp emulator")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1, pnginfo=info)
    return buffer.getvalue()


def _layout(width: int, height: int, details: list[str]) -> tuple[int, list[str], list[str]]:
    """The largest title size, and the wrapped lines, at which the text fits the image.

    Lines fill at most 90% of the width and the block 70% of the height; narrow images get
    more, shorter lines (a narrower wrap is taken only when it makes the text clearly larger).
    """
    probe = 100
    probe_font = ImageFont.load_default(size=probe)
    best: tuple[int, list[str], list[str]] = (0, [PLACEHOLDER_TITLE], details)
    for chars in _WRAP_WIDTHS:
        title_lines = _wrap(PLACEHOLDER_TITLE, chars)
        detail_lines = [piece for line in details for piece in _wrap(line, chars)]
        widest = max(
            *(_text_width(probe_font, line) for line in title_lines),
            *(_text_width(probe_font, line) * _DETAIL_SCALE for line in detail_lines),
        )
        lines = len(title_lines) + _DETAIL_SCALE * len(detail_lines)
        scale = min(0.9 * width / widest, 0.7 * height / (_LINE_HEIGHT * probe * lines))
        if int(probe * scale) > best[0] * _WRAP_GAIN:
            best = (int(probe * scale), title_lines, detail_lines)
    return max(best[0], 6), best[1], best[2]


def _wrap(text: str, chars: int) -> list[str]:
    return textwrap.wrap(text, chars, break_long_words=False, break_on_hyphens=False) or [text]


def _text_width(font: _Font, text: str) -> float:
    parts = text.split(_DASH)
    return sum(font.getlength(part) for part in parts) + (len(parts) - 1) * font.getlength("M")


def _draw_centered(
    draw: ImageDraw.ImageDraw, center: float, top: float, text: str, font: _Font, fill: tuple[int, int, int]
) -> None:
    """Draw one line centred on ``center``, with any em dash drawn as a bar at hyphen height."""
    x = center - _text_width(font, text) / 2
    em = font.getlength("M")
    _, bar_top, _, bar_bottom = font.getbbox("-")
    middle, half = top + (bar_top + bar_bottom) / 2, max(em * 0.04, 0.5)
    for i, part in enumerate(text.split(_DASH)):
        if i:
            draw.rectangle((x + em * 0.1, middle - half, x + em * 0.9, middle + half), fill=fill)
            x += em
        draw.text((x, top), part, font=font, fill=fill)
        x += font.getlength(part)


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


# --- serving -------------------------------------------------------------------------------------


def _config(emulator: Emulator) -> uvicorn.Config:
    config = uvicorn.Config(
        emulator.app,
        http="h11",
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )
    logging.getLogger("uvicorn.error").addFilter(_QUIET_ABORTS)
    return config


def _bind(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without
    # it each keep-alive answer (headers, then body) waits ~40 ms on Nagle and the delayed ACK.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if sys.platform != "win32":  # on Windows SO_REUSEADDR lets another process steal the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextmanager
def serve_in_thread(emulator: Emulator, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run uvicorn in a daemon thread on a pre-bound socket (port 0 = free port); yield the base URL."""
    sock = _bind(host, port)
    server = uvicorn.Server(_config(emulator))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="nano-banana-emulator", daemon=True)
    emulator.base_url = _url(host, sock.getsockname()[1])
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The emulator did not start; see the log on stderr.")
            time.sleep(0.002)
        yield emulator.base_url
    finally:
        server.should_exit = True
        thread.join(timeout=_GRACEFUL_SHUTDOWN_SECONDS + 5)
        sock.close()
        emulator.base_url = None


async def serve(emulator: Emulator, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Serve until cancelled (the ``nano-banana-mcp emulator`` command)."""
    sock = _bind(host, port)
    server = uvicorn.Server(_config(emulator))
    emulator.base_url = _url(host, sock.getsockname()[1])
    logger.info("Monet emulator (offline placeholders) listening on %s", emulator.base_url)
    try:
        await server.serve(sockets=[sock])
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await server.shutdown(sockets=[sock])
        raise
    finally:
        sock.close()
        emulator.base_url = None
