"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``, protocol 2026-07-28): the host carries the long wait.

Spec: ``specification/draft/tasks.md`` in the repository modelcontextprotocol/ext-tasks. A client that declares the
extension on a ``tools/call`` of ``generate_image`` may be answered with a task handle (``CreateTaskResult``) instead
of a result; it then polls ``tasks/get`` (or listens for ``notifications/tasks``) until the task is ``completed``.
Claude Code's interactive CLI does: it moves the call to the background at once, and the model goes on working.

Everything is served from the durable ledger, through the service (never the ledger directly):

- **Creating.** The call writes its rows exactly as a plain call does (the rows first, then the creates, by the
  runner), waits up to :data:`INLINE_SECONDS` for them, and then writes the call's id, tenant and rows
  (``Service.open_call``) before answering: a ``tasks/get`` right after resolves, on any process sharing the ledger.
- **Plain result or task.** A call whose images are all saved (or that failed) within :data:`INLINE_SECONDS` (1 s)
  gets the plain result, as any client would; a call sent again with its ``request_id`` after it finished does too.
  Anything longer is a task. A call that did not declare the extension, a 2025-era connection, and every other tool
  get exactly what they got before: ``wait_seconds``, then ``running … call get_task``.
- **Ids.** 192 random bits (``secrets.token_urlsafe``), never the API's id nor a row's key, bound to the caller's
  tenant: another tenant's id answers exactly like an unknown one (-32602). A ``tasks/*`` call, or a listen for
  ``taskIds``, without the extension declared on that request: -32021.
- **``tasks/get``.** ``working`` with a ``statusMessage`` a person can read (model, progress %, what it waits on: the
  API accepting the request, the queue, the generation, the download; a problem being retried). ``completed`` with
  ``result``: exactly the ``CallToolResult`` the plain call returns once its images are saved (the same code builds
  it: summary text with each saved path, a preview, a resource link, structured content with paths and ``uri``); a
  call whose every create the API refused is ``completed`` with ``isError: true`` and the plain call's error text.
  ``failed`` is never used: it is kept for JSON-RPC errors, and a tool failure is not one.
- **``pollIntervalMs``** is the shortest over the call's unfinished rows of: 1 s once a row is half done (progress
  >= 50 %) or its images are being saved (near the end); 2 s while it generates below 50 %; 3 s while the API has
  not accepted or started it (queued); 5 s while a problem is being retried (a setting, the disk, the network).
- **``ttlMs`` is null** (unlimited): the ledger keeps every row and call, and saved images stay where they were
  saved; nothing is purged, so a task can be read for as long as the ledger is kept.
- **``tasks/cancel``** is acknowledged, and a task not finished yet reports ``cancelled`` from then on (on every
  replica: it is written to the ledger). The Monet API has no cancel, so the work goes on: the image is still made
  and paid for, saved, and listed by ``list_tasks`` and ``get_task``; never is paid work lost. A task that had
  finished stays ``completed``. ``tasks/update`` is acknowledged (this server never asks for input).
- **``subscriptions/listen``** with ``notifications.taskIds``: the acknowledgement names the ids accepted (the
  caller's own tasks only: an unknown or another tenant's id is left out, alike), then one ``notifications/tasks``
  per task with its state when the stream opened, then one per change (what ``tasks/get`` would answer at that
  moment). Changes are heard from this process's runner (progress included); the finish of a row another replica
  works is heard through the PostgreSQL ledger's announcements (``watch_finished``), and anything else (progress on
  another replica, a cancel sent to another replica) within :data:`RECHECK_SECONDS`. At most
  :data:`MAX_TASK_IDS` task ids (and resource URIs) per stream and :data:`MAX_TASK_STREAMS` such streams per
  tenant. A listen without ``taskIds`` is the SDK's, unchanged.
