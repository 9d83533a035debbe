"""``subscriptions/listen`` with ``notifications.taskIds``: ``notifications/tasks`` on each change of the caller's
tasks (the rules are in :mod:`nano_banana_mcp.mcp_server.tasks_extension`'s docstring). A server middleware: the SDK's
listen handler knows no ``taskIds``; a listen without them is the SDK's, unchanged."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, cast

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver.server import require_client_extension
from mcp.server.subscriptions import SUBSCRIPTION_ID_META_KEY, ServerEvent, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import event_matches, event_to_notification
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    Notification,
    ServerNotification,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
)
from pydantic import ValidationError

from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.mcp_server.tasks_state import EXTENSION_ID, MAX_ID_LENGTH, VERSIONS
from nano_banana_mcp.mcp_server.tools import App
from nano_banana_mcp.tasks import CallState, Service

__all__ = ["COALESCE_SECONDS", "MAX_TASK_IDS", "MAX_TASK_STREAMS", "RECHECK_SECONDS", "TaskListens"]

log = logging.getLogger(__name__)

MAX_TASK_IDS = 100
"""Task ids (and, apart, resource URIs) one listen stream may name."""
MAX_TASK_STREAMS = 16
"""Listen streams with task ids open at once, per tenant."""
RECHECK_SECONDS = 5.0
"""A listen stream reads its unfinished tasks again at least this often (changes no announcement tells of)."""
COALESCE_SECONDS = 0.2
"""After a change, a listen stream waits this long before reading: a burst of changes makes one notification."""
MAX_BUFFERED_EVENTS = 1024

Detailed = Callable[[CallState, ServerRequestContext[Any, Any]], Awaitable[dict[str, Any]]]
"""What ``tasks/get`` answers for a task's state (``BackgroundTasks._detailed``)."""


def _service(ctx: ServerRequestContext[Any, Any]) -> Service:
    app: App = ctx.lifespan_context
    return app.service


class TaskListens:
    """The listen streams with task ids of one server, and what wakes them.

    ``bus`` is the server's subscription bus: a listen stream with task ids also carries what it asked of the rest.
    """

    def __init__(self, bus: SubscriptionBus, detailed: Detailed) -> None:
        self._bus = bus
        self._detailed = detailed
        self._wakes: dict[str, set[anyio.Event]] = {}  # row key or task id -> listen streams waiting on it
        self._streams: dict[str, int] = {}  # tenant -> listen streams with task ids open

    async def listen(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Server middleware: a ``subscriptions/listen`` that names ``notifications.taskIds`` is served here; any other
        request goes on, untouched."""
        raw = ctx.params if isinstance(ctx.params, Mapping) else {}
        wanted = raw.get("notifications")
        if ctx.method != "subscriptions/listen" or not isinstance(wanted, Mapping) or "taskIds" not in wanted:
            return await call_next(ctx)
        if ctx.protocol_version not in VERSIONS:
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
            state = await service.call(task_id, tenant=tenant) if len(task_id) <= MAX_ID_LENGTH else None
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

    def wake(self, name: str) -> None:
        """Wake the streams waiting on this row key or task id (it changed here)."""
        for event in self._wakes.pop(name, set()):
            event.set()
