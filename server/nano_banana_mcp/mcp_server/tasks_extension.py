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
from collections.abc import Sequence
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver.server import require_client_extension
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, CallToolResult, TextContent
from mcp_types.methods import serialize_server_result

from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.mcp_server.apps import with_request
from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.mcp_server.tasks_listen import MAX_TASK_IDS, MAX_TASK_STREAMS, RECHECK_SECONDS, TaskListens
from nano_banana_mcp.mcp_server.tasks_state import (
    EXTENSION_ID,
    INLINE_SECONDS,
    MAX_ID_LENGTH,
    NOT_FOUND,
    TOOL,
    VERSIONS,
    TaskParams,
    UpdateParams,
    declares_tasks,
    open_task,
    poll_interval_ms,
    task_times,
    working_message,
)
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


def _service(ctx: ServerRequestContext[Any, Any]) -> Service:
    app: App = ctx.lifespan_context
    return app.service


def _not_found() -> MCPError:
    return MCPError(code=INVALID_PARAMS, message=NOT_FOUND)


class BackgroundTasks(Extension):
    """The extension: ``tools/call`` answered with a task, ``tasks/get|update|cancel``, and task notifications on
    ``subscriptions/listen`` (:meth:`listen`, a server middleware: :mod:`~nano_banana_mcp.mcp_server.tasks_listen`).

    ``bus`` is the server's subscription bus: a listen stream with task ids also carries what it asked of the rest.
    """

    identifier = EXTENSION_ID

    def __init__(self, bus: SubscriptionBus) -> None:
        self._listens = TaskListens(bus, self._detailed)
        self.listen = self._listens.listen

    def methods(self) -> Sequence[MethodBinding]:
        return (
            MethodBinding("tasks/get", TaskParams, self._get, protocol_versions=VERSIONS),
            MethodBinding("tasks/update", UpdateParams, self._update, protocol_versions=VERSIONS),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, protocol_versions=VERSIONS),
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
        state = await _service(ctx).call(task_id, tenant=tenant_of()) if len(task_id) <= MAX_ID_LENGTH else None
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
        state = await _service(ctx).cancel_call(task_id, tenant=tenant_of()) if len(task_id) <= MAX_ID_LENGTH else None
        if state is None:
            raise _not_found()
        self._listens.wake(task_id)
        return {"resultType": "complete"}

    async def _detailed(self, state: CallState, ctx: ServerRequestContext[Any, Any]) -> dict[str, Any]:
        """The task as ``tasks/get`` and ``notifications/tasks`` give it (a ``DetailedTask``)."""
        task = open_task(state, _service(ctx))
        if task is not None:
            return task
        result = await self._completed(state, ctx)
        summary = next((c.get("text") for c in result.get("content", ()) if c.get("type") == "text"), None)
        return task_times(state) | {"status": "completed", "statusMessage": summary, "result": result}

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

    async def finished(self, record: TaskRecord) -> None:
        """A row finished: by this process's runner, or by another replica (the PostgreSQL ledger tells)."""
        self._listens.wake(record.key)
