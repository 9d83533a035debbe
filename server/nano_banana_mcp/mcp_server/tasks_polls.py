"""``tasks/get`` of a working task answered ahead of the SDK's request pipeline: the poll a host repeats for every task.

A host polls ``tasks/get`` for every task it carries, every ``pollIntervalMs``: 1,000 tasks in flight are about 1,000
requests a second. Through the SDK (mcp 2.3) each cost ~0.33 ms of CPU over stdio and ~0.8 ms over HTTP
(``bench/tasks_poll.py``): a task and a cancel scope per request, the dispatcher's streams, per-request connection,
session and context objects, five middlewares, and the answer validated and dumped through pydantic models; this
package's own part (one ledger read, the task object) was under 0.1 ms.

Nearly every such poll is the plain case: a well-formed 2026-07-28 request that declares the extension, for one of
the caller's own tasks, still working (or cancelled). That case is answered here, by the transport
(:mod:`~nano_banana_mcp.mcp_server.stdio` as it reads the line; over HTTP in front of the app's middleware, with the
SDK's own authentication, :mod:`~nano_banana_mcp.mcp_server.tasks_polls_http`, and under ``serve --http`` by uvicorn's
protocol itself, :mod:`~nano_banana_mcp.mcp_server.tasks_polls_uvicorn`), with the very object the extension answers
(``tasks_state.open_task``). Anything
else goes on to the SDK, untouched: an unknown or another tenant's id, a completed task (its result is built with the
request at hand), a request without the extension, a malformed one, another protocol version, a 2025-era connection.
So every error is the SDK's own, word for word, and only answers the SDK would give the same are given here.

The checks are the SDK's, in its order, with its own functions: the message parsed by the SDK's JSON-RPC adapter
(stdio) or the HTTP handler's own steps (:mod:`~nano_banana_mcp.mcp_server.tasks_polls_http`); the envelope through
``classify_inbound_request`` (with the headers on HTTP); the client's capabilities as ``Connection.from_envelope``
types them; the version gate of the extension's methods; ``TaskParams`` validated as the SDK validates a handler's
params. The answer is stamped with ``serverInfo`` as the SDK stamps every 2026 result.
``tests/mcp_server/test_tasks_polls.py`` compares the two paths answer by answer.

What a poll costs now (``bench/README.md``, "MCP tasks under load"): about 0.12 ms of CPU over stdio and 0.19 ms
over HTTP on SQLite, where the system calls of a message, uvicorn's parsing, the SDK's checks and one SQLite read are
most of it. Each task's answer is kept as JSON until what it is made of changes (:func:`_made_of`).

What the shortcut leaves out: the SDK's request span (``OpenTelemetryMiddleware``, a no-op unless a tracer provider
is installed) and its debug logging. The other middlewares of this server (MCP Apps, image types, task listens,
request state) do nothing to a ``tasks/get``.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Mapping
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.shared.inbound import InboundModernRoute, classify_inbound_request
from mcp_types import SERVER_INFO_META_KEY, ClientCapabilities, JSONRPCRequest
from pydantic import ValidationError

from nano_banana_mcp.mcp_server.tasks_state import (
    MAX_ID_LENGTH,
    VERSIONS,
    TaskParams,
    extensions_declare_tasks,
    open_task,
)
from nano_banana_mcp.memo import Memo
from nano_banana_mcp.tasks import CallState, Service

__all__ = ["METHOD", "TaskPolls", "polls_of"]

METHOD = "tasks/get"
_KEPT = 4096
"""Answers kept as JSON (one per task, the latest): more than a host carries at once; past that they are dropped."""

log = logging.getLogger(__name__)

_POLLS: weakref.WeakKeyDictionary[MCPServer[Any], TaskPolls] = weakref.WeakKeyDictionary()


def polls_of(mcp: MCPServer[Any]) -> TaskPolls | None:
    """The shortcut of a server made by ``create_server``; None for any other server."""
    return _POLLS.get(mcp)


class TaskPolls:
    """Answers the plain ``tasks/get`` of one server; inert until its lifespan has started (:meth:`bind`)."""

    def __init__(self, mcp: MCPServer[Any]) -> None:
        self._service: Service | None = None
        self._stamp: dict[str, Any] = {}
        self._written: Memo[str, bytes | None] = Memo(_KEPT)
        """Each task's latest answer as JSON (None once completed: the SDK builds that one), with what it was made of
        (:func:`_made_of`): a host asks again every second, and the answer changes a few times in a task's life."""
        self._mcp = mcp
        _POLLS[mcp] = self

    def bind(self, service: Service) -> None:
        """Serve from this service (the server's lifespan has started); ``unbind`` when it stops."""
        lowlevel = self._mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        self._stamp = lowlevel.server_info_stamp  # what the SDK stamps on every 2026 result (fixed at construction)
        self._service = service

    def unbind(self) -> None:
        self._service = None
        self._written.clear()

    def params(self, request: JSONRPCRequest, headers: Mapping[str, str] | None = None) -> TaskParams | None:
        """The params of a ``tasks/get`` this shortcut may answer (the SDK would serve it with no error on the way);
        None for any other request. ``headers``: the HTTP request's, lower-case (checked against the envelope)."""
        params = request.params
        if request.method != METHOD or self._service is None or not isinstance(params, dict):
            return None
        route = classify_inbound_request({"method": METHOD, "params": params}, headers=headers)
        if not isinstance(route, InboundModernRoute) or route.protocol_version not in VERSIONS:
            return None  # a rejection of the envelope, or a version the extension's methods are not served at
        try:
            capabilities = ClientCapabilities.model_validate(route.client_capabilities, by_name=False)
            typed = TaskParams.model_validate(params, by_name=False)
        except ValidationError:
            return None  # capabilities the SDK reads as none (-32021), or params it refuses (-32602)
        if not extensions_declare_tasks(capabilities.extensions) or len(typed.task_id) > MAX_ID_LENGTH:
            return None
        return typed

    def answer_now(
        self, request: JSONRPCRequest, tenant: str, headers: Mapping[str, str] | None = None
    ) -> bytes | None:
        """The JSON-RPC response to this request, read without waiting (on the event loop: stdio, and HTTP's
        protocol); None: the SDK serves it."""
        typed = self.params(request, headers)
        if typed is None or self._service is None:
            return None
        try:
            state = self._service.call_now(typed.task_id, tenant=tenant)
        except BlockingIOError:  # PostgreSQL, or SQLite busy: the SDK's path reads, waiting as it must
            return None
        return self._response(request, state)

    async def answer(
        self, request: JSONRPCRequest, tenant: str, headers: Mapping[str, str] | None = None
    ) -> bytes | None:
        """The JSON-RPC response to this request (HTTP: a task of its own already); None: the SDK serves it."""
        typed = self.params(request, headers)
        service = self._service
        if typed is None or service is None:
            return None
        return self._response(request, await service.call(typed.task_id, tenant=tenant))

    def _response(self, request: JSONRPCRequest, state: CallState | None) -> bytes | None:
        """The response as the SDK writes a result (``JSONRPCResponse``, compact JSON), the result made again only
        when what it is made of changed (:func:`_made_of`)."""
        if state is None:
            return None  # unknown or not the caller's: the SDK's -32602
        written = self._written.get(state.call.id, _made_of(state), lambda: self._json(state))
        if written is None:
            return None  # completed: the SDK builds the result
        log.debug("tasks/get of %s… answered ahead of the SDK", state.call.id[:6])
        return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (json.dumps(request.id).encode(), written)

    def _json(self, state: CallState) -> bytes | None:
        """The result as JSON; None once the task is completed."""
        service = self._service
        task = open_task(state, service) if service is not None else None
        if task is None:
            return None
        result = {"resultType": "complete", **task, "_meta": {SERVER_INFO_META_KEY: dict(self._stamp)}}
        return json.dumps(result, separators=(",", ":")).encode()


def _made_of(state: CallState) -> tuple[Any, ...]:
    """Everything of a task its open answer (``tasks_state.open_task``) is made of: the call's times and each row's
    state (a row's request, key and tenant never change). The id was matched to the caller's tenant before."""
    rows = tuple((r.key, r.phase, r.api_status, r.progress, r.error, r.task_id, r.updated_at) for r in state.records)
    return state.call.created_at, state.call.cancelled_at, rows
