"""The Monet API contract of ``shared/monet-api.md`` as an ASGI app: tasks, idempotency, SSE, listing, files.

Creates are checked against this module's own copy of the published model table (:data:`MODELS`), not
against the product's catalogue, so a catalogue bug shows up as a refusal instead of being reproduced.
Misbehaviour is delegated to :class:`~nano_banana_mcp.emulator.faults.FaultInjector`; with no fault
switched on it changes nothing.

Nothing here writes to stdout: in offline mode stdout is the MCP stdio transport.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nano_banana_mcp.emulator.faults import CONTROL_PREFIX, FaultInjector, Faults
from nano_banana_mcp.emulator.render import render_placeholder
from nano_banana_mcp.emulator.streams import stream_event
from nano_banana_mcp.emulator.wire import (
    API_PREFIX,
    TERMINAL,
    ApiError,
    ConnectionAborted,
    error,
    invalid,
    iso,
)

__all__ = ["DEFAULT_MODEL", "MAX_UPLOAD_BYTES", "MODELS", "Emulator", "Endpoint", "ModelRules", "RequestRecord"]

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ModelRules:
    """What the API accepts for one model (the table at the end of ``shared/monet-api.md``)."""

    max_images: int
    aspect_ratios: tuple[str, ...]
    resolutions: tuple[str, ...]
    """Empty: the model takes no ``resolution``."""


_RATIOS_1 = ("1:1", "2:3", "3:2", "4:3", "3:4", "16:9", "9:16")
_RATIOS_PRO = (*_RATIOS_1, "4:5", "5:4", "21:9")
_RATIOS_2 = (*_RATIOS_PRO, "4:1", "1:4", "8:1", "1:8")
MODELS: dict[str, ModelRules] = {
    "nano-banana-1": ModelRules(max_images=5, aspect_ratios=_RATIOS_1, resolutions=()),
    "nano-banana-1-pro": ModelRules(max_images=14, aspect_ratios=_RATIOS_PRO, resolutions=("1K", "2K", "4K")),
    "nano-banana-2": ModelRules(max_images=14, aspect_ratios=_RATIOS_2, resolutions=("1K", "2K", "4K")),
}
"""The emulator's own copy of the published model table; ``prompt`` is required for every model."""
DEFAULT_MODEL = "nano-banana-2"
"""The model of a create that names none (the page's example model)."""

