"""The HTTP side of :mod:`~nano_banana_mcp.mcp_server.tasks_polls`: a plain ``tasks/get`` POST answered before the
SDK's streamable-HTTP handler, after its authentication (the bearer token checked, the tenant known).

It sits where the SDK's handler is (``StreamableHTTPASGIApp``, inside ``RequireAuthMiddleware``) and runs the
handler's own steps for a 2026-07-28 POST (``mcp/server/_streamable_http_modern.py``, ``handle_modern_request``, mcp
2.3), with the SDK's functions where it has them: the transport security check (Content-Type, Host, Origin), the
Accept header, the body parsed as one JSON-RPC request, no routing header given twice, the envelope classified with
the headers (``MCP-Protocol-Version``, ``Mcp-Method``, ``Mcp-Name``). A request any step would refuse, or that the
shortcut does not answer, goes on to the SDK's handler untouched (its body replayed), and is answered there. The
answer is written as that handler writes a result: ``application/json``, status 200.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.inbound import find_duplicated_routing_header
from mcp_types import JSONRPCRequest, JSONRPCResponse
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.mcp_server.tasks_polls import METHOD, TaskPolls
from nano_banana_mcp.mcp_server.tasks_state import VERSIONS

__all__ = ["MAX_BODY", "install"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
"""A larger body (or one without a Content-Length) is no plain ``tasks/get``: the SDK reads it."""
_METHOD = METHOD.encode()
_VERSIONS = frozenset(v.encode() for v in VERSIONS)


def install(app: Starlette, polls: TaskPolls, path: str = "/mcp") -> bool:
    """Put the shortcut in front of the SDK's handler of ``path`` in ``app`` (made by ``streamable_http_app``); False
    when the app is not laid out as the SDK lays it out (nothing is changed: every request reaches the SDK)."""
    for route in app.routes:
        if isinstance(route, Route) and route.path == path:
            holder: Any = route.app if isinstance(route.app, RequireAuthMiddleware) else route
            if isinstance(holder.app, StreamableHTTPASGIApp):
                holder.app = _PollsApp(holder.app, polls)
                return True
    return False


class _PollsApp:
    """The SDK's handler, with the plain ``tasks/get`` answered first."""

    def __init__(self, inner: StreamableHTTPASGIApp, polls: TaskPolls) -> None:
        self._inner = inner
        self._polls = polls
        manager = inner.session_manager
        self._security = TransportSecurityMiddleware(manager.security_settings)
        self._json_response = manager.json_response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._candidate(scope):
            await self._inner(scope, receive, send)
            return
        messages: list[Message] = []
        body = b""
        while True:  # at most MAX_BODY bytes (the Content-Length said so)
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            if not message.get("more_body", False) or len(body) > MAX_BODY:
                break
        try:
            answer = await self._answer(scope, receive, body) if messages[-1]["type"] == "http.request" else None
        except Exception:  # a bug here must not cost the request: the SDK's handler answers it
            log.exception("tasks/get shortcut failed; the SDK's handler answers")
            answer = None
        if answer is None:
            await self._inner(scope, _replay(messages, receive), send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    @staticmethod
    def _candidate(scope: Scope) -> bool:
        """A POST of a 2026-07-28 ``tasks/get`` with a small body, by its headers (the rest is checked on its body)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return False
        method = version = length = None
        for name, value in scope["headers"]:
            if name == b"mcp-method":
                method = value
            elif name == b"mcp-protocol-version":
                version = value
            elif name == b"content-length":
                length = value
        return (
            method == _METHOD
            and version in _VERSIONS
            and length is not None
            and length.isdigit()
            and int(length) <= MAX_BODY
        )

    async def _answer(self, scope: Scope, receive: Receive, body: bytes) -> bytes | None:
        """The response body for this POST, when the shortcut answers it; None: the SDK's handler serves it."""
        request = Request(scope, receive)
        if await self._security.validate_request(request, is_post=True) is not None:
            return None
        has_json, has_sse = check_accept_headers(request)
        if not has_json or not (self._json_response or has_sse):
            return None
        try:
            decoded = json.loads(body)
            if not isinstance(decoded, dict) or "id" not in decoded:
                return None  # a notification, or not one request
            message = JSONRPCRequest.model_validate(decoded)
        except (ValueError, RecursionError, ValidationError):
            return None
        headers = request.headers
        if find_duplicated_routing_header(headers.items()) is not None:
            return None
        result = await self._polls.answer(message, tenant_of(), dict(headers))  # as the handler classifies it
        if result is None:
            return None
        wire = JSONRPCResponse(jsonrpc="2.0", id=message.id, result=result).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        return json.dumps(wire, separators=(",", ":")).encode()


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` for the SDK's handler: the messages already read, then the rest."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
