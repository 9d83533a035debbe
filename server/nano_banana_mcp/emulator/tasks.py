"""The task endpoints: create (``/tasks/async`` answers the task, ``/tasks/sync`` streams it), get and list, with
idempotent creates and a task's JSON as the API shows it."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nano_banana_mcp.emulator.gate import caller_key
from nano_banana_mcp.emulator.state import Endpoint, State, Task
from nano_banana_mcp.emulator.streams import stream_event
from nano_banana_mcp.emulator.validation import int_param, parse_create
from nano_banana_mcp.emulator.wire import API_PREFIX, TERMINAL, ApiError, base_url, invalid, iso

if TYPE_CHECKING:
    from nano_banana_mcp.emulator.app import Emulator
    from nano_banana_mcp.emulator.faults import FaultInjector

__all__ = ["TaskEndpoints"]

_MIN_STREAM_TICK = 0.001


class TaskEndpoints:
    """``POST /tasks/async``, ``POST /tasks/sync``, ``GET /tasks/list`` and ``GET /tasks/{id}`` of an emulator.

    Reads the emulator's settings (``task_seconds``, ``stream_interval``, ``strict_idempotency``) at each request,
    so a test can change them between requests.
    """

    def __init__(self, emulator: Emulator, faults: FaultInjector) -> None:
        self._emulator = emulator
        self._faults = faults
        self._renders: set[asyncio.Task[bytes]] = set()
        """Renders started for new tasks and not finished yet (held so they are not collected mid-way)."""

    def routes(self) -> list[Route]:
        return [
            Route(f"{API_PREFIX}/tasks/async", self._create_async, methods=["POST"]),
            Route(f"{API_PREFIX}/tasks/sync", self._create_sync, methods=["POST"]),
            Route(f"{API_PREFIX}/tasks/list", self._list_tasks, methods=["GET"]),
            Route(f"{API_PREFIX}/tasks/{{task_id}}", self._get_task, methods=["GET"]),
        ]

    async def _create_async(self, request: Request) -> Response:
        task, lose = await self._admit(request, "async")
        status, _, _ = task.state(time.monotonic())
        body = {"id": task.id, "status": status, "type": "image", "created_at": iso(task.created_at)}
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
            self._events(task, base_url(request, self._emulator.base_url)),
            task_id=task.id,
            model=task.model,
            created_at=iso(task.created_at),
            interval=max(self._emulator.stream_interval, _MIN_STREAM_TICK),
        )

    async def _admit(self, request: Request, endpoint: Endpoint) -> tuple[Task, bool]:
        """Validate a create; return the new or replayed task and whether to lose the response."""
        try:
            body = await request.json()
        except ValueError:
            raise invalid("The request body must be a JSON object.") from None
        key, task_input = parse_create(body)
        state = self._emulator.state
        existing = self._replayed(state, key, endpoint)
        if existing is not None:
            if existing.input != task_input:
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    f"idempotency_key {key!r} was already used for a different request; use a new key for a new task.",
                )
            return existing, self._faults.lose_create(request)
        self._check_uploads(state, request, task_input.get("images") or [])
        self._faults.refuse_create()
        task = Task(
            id=f"task_{secrets.token_hex(6)}",
            seq=next(state.seq),
            input=task_input,
            idempotency_key=key,
            endpoint=endpoint,
            started=time.monotonic(),
            created_at=datetime.now(UTC),
            duration=self._emulator.task_seconds,
            fails=self._faults.fail_task(),
        )
        if task.fails:
            task.error_message = self._faults.faults.fail_message
        if echoed := self._faults.echo_in_task(request.scope):
            task.fails, task.error_message = True, echoed
        state.tasks[task.id] = task
        state.by_key.setdefault(key, {})[endpoint] = task.id
        state.creates += 1
        state.creates_by_endpoint[endpoint] += 1
        state.creates_by_key[caller_key(request)] += 1
        # Render while the task "runs", as a real API has the file ready when it reports success. The
        # emulator has no task group of its own (uvicorn runs it without a lifespan), so the pending
        # renders are held here until they finish.
        render = asyncio.get_running_loop().create_task(state.renders.png(task))
        self._renders.add(render)
        render.add_done_callback(self._renders.discard)
        return task, self._faults.lose_create(request)

    def _replayed(self, state: State, key: str, endpoint: Endpoint) -> Task | None:
        """The task ``key`` already made: on ``endpoint`` only when strict, on either endpoint otherwise."""
        made = state.by_key.get(key, {})
        task_id = made.get(endpoint) if self._emulator.strict_idempotency else next(iter(made.values()), None)
        return state.tasks.get(task_id or "")

    def _check_uploads(self, state: State, request: Request, images: list[str]) -> None:
        """Refuse references to this emulator's own uploads that are unknown or expired."""
        own_hosts = {request.url.netloc}
        if self._emulator.base_url:
            own_hosts.add(urlsplit(self._emulator.base_url).netloc)
        now = time.monotonic()
        for url in images:
            parts = urlsplit(url)
            segments = parts.path.split("/")
            if parts.netloc not in own_hosts or segments[1:3] != ["files", "uploads"]:
                continue
            upload = state.uploads.get(segments[3] if len(segments) > 3 else "")
            if upload is None or now >= upload.expires:
                raise invalid(
                    f"Reference image {url} has expired: uploaded files are kept 24 hours. "
                    "Upload the file again and use the new URL."
                )

    async def _get_task(self, request: Request) -> Response:
        task = self._emulator.state.find_task(request.path_params["task_id"])
        body = _task_json(task, time.monotonic(), base_url(request, self._emulator.base_url))
        return self._faults.api_answer(request, "task", body)

    async def _list_tasks(self, request: Request) -> Response:
        page = int_param(request, "page", 1)
        page_size = int_param(request, "pageSize", 20)
        if page < 1:
            raise invalid(f"page must be 1 or more, got {page}.")
        if not 1 <= page_size <= 100:
            raise invalid(f"pageSize must be between 1 and 100, got {page_size}.")
        tasks = sorted(self._emulator.state.tasks.values(), key=lambda t: t.seq, reverse=True)
        now, base = time.monotonic(), base_url(request, self._emulator.base_url)
        start = (page - 1) * page_size
        return self._faults.api_answer(
            request,
            "list",
            {
                "tasks": [_task_json(t, now, base) for t in tasks[start : start + page_size]],
                "page": page,
                "pageSize": page_size,
                "total": len(tasks),
            },
        )

    async def _events(self, task: Task, base: str) -> AsyncGenerator[bytes, None]:
        """The task's state at once, then one event per change; the terminal one the moment the task ends."""
        last: tuple[str, int] | None = None
        while True:
            now = time.monotonic()
            body = _task_json(task, now, base)
            current = (body["status"], body["outputs"][0]["progress"])
            terminal = current[0] in TERMINAL
            if terminal or current != last:
                last = current
                yield stream_event(self._faults.faults.stream_format, body, terminal=terminal)
                if terminal:
                    return
            wake = min(now + max(self._emulator.stream_interval, _MIN_STREAM_TICK), task.finishes)
            await anyio.sleep(max(wake - time.monotonic(), 0.0))


def _task_json(task: Task, now: float, base: str) -> dict[str, Any]:
    """The task as ``GET /tasks/{id}`` answers it at ``now`` (``base``: the URL its output is served under)."""
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