Endpoint = Literal["async", "sync"]
"""A create endpoint: ``POST /api/v1/tasks/async`` or ``POST /api/v1/tasks/sync``."""
_CREATE_PATHS: dict[str, Endpoint] = {f"{API_PREFIX}/tasks/async": "async", f"{API_PREFIX}/tasks/sync": "sync"}
_INPUT_FIELDS = ("model", "prompt", "images", "aspect_ratio", "resolution")
_PENDING_SHARE = 0.1
"""Share of ``task_seconds`` a task spends ``pending`` before it starts ``processing``."""
_MIN_STREAM_TICK = 0.001
_IMAGE_CACHE = 64
"""Rendered images kept in memory (a 4K placeholder is ~0.4 MB)."""
_RANGE = re.compile(r"bytes=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)
_HTTP_CODES = {400: "VALIDATION_ERROR", 404: "not_found", 405: "method_not_allowed"}


@dataclass(slots=True)
class RequestRecord:
    """One request the emulator answered (``aborted`` when it broke the connection on purpose)."""

    method: str
    path: str
    status: int
    aborted: bool = False


@dataclass(slots=True)
class _Task:
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
class _Upload:
    id: str
    filename: str
    content_type: str
    data: bytes
    created_at: datetime
    expires: float


@dataclass(slots=True)
class _State:
    """Everything :meth:`Emulator.reset` forgets; replaced as a whole so a reset is one assignment."""

    tasks: dict[str, _Task] = field(default_factory=dict)
    by_key: dict[str, dict[Endpoint, str]] = field(default_factory=dict)
    """Idempotency key -> the endpoint a task was created on with it -> task id."""
    key_endpoints: dict[str, set[Endpoint]] = field(default_factory=dict)
    """Idempotency key -> every create endpoint it was sent to, whatever the answer."""
    uploads: dict[str, _Upload] = field(default_factory=dict)
    images: dict[str, bytes] = field(default_factory=dict)
    render_locks: dict[str, anyio.Lock] = field(default_factory=dict)
    seq: Iterator[int] = field(default_factory=itertools.count)


class Emulator:
    """The Monet API in one object: an ASGI :attr:`app` plus the state and faults tests inspect.

    ``strict_idempotency`` (the default) scopes an idempotency key to the create endpoint it was first
    sent to, as the API documents no more: the same key on the other endpoint creates a new task. With
    ``strict_idempotency=False`` one key spans ``/tasks/async`` and ``/tasks/sync``.

    With ``control=True`` it also serves ``GET /_emulator/state`` and ``POST /_emulator/faults`` (no
    auth, no faults, not recorded) so that another process can steer and read it.

    ``extra_keys`` (or :meth:`add_key`) are further keys it accepts, as other accounts' keys would be;
    :attr:`creates_by_key` and :attr:`uploads_by_key` tell which key each create and upload came with.
    """

    def __init__(
        self,
        *,
        api_key: str = "monet_offline",
        extra_keys: Iterable[str] = (),
        task_seconds: float = 3.0,
        stream_interval: float = 0.25,
        upload_ttl: float = 86_400.0,
        faults: Faults | None = None,
        control: bool = False,
        strict_idempotency: bool = True,
    ) -> None:
        self.api_key = api_key
        self.extra_keys: list[str] = list(extra_keys)
        """Keys accepted besides ``api_key``."""
        self.control = control
        self._defaults = (task_seconds, stream_interval, upload_ttl, strict_idempotency)
        self.task_seconds = task_seconds
        self.stream_interval = stream_interval
        self.upload_ttl = upload_ttl
        self.strict_idempotency = strict_idempotency
        self.creates = 0
        """Tasks created, on either endpoint."""
        self.creates_by_endpoint: Counter[Endpoint] = Counter()
        """Tasks created, by the endpoint that created them (``async`` or ``sync``)."""
        self.creates_by_key: Counter[str] = Counter()
        """Tasks created, by the API key of the request that created them."""
        self.uploads = 0
        self.uploads_by_key: Counter[str] = Counter()
        """Files uploaded, by the API key of the request."""
        self.downloads = 0
        """Output downloads answered whole and uncut (a 200, or a 206 running to the last byte)."""
        self.requests: list[RequestRecord] = []
        self.base_url: str | None = None
        self._faults = FaultInjector(faults if faults is not None else Faults())
        self._renders: set[asyncio.Task[bytes]] = set()
        self._state = _State()
        self.app: Starlette = self._build_app()

    @property
    def faults(self) -> Faults:
        """The switchable faults; set their fields to make the next requests misbehave."""
        return self._faults.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults.faults = faults

    @property
    def chaos_fired(self) -> Counter[str]:
        """Chaos faults that fired, by kind (see ``CHAOS_KINDS``)."""
        return self._faults.chaos_fired

    @property
    def hostile_fired(self) -> Counter[str]:
        """Hostile answers sent, by kind (see ``HOSTILE_KINDS``)."""
        return self._faults.hostile_fired

    @property
    def hostile_streams(self) -> int:
        """Hostile bodies being streamed right now (a live gauge that :meth:`reset` leaves alone)."""
        return self._faults.hostile_streams

    def reset(self) -> None:
        """Forget all tasks, uploads, requests and counters; switch faults off; restore the settings."""
        self._state = _State()
        self.task_seconds, self.stream_interval, self.upload_ttl, self.strict_idempotency = self._defaults
        self.creates = 0
        self.creates_by_endpoint = Counter()
        self.creates_by_key = Counter()
        self.uploads = 0
        self.uploads_by_key = Counter()
        self.downloads = 0
        self.requests = []
        self._faults.reset()

    def add_key(self, key: str) -> None:
        """Accept ``key`` too (another account's key); it stays accepted after :meth:`reset`."""
        if key != self.api_key and key not in self.extra_keys:
            self.extra_keys.append(key)

    def set_chaos(self, rate: float, seed: int | None = None) -> None:
        """Give each request probability ``rate`` of a random fault; reseed the dice with ``seed``.

        Raises ValueError unless ``0 <= rate <= 1``.
        """
        self._faults.configure({"chaos": rate, "chaos_seed": seed})

    def keys_on_two_endpoints(self) -> set[str]:
        """Idempotency keys sent to both ``/tasks/async`` and ``/tasks/sync`` (whatever the answers were)."""
        return {key for key, endpoints in self._state.key_endpoints.items() if len(endpoints) > 1}

    def task_inputs(self) -> list[dict[str, Any]]:
        """The ``input`` of every task created, oldest first (to count tasks per logical request)."""
        return [dict(t.input) for t in sorted(self._state.tasks.values(), key=lambda t: t.seq)]

    def snapshot(self) -> dict[str, Any]:
        """Counters, idempotency, faults fired and current faults, as ``GET /_emulator/state`` answers them."""
        return {
            "creates": self.creates,
            "creates_by_endpoint": dict(self.creates_by_endpoint),
            "keys_on_two_endpoints": sorted(self.keys_on_two_endpoints()),
            "strict_idempotency": self.strict_idempotency,
            "uploads": self.uploads,
            "tasks": len(self._state.tasks),
            "downloads": self.downloads,
            "requests": len(self.requests),
            **self._faults.state(),
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
            routes += self._faults.control_routes(self.snapshot)
        return Starlette(
            routes=routes,
            middleware=[Middleware(_Gate, emulator=self)],
            exception_handlers={ApiError: _api_error_response, HTTPException: _http_error_response},
        )

    async def _refusal(self, scope: Scope) -> Response | None:
        """Latency, auth and per-request faults for ``/api/v1``; None lets the request through."""
        path: str = scope["path"]
        if path != API_PREFIX and not path.startswith(f"{API_PREFIX}/"):
            return None
        await self._faults.delay()
        if echoed := self._faults.echo(scope):
            return echoed
        if self._key_of(Headers(scope=scope)) is None:
            return error(401, "unauthorized", "Invalid or missing API key")
        return self._faults.refusal(scope)

    def _key_of(self, headers: Headers) -> str | None:
        """The accepted key a request's ``Authorization: Bearer`` header carries, else None."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        presented = token.strip().encode()
        found = None
        for key in (self.api_key, *self.extra_keys):
            if secrets.compare_digest(presented, key.encode()):
                found = key
        return found if scheme.lower() == "bearer" else None

    def _note_key(self, key: str, endpoint: Endpoint) -> None:
        self._state.key_endpoints.setdefault(key, set()).add(endpoint)

    def _base(self, request: Request) -> str:
        return self.base_url or str(request.base_url).rstrip("/")

    # --- tasks ---------------------------------------------------------------------------------

    async def _create_async(self, request: Request) -> Response:
        task, lose = await self._admit(request, "async")
        body = _create_json(task, time.monotonic())
        if hostile := self._faults.hostile_create(request):
            return hostile
        if lose:
            return self._faults.lost_answer(json.dumps(body).encode())
        return self._faults.api_answer(request, "task", body)

    async def _create_sync(self, request: Request) -> Response:
        task, lose = await self._admit(request, "sync")
        if hostile := self._faults.hostile_create(request):
            return hostile
        if lose:
            return self._faults.lost_stream()
        return self._faults.sync_stream(
            request,
            self._events(task, self._base(request)),
            task_id=task.id,
            model=task.model,
            created_at=iso(task.created_at),
            interval=max(self.stream_interval, _MIN_STREAM_TICK),
        )

    async def _admit(self, request: Request, endpoint: Endpoint) -> tuple[_Task, bool]:
        """Validate a create; return the new or replayed task and whether to lose the response."""
        try:
            body = await request.json()
        except ValueError:
            raise invalid("The request body must be a JSON object.") from None
        key, task_input = _parse_create(body)
        state = self._state
        existing = self._replayed(key, endpoint)
        if existing is not None:
            if existing.input != task_input:
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    f"idempotency_key {key!r} was already used for a different request; use a new key for a new task.",
                )
            return existing, self._faults.lose_create(request)
        self._check_uploads(request, task_input.get("images") or [])
        self._faults.refuse_create()
        task = _Task(
            id=f"task_{secrets.token_hex(6)}",
            seq=next(state.seq),
            input=task_input,
            idempotency_key=key,
            endpoint=endpoint,
            started=time.monotonic(),
            created_at=datetime.now(UTC),
            duration=self.task_seconds,
            fails=self._faults.fail_task(),
        )
        if task.fails:
            task.error_message = self.faults.fail_message
        if echoed := self._faults.echo_in_task(request.scope):
            task.fails, task.error_message = True, echoed
        state.tasks[task.id] = task
        state.by_key.setdefault(key, {})[endpoint] = task.id
        self.creates += 1
        self.creates_by_endpoint[endpoint] += 1
        self.creates_by_key[self._key_of(request.headers) or ""] += 1
        # Render while the task "runs", as a real API has the file ready when it reports success. The
        # emulator has no task group of its own (uvicorn runs it without a lifespan), so the pending
        # renders are held here until they finish.
        render = asyncio.get_running_loop().create_task(self._image(task))
        self._renders.add(render)
        render.add_done_callback(self._renders.discard)
        return task, self._faults.lose_create(request)

    def _replayed(self, key: str, endpoint: Endpoint) -> _Task | None:
        """The task ``key`` already made: on ``endpoint`` only when strict, on either endpoint otherwise."""
        made = self._state.by_key.get(key, {})
        task_id = made.get(endpoint) if self.strict_idempotency else next(iter(made.values()), None)
        return self._state.tasks.get(task_id or "")

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
                raise invalid(
                    f"Reference image {url} has expired: uploaded files are kept 24 hours. "
                    "Upload the file again and use the new URL."
                )

    async def _get_task(self, request: Request) -> Response:
        task = self._find_task(request.path_params["task_id"])
        return self._faults.api_answer(request, "task", self._task_json(task, time.monotonic(), self._base(request)))

    def _find_task(self, task_id: str) -> _Task:
        task = self._state.tasks.get(task_id)
        if task is None:
            raise ApiError(404, "not_found", f"Task {task_id} not found")
        return task

    async def _list_tasks(self, request: Request) -> Response:
        page = _int_param(request, "page", 1)
        page_size = _int_param(request, "pageSize", 20)
        if page < 1:
            raise invalid(f"page must be 1 or more, got {page}.")
        if not 1 <= page_size <= 100:
            raise invalid(f"pageSize must be between 1 and 100, got {page_size}.")
        tasks = sorted(self._state.tasks.values(), key=lambda t: t.seq, reverse=True)
        now, base = time.monotonic(), self._base(request)
        start = (page - 1) * page_size
        return self._faults.api_answer(
            request,
            "list",
            {
                "tasks": [self._task_json(t, now, base) for t in tasks[start : start + page_size]],
                "page": page,
                "pageSize": page_size,
                "total": len(tasks),
            },
        )

    @staticmethod
    def _task_json(task: _Task, now: float, base: str) -> dict[str, Any]:
        status, progress, changed = task.state(now)
        output: dict[str, Any] = {"model": task.model, "status": status, "progress": progress}
        if status == "success":
            output["url"] = f"{base}/files/outputs/{task.id}/0.png"
        body: dict[str, Any] = {
            "id": task.id,
            "status": status,
            "type": "image",
            "outputs": [output],
            "created_at": iso(task.created_at),
            "updated_at": iso(task.created_at + timedelta(seconds=changed)),
        }
        if status == "failed":
            body["error"] = {
                "code": "generation_failed",
                "message": task.error_message
                or "Image generation failed (emulated failure); try again or change the prompt.",
            }
        return body

    async def _events(self, task: _Task, base: str) -> AsyncGenerator[bytes, None]:
        """The task's state at once, then one event per change; the terminal one the moment the task ends."""
        last: tuple[str, int] | None = None
        while True:
            now = time.monotonic()
            body = self._task_json(task, now, base)
            current = (body["status"], body["outputs"][0]["progress"])
            terminal = current[0] in TERMINAL
            if terminal or current != last:
                last = current
                yield stream_event(self._faults.faults.stream_format, body, terminal=terminal)
                if terminal:
                    return
            wake = min(now + max(self.stream_interval, _MIN_STREAM_TICK), task.finishes)
            await anyio.sleep(max(wake - time.monotonic(), 0.0))

    # --- files ---------------------------------------------------------------------------------

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
        self.uploads_by_key[self._key_of(request.headers) or ""] += 1
        return self._faults.api_answer(
            request,
            "upload",
            {
                "id": item.id,
                "url": f"{self._base(request)}/files/uploads/{item.id}/{quote(filename)}",
                "filename": filename,
                "size": len(data),
                "content_type": content_type,
                "created_at": iso(item.created_at),
            },
        )

    async def _download_upload(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        item = self._state.uploads.get(file_id)
        if item is None or time.monotonic() >= item.expires:
            raise ApiError(
                404,
                "not_found",
                f"File {file_id} not found: uploaded files are kept 24 hours; upload it again.",
            )
        return self._file_response(request, item.data, item.content_type)

    async def _download_output(self, request: Request) -> Response:
        task = self._finished_output(request)
        hostile = self._faults.hostile_download(request, self._base(request))
        if hostile is not None:
            return hostile
        return self._file_response(request, await self._output(task), "image/png", output=True)

    async def _download_mirror(self, request: Request) -> Response:
        """The same output under another path: where ``redirect_loopback`` sends a client; never hostile."""
        task = self._finished_output(request)
        return self._file_response(request, await self._output(task), "image/png", output=True)

    async def _output(self, task: _Task) -> bytes:
        """The task's output file: its rendered PNG, or the bytes of the ``output_bytes`` fault."""
        served = self._faults.output_file()
        return served if served is not None else await self._image(task)

    def _finished_output(self, request: Request) -> _Task:
        task = self._find_task(request.path_params["task_id"])
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
            self.downloads += 1  # counted before it is sent, so a client never races the counter
        return Response(body, status_code=status, headers=headers, media_type=media_type)

    async def _image(self, task: _Task) -> bytes:
        """The task's PNG, rendered once off the event loop and cached."""
        state = self._state
        lock = state.render_locks.setdefault(task.id, anyio.Lock())
        async with lock:
            png = state.images.get(task.id)
            if png is None:
                png = await run_in_threadpool(
                    render_placeholder,
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
    """ASGI middleware: records every request and create key, and applies auth, latency and per-request faults."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        emulator = self.emulator
        if scope["type"] != "http" or (emulator.control and scope["path"].startswith(f"{CONTROL_PREFIX}/")):
            await self.app(scope, receive, send)  # the control endpoints are not API traffic: not recorded
            return
        endpoint = _CREATE_PATHS.get(scope["path"]) if scope["method"] == "POST" else None
        if endpoint is not None:  # noted before any refusal, so a key sent anywhere is seen
            body, receive = await _buffered(receive)
            key = _key_of(body)
            if key is not None:
                emulator._note_key(key, endpoint)
        record: RequestRecord | None = None

        async def recording_send(message: Message) -> None:
            nonlocal record
            if message["type"] == "http.response.start":
                # Recorded before the client can see the answer, so tests never race the record.
                record = RequestRecord(scope["method"], scope["path"], message["status"])
                emulator.requests.append(record)
            await send(message)

        try:
            refusal = await emulator._refusal(scope)
            if refusal is None:
                await self.app(scope, receive, recording_send)
            else:
                await refusal(scope, receive, recording_send)
        except ConnectionAborted:
            if record is not None:
                record.aborted = True
            raise
        finally:
            if record is None:  # failed before answering: uvicorn sends a 500
                emulator.requests.append(RequestRecord(scope["method"], scope["path"], 500))


async def _buffered(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a ``receive`` that hands the same messages to the app again."""
    messages: deque[Message] = deque()
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

    async def replay() -> Message:
        return messages.popleft() if messages else await receive()

    return body, replay


def _key_of(body: bytes) -> str | None:
    """The ``idempotency_key`` of a create body, if it has one."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    key = parsed.get("idempotency_key") if isinstance(parsed, dict) else None
    return key if isinstance(key, str) and key.strip() else None


# --- validation ------------------------------------------------------------------------------------


def _parse_create(body: Any) -> tuple[str, dict[str, Any]]:
    """The idempotency key and ``input`` of a create body, checked against :data:`MODELS`."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object with type, input and idempotency_key.")
    if body.get("type") != "image":
        raise invalid(f'type must be "image", got {body.get("type")!r}.')
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not key.strip():
        raise invalid("idempotency_key is required: a unique string per task, reused when the request is retried.")
    task_input = body.get("input")
    if not isinstance(task_input, dict):
        raise invalid("input must be an object with at least a prompt.")
    _check_input(task_input)
    return key, task_input


def _check_input(task_input: dict[str, Any]) -> None:
    """Refuse an ``input`` the published table refuses, naming the field and what is accepted."""
    unknown = sorted(set(task_input) - set(_INPUT_FIELDS))
    if unknown:
        raise invalid(f"input has unknown field(s) {', '.join(unknown)}; accepted: {', '.join(_INPUT_FIELDS)}.")
    prompt = task_input.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("input.prompt is required: a non-empty string describing the image.")
    for name in ("model", "aspect_ratio", "resolution"):
        if not isinstance(task_input.get(name), str | None):
            raise invalid(f"input.{name} must be a string.")
    images = task_input.get("images") or []
    if not isinstance(images, list) or not all(isinstance(url, str) for url in images):
        raise invalid("input.images must be a list of image URLs.")
    model = task_input.get("model") or DEFAULT_MODEL
    rules = MODELS.get(model)
    if rules is None:
        raise invalid(f"input.model {model!r} is not a supported model; supported: {', '.join(MODELS)}.")
    if len(images) > rules.max_images:
        raise invalid(f"input.images has {len(images)} images; {model} accepts at most {rules.max_images}.")
    aspect_ratio = task_input.get("aspect_ratio")
    if aspect_ratio is not None and aspect_ratio not in rules.aspect_ratios:
        raise invalid(
            f"input.aspect_ratio {aspect_ratio!r} is not supported by {model}; "
            f"supported: {', '.join(rules.aspect_ratios)}."
        )
    resolution = task_input.get("resolution")
    if resolution is not None and not rules.resolutions:
        raise invalid(f"input.resolution is not supported by {model}; omit it.")
    if resolution is not None and resolution not in rules.resolutions:
        raise invalid(
            f"input.resolution {resolution!r} is not supported by {model}; supported: {', '.join(rules.resolutions)}."
        )
    for i, url in enumerate(images):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise invalid(
                f"input.images[{i}] is not an http(s) URL: {url!r}. Upload local files with "
                "POST /api/v1/files and pass the returned url."
            )


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer, got {raw!r}.") from None


def _create_json(task: _Task, now: float) -> dict[str, Any]:
    status, _, _ = task.state(now)
    return {"id": task.id, "status": status, "type": "image", "created_at": iso(task.created_at)}


# --- errors and byte ranges ------------------------------------------------------------------------


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