- **Durability.** The rows and the call are in the ledger before the handle is handed out: after a SIGKILL and a
  restart, ``tasks/get`` answers and the restarted server's sweep finishes the rows, with one create each. Over
  HTTP any replica on the same PostgreSQL ledger answers; ``Mcp-Name`` (the task id, sent by clients with
  ``tasks/*``) can route a task to one replica in sticky set-ups, but correctness does not need it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, cast

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.server.subscriptions import SUBSCRIPTION_ID_META_KEY, ServerEvent, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import event_matches, event_to_notification
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    CallToolRequestParams,
    CallToolResult,
    Notification,
    RequestParams,
    ServerNotification,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
    TextContent,
)
from mcp_types.methods import serialize_server_result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.mcp_server.apps import with_request
from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.mcp_server.tools import DEFERRAL, App, Deferral, tool_result
from nano_banana_mcp.tasks import CallState, Service, TaskRecord

__all__ = [
    "EXTENSION_ID",
    "INLINE_SECONDS",
    "MAX_TASK_IDS",
    "MAX_TASK_STREAMS",
    "NOT_FOUND",
    "RECHECK_SECONDS",
    "BackgroundTasks",
    "TaskParams",
    "UpdateParams",
    "declares_tasks",
    "poll_interval_ms",
    "working_message",
]

log = logging.getLogger(__name__)

EXTENSION_ID = "io.modelcontextprotocol/tasks"
TOOL = "generate_image"
"""The one tool answered with a task: the only one that waits for the API."""
INLINE_SECONDS = 1.0
"""How long a call that may become a task waits for its images before it does (then: the plain result)."""
TTL_MS: int | None = None
"""Tasks are never purged (see the module docstring)."""
POLL_NEAR_END_MS, POLL_GENERATING_MS, POLL_QUEUED_MS, POLL_TROUBLE_MS = 1000, 2000, 3000, 5000
NEAR_END_PROGRESS = 50.0
MAX_TASK_IDS = 100
"""Task ids (and, apart, resource URIs) one listen stream may name."""
MAX_TASK_STREAMS = 16
"""Listen streams with task ids open at once, per tenant."""
RECHECK_SECONDS = 5.0
"""A listen stream reads its unfinished tasks again at least this often (changes no announcement tells of)."""
COALESCE_SECONDS = 0.2
"""After a change, a listen stream waits this long before reading: a burst of changes makes one notification."""
MAX_BUFFERED_EVENTS = 1024
NOT_FOUND = (
    "Failed to retrieve task: Task not found. No task with this id is yours on this server; use the taskId that "
    "tools/call answered."
)
_VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS)
_MAX_ID_LENGTH = 200


class TaskParams(RequestParams):
    """``tasks/get`` and ``tasks/cancel``."""

    task_id: str


class UpdateParams(TaskParams):
    """``tasks/update``: responses to input requests, which this server never makes."""

    input_responses: dict[str, Any] | None = None


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """The request is of the 2026 protocol and declares the extension in its own capabilities."""
    if ctx.protocol_version not in _VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities else None
    return bool(extensions) and EXTENSION_ID in cast("dict[str, Any]", extensions)


def poll_interval_ms(records: Sequence[TaskRecord]) -> int:
    """The rule of the module docstring: the shortest interval any unfinished row asks for."""
    intervals = [_row_interval(r) for r in records if not r.finished]
    return min(intervals, default=POLL_NEAR_END_MS)


def _row_interval(record: TaskRecord) -> int:
    if record.error:
        return POLL_TROUBLE_MS
    if record.phase == "succeeded" or (record.progress or 0.0) >= NEAR_END_PROGRESS:
        return POLL_NEAR_END_MS
    if record.status == "pending":
        return POLL_QUEUED_MS
    return POLL_GENERATING_MS


def working_message(records: Sequence[TaskRecord]) -> str:
    """What a person reads of an unfinished call: the model, progress, what it waits on, a problem being retried."""
    model = records[0].request.model
    if len(records) == 1:
        text = _row_message(records[0])
    else:
        finished = sum(r.finished for r in records)
        mean = sum(100.0 if r.finished else r.progress or 0.0 for r in records) / len(records)
        text = (
            f"{len(records)} images with {model}: {finished} of {len(records)} finished, {mean:.0f}% in all; waiting "
            "for the Monet API."
        )
    problem = next((r.error for r in records if r.error and not r.finished), None)
    return f"{text} Retrying after a problem: {problem}" if problem else text


def _row_message(record: TaskRecord) -> str:
    model = record.request.model
    if record.phase == "submitting":
        return f"Sending the request to the Monet API ({model}); waiting for it to accept."
    if record.phase == "succeeded":
        return f"{model} made the image; saving it."
    if record.status == "pending":
        return f"Queued at the Monet API ({model}); waiting for it to start."
    return f"Generating with {model}: {record.progress or 0.0:.0f}%; waiting for the Monet API to finish."


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _service(ctx: ServerRequestContext[Any, Any]) -> Service:
    app: App = ctx.lifespan_context
    return app.service


def _not_found() -> MCPError:
    return MCPError(code=INVALID_PARAMS, message=NOT_FOUND)


class BackgroundTasks(Extension):
    """The extension: ``tools/call`` answered with a task, ``tasks/get|update|cancel``, and task notifications on
    ``subscriptions/listen`` (:meth:`listen`, a server middleware: the SDK's listen handler knows no ``taskIds``).

    ``bus`` is the server's subscription bus: a listen stream with task ids also carries what it asked of the rest.
    """

    identifier = EXTENSION_ID

    def __init__(self, bus: SubscriptionBus) -> None:
        self._bus = bus
        self._wakes: dict[str, set[anyio.Event]] = {}  # row key or task id -> listen streams waiting on it
        self._streams: dict[str, int] = {}  # tenant -> listen streams with task ids open

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskParams, self._get, protocol_versions=_VERSIONS),
            MethodBinding("tasks/update", UpdateParams, self._update, protocol_versions=_VERSIONS),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, protocol_versions=_VERSIONS),
        )

    # -- tools/call ----------------------------------------------------------------------------

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if params.name != TOOL or not declares_tasks(ctx):
            return await call_next(ctx)
        deferral = Deferral(seconds=INLINE_SECONDS)
        token = DEFERRAL.set(deferral)
        try:
            result = await call_next(ctx)  # the tool itself: the same checks, rows and errors as a plain call
        finally:
            DEFERRAL.reset(token)
        if not deferral.records or not isinstance(result, CallToolResult) or result.is_error:
            return result  # refused before any row was written, or within the inline wait: the plain answer
        structured = result.structured_content if isinstance(result.structured_content, dict) else {}
        if structured.get("status") in ("success", "failed"):
            return result  # done within the inline wait
        state = await _service(ctx).open_call(deferral.records, tenant=tenant_of())
        log.info("tools/call %s answered with task %s… (%d row(s))", TOOL, state.call.id[:6], len(state.records))
        return {"resultType": "task", **await self._detailed(state, ctx)}

    # -- tasks/* -------------------------------------------------------------------------------

    async def _state(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> CallState:
        require_client_extension(ctx, EXTENSION_ID)
        state = await _service(ctx).call(task_id, tenant=tenant_of()) if len(task_id) <= _MAX_ID_LENGTH else None
        if state is None:
            raise _not_found()
        return state

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        state = await self._state(ctx, params.task_id)
        return {"resultType": "complete", **await self._detailed(state, ctx)}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateParams) -> dict[str, Any]:
        await self._state(ctx, params.task_id)  # nothing is ever asked: every response is for no outstanding key
        return {"resultType": "complete"}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        require_client_extension(ctx, EXTENSION_ID)
        task_id = params.task_id
        state = await _service(ctx).cancel_call(task_id, tenant=tenant_of()) if len(task_id) <= _MAX_ID_LENGTH else None
        if state is None:
            raise _not_found()
        self._wake(task_id)
        return {"resultType": "complete"}

    async def _detailed(self, state: CallState, ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
        """The task as ``tasks/get`` and ``notifications/tasks`` give it (a ``DetailedTask``)."""
        task: dict[str, Any] = {
            "taskId": state.call.id,
            "createdAt": _iso(state.call.created_at),
            "lastUpdatedAt": _iso(state.updated_at),
            "ttlMs": TTL_MS,
        }
        if state.call.cancelled_at is not None:
            return task | {"status": "cancelled", "statusMessage": _cancelled_message(state, _service(ctx))}
        if state.finished:
            result = await self._completed(state, ctx)
            summary = next((c.get("text") for c in result.get("content", ()) if c.get("type") == "text"), None)
            return task | {"status": "completed", "statusMessage": summary, "result": result}
        return task | {
            "status": "working",
            "statusMessage": working_message(state.records),
            "pollIntervalMs": poll_interval_ms(state.records),
        }

    async def _completed(self, state: CallState, ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
        """The ``CallToolResult`` the plain call returns once the rows are finished, in its wire form."""
        service = _service(ctx)
        try:
            result = await with_request(await tool_result(service, service.call_result(state)), ctx)
        except NanoBananaError as err:
            # As the plain call's ``agent_errors`` and the SDK's tool runner make it (mcp/server/mcpserver/tools/base.py
            # and server.py, 2.3): tests/mcp_server/test_tasks_extension.py compares the two on the wire.
            text = f"Error executing tool {TOOL}: {err}"
            result = CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        return serialize_server_result("tools/call", ctx.protocol_version, wire)

    # -- subscriptions/listen ------------------------------------------------------------------

    async def listen(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: a ``subscriptions/listen`` that names ``notifications.taskIds`` is served here; any other
        request goes on, untouched."""
        raw = ctx.params if isinstance(ctx.params, Mapping) else {}
        wanted = raw.get("notifications")
        if ctx.method != "subscriptions/listen" or not isinstance(wanted, Mapping) or "taskIds" not in wanted:
            return await call_next(ctx)
        if ctx.protocol_version not in _VERSIONS:
            return await call_next(ctx)
        require_client_extension(ctx, EXTENSION_ID)
        task_ids = wanted["taskIds"]
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise MCPError(code=INVALID_PARAMS, message="notifications.taskIds must be a list of task ids (strings).")
        try:
            params = SubscriptionsListenRequestParams.model_validate(raw, by_name=False)
        except ValidationError:
            raise MCPError(code=INVALID_PARAMS, message="subscriptions/listen: notifications is malformed.") from None
        ids = list(dict.fromkeys(task_ids))
        uris = list(dict.fromkeys(params.notifications.resource_subscriptions or ()))
        if len(ids) > MAX_TASK_IDS or len(uris) > MAX_TASK_IDS:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"A listen stream names at most {MAX_TASK_IDS} task ids and {MAX_TASK_IDS} resource URIs "
                f"(got {len(ids)} and {len(uris)}): open another stream, or poll tasks/get.",
            )
        return await self._serve(ctx, params.notifications, ids, uris)

    async def _serve(
        self, ctx: ServerRequestContext[Any, Any], wanted: SubscriptionFilter, ids: list[str], uris: list[str]
    ) -> dict[str, Any]:
        request_id = ctx.request_id
        if request_id is None:
            raise MCPError(code=INVALID_REQUEST, message="subscriptions/listen requires a request id")
        tenant = tenant_of()
        if self._streams.get(tenant, 0) >= MAX_TASK_STREAMS:
            raise MCPError(
                code=INTERNAL_ERROR,
                message=f"Too many listen streams with task ids ({MAX_TASK_STREAMS} are open): close one, or poll "
                "tasks/get.",
            )
        service = _service(ctx)
        states: dict[str, CallState] = {}
        for task_id in ids:  # the caller's own tasks only; the others are left out, unknown or not theirs alike
            state = await service.call(task_id, tenant=tenant) if len(task_id) <= _MAX_ID_LENGTH else None
            if state is not None:
                states[task_id] = state
        honored = SubscriptionFilter.model_validate(
            {
                "toolsListChanged": True if wanted.tools_list_changed else None,
                "promptsListChanged": True if wanted.prompts_list_changed else None,
                "resourcesListChanged": True if wanted.resources_list_changed else None,
                "resourceSubscriptions": uris or None,
                "taskIds": list(states),
            }
        )
        meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: request_id}
        send, receive = anyio.create_memory_object_stream[ServerEvent](MAX_BUFFERED_EVENTS)
        honored_uris = frozenset(uris)

        def deliver(event: ServerEvent) -> None:
            if event_matches(honored, honored_uris, event):
                try:
                    send.send_nowait(event)
                except anyio.WouldBlock:  # a client that stopped reading: the stream ends, as the SDK's does
                    log.warning("listen stream %r backlog full; ending the stream", request_id)
                    send.close()
                except anyio.ClosedResourceError:
                    pass

        unsubscribe = self._bus.subscribe(deliver)
        self._streams[tenant] = self._streams.get(tenant, 0) + 1
        try:
            ack = SubscriptionsAcknowledgedNotification(
                params=SubscriptionsAcknowledgedNotificationParams(notifications=honored, _meta=meta)
            )
            await ctx.session.send_notification(ack, related_request_id=request_id)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, ctx, states, meta)
                async for event in receive:
                    note = event_to_notification(event, meta)
                    await ctx.session.send_notification(note, related_request_id=request_id)
                tg.cancel_scope.cancel()
        finally:
            unsubscribe()
            self._streams[tenant] -= 1
            if not self._streams[tenant]:
                del self._streams[tenant]
            send.close()
            receive.close()
        return {"resultType": "complete", "_meta": meta}

    async def _watch(
        self, ctx: ServerRequestContext[Any, Any], states: dict[str, CallState], meta: dict[str, Any]
    ) -> None:
        """Send each task's state now, then at each change, until every one has ended."""
        service = _service(ctx)
        tenant = tenant_of()
        sent: dict[str, dict[str, Any]] = {}

        async def tell(task_id: str, state: CallState) -> None:
            task = await self._detailed(state, ctx)
            if sent.get(task_id) != task:
                sent[task_id] = task
                note = Notification[dict[str, Any], Literal["notifications/tasks"]](
                    method="notifications/tasks", params=task | {"_meta": meta}
                )
                await ctx.session.send_notification(cast(ServerNotification, note), related_request_id=ctx.request_id)

        for task_id, state in states.items():
            await tell(task_id, state)
        while open_ids := [t for t, s in states.items() if not (s.finished or s.call.cancelled_at)]:
            keys = [key for t in open_ids for key in states[t].call.keys]
            await self._next_change(service, keys, open_ids)
            for task_id in open_ids:
                fresh = await service.call(task_id, tenant=tenant)
                if fresh is not None:
                    states[task_id] = fresh
                    await tell(task_id, fresh)

    async def _next_change(self, service: Service, keys: list[str], task_ids: list[str]) -> None:
        """Until one of these rows changes here, one is told finished (by this process or, on PostgreSQL, another
        replica), one of these tasks is cancelled here, or :data:`RECHECK_SECONDS` pass; then a short pause."""
        names = [*keys, *task_ids]
        woken = anyio.Event()
        for name in names:
            self._wakes.setdefault(name, set()).add(woken)
        try:
            with anyio.move_on_after(RECHECK_SECONDS):
                async with anyio.create_task_group() as tg:

                    async def first(awaitable: Any) -> None:
                        await awaitable
                        tg.cancel_scope.cancel()

                    tg.start_soon(first, service.next_change(keys))
                    tg.start_soon(first, woken.wait())
        finally:
            for name in names:
                waiting = self._wakes.get(name)
                if waiting is not None:
                    waiting.discard(woken)
                    if not waiting:
                        del self._wakes[name]
        await anyio.sleep(COALESCE_SECONDS)

    def _wake(self, name: str) -> None:
        for event in self._wakes.pop(name, set()):
            event.set()

    async def finished(self, record: TaskRecord) -> None:
        """A row finished: by this process's runner, or by another replica (the PostgreSQL ledger tells)."""
        self._wake(record.key)


def _cancelled_message(state: CallState, service: Service) -> str:
    handles = ", ".join(r.handle for r in state.records)
    images = "its image is" if len(state.records) == 1 else "its images are"
    return (
        f"Cancelled. The Monet API cannot stop a task, so {images} still made and paid for: saved to "
        f"{service.where} and listed by list_tasks and get_task ({handles})."
    )
