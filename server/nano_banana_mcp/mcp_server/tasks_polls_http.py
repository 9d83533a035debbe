"""The HTTP side of :mod:`~nano_banana_mcp.mcp_server.tasks_polls`: a plain ``tasks/get`` POST answered in front of
the app's middleware and router, with the SDK's own authentication.

A host polls every task it carries each second or so; over HTTP, most of a poll's CPU was the layers it crossed
before anything read the ledger: Starlette's middleware stack and router, the SDK's authentication middlewares, and
the SDK's handler. So the shortcut (:class:`PollsGate`) is the app's outermost middleware (:class:`PollsFront`, just
inside Starlette's error handler), and, where uvicorn's httptools protocol serves the app, the protocol itself
(:mod:`~nano_banana_mcp.mcp_server.tasks_polls_uvicorn`). It does what those layers do for such a request, with
their own objects and functions (mcp 2.3):

- the route: only a POST to the SDK's path (``/mcp``), which its router gives the SDK's handler;
- authentication: the very ``BearerAuthBackend`` of the app's ``AuthenticationMiddleware`` (same token verifier,
  same expiry and resource checks), then ``RequireAuthMiddleware``'s rule (an authenticated user with the required
  scopes); the user is bound to the request as ``AuthContextMiddleware`` binds it, and the tenant read from it
  (:func:`~nano_banana_mcp.mcp_server.http.tenant_of`). A server without auth (``--no-auth``) has none of these;
- the handler's steps for a 2026-07-28 POST (``_streamable_http_modern.py``, ``handle_modern_request``): the transport
  security check (Content-Type, Host, Origin), the Accept header, the body parsed as one JSON-RPC request, no routing
  header given twice, the envelope classified with the headers (``MCP-Protocol-Version``, ``Mcp-Method``,
  ``Mcp-Name``).

A request any step would refuse (no token, a wrong or expired one, a foreign Host...), or that the shortcut does not
answer, goes on to the app untouched (its body replayed), and the SDK answers it as if there were no shortcut: its
401, its 421, its -32602. The answer given here is written as the handler writes a result: ``application/json``,
status 200. The SDK's checks read only a request's headers, so they are handed the headers as a plain mapping
(:class:`_HeadersOnly`), read once from the ASGI scope, rather than Starlette's ``Headers``, which decodes and scans
the raw list at every look-up. Those of its checks that are coroutines but never wait are run to their end at once
(:func:`at_once`), so that the protocol can answer without a task of its own.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser, BearerAuthBackend, RequireAuthMiddleware
from mcp.server.streamable_http import check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.inbound import find_duplicated_routing_header
from mcp_types import JSONRPCRequest
from pydantic import ValidationError
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route

from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.mcp_server.tasks_polls import METHOD, TaskPolls
from nano_banana_mcp.mcp_server.tasks_state import VERSIONS

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["MAX_BODY", "PollsFront", "PollsGate", "at_once", "gate_of", "install"]

log = logging.getLogger(__name__)

MAX_BODY = 16 * 1024
"""A larger body (or one without a Content-Length) is no plain ``tasks/get``: the SDK reads it."""
_METHOD = METHOD.encode()
_VERSIONS = frozenset(v.encode() for v in VERSIONS)
_T = TypeVar("_T")
_REFUSED = False
"""What :meth:`PollsGate._user` says when the SDK's auth would not let the request through."""

_GATES: weakref.WeakKeyDictionary[Any, PollsGate] = weakref.WeakKeyDictionary()


def gate_of(app: Any) -> PollsGate | None:
    """The shortcut installed in front of ``app`` (:func:`install`), if any."""
    return _GATES.get(app)


def install(app: Starlette, polls: TaskPolls, path: str = "/mcp", *, auth_at_once: bool = False) -> bool:
    """Put the shortcut in front of ``app`` (made by ``streamable_http_app``, not started yet), for POSTs to ``path``;
    False when the app is not laid out as the SDK lays it out (nothing is changed: every request reaches the SDK).
    ``auth_at_once``: the token verifier never waits (no network), so the protocol may answer without a task."""
    route = None
    for candidate in app.routes:  # in the router's order: no route before the SDK's may match its path
        if not isinstance(candidate, Route) or "{" in candidate.path:
            return False
        if candidate.path == path:
            route = candidate
            break
    if route is None:
        return False
    required = route.app.required_scopes if isinstance(route.app, RequireAuthMiddleware) else None
    handler = route.app.app if isinstance(route.app, RequireAuthMiddleware) else route.app
    backends = [m.kwargs.get("backend") for m in app.user_middleware if cast("Any", m.cls) is AuthenticationMiddleware]
    backend = backends[0] if len(backends) == 1 else None
    if not isinstance(handler, StreamableHTTPASGIApp) or (required is None) != (not backends):
        return False  # not the SDK's handler, or auth laid out otherwise (required without a backend, or the reverse)
    if not isinstance(backend, BearerAuthBackend | None) or (backends and backend is None):
        return False
    gate = PollsGate(polls, path, handler, backend, required, auth_at_once=auth_at_once or backend is None)
    app.add_middleware(PollsFront, gate=gate)
    _GATES[app] = gate
    return True


def at_once(coroutine: Coroutine[Any, Any, _T]) -> _T:
    """What ``coroutine`` returns, run on this thread now; ``BlockingIOError`` (the coroutine closed) if it waits."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast("_T", done.value)
    coroutine.close()
    raise BlockingIOError("the coroutine waits")


class _HeadersOnly:
    """What the SDK's header checks read of a request (``.headers``: ``get`` and iteration), as a plain mapping."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers


class PollsGate:
    """The checks and the answer of the shortcut, for the ASGI middleware (awaiting) and the protocol (at once)."""

    def __init__(
        self,
        polls: TaskPolls,
        path: str,
        handler: StreamableHTTPASGIApp,
        backend: BearerAuthBackend | None,
        required: list[str] | None,
        *,
        auth_at_once: bool,
    ) -> None:
        self.polls = polls
        self.path = path
        self.auth_at_once = auth_at_once
        """Whether :meth:`answer_now` may run the authentication (it never waits)."""
        self._backend = backend
        self._required = required or []
        manager = handler.session_manager
        self._security = TransportSecurityMiddleware(manager.security_settings)
        self._json_response = manager.json_response

    def candidate(self, scope: Mapping[str, Any]) -> bool:
        """A POST to the SDK's path of a 2026-07-28 ``tasks/get`` with a small body, by its headers (the rest is
        checked on its body)."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path or scope.get("root_path"):
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

    async def answer(self, scope: Scope, body: bytes) -> bytes | None:
        """The response body for this POST (a candidate), when the shortcut answers it; None: the app serves it."""
        request, pairs = _request(scope)
        user = await self._user(request)
        message = self._checked(request, pairs, body) if user is not _REFUSED else None
        if message is None:
            return None
        bound = auth_context_var.set(cast("AuthenticatedUser | None", user))  # as AuthContextMiddleware binds it
        try:
            return await self.polls.answer(message, tenant_of(), request.headers)  # as the handler classifies it
        finally:
            auth_context_var.reset(bound)

    def answer_now(self, scope: Mapping[str, Any], body: bytes) -> bytes | None:
        """:meth:`answer`, on this thread without waiting; None: the app serves it (as it does whatever would wait:
        a token verifier that may, a ledger that reads asynchronously or is busy)."""
        if not self.auth_at_once:
            return None
        request, pairs = _request(scope)
        try:
            user = at_once(self._user(request))
        except BlockingIOError:
            return None
        message = self._checked(request, pairs, body) if user is not _REFUSED else None
        if message is None:
            return None
        bound = auth_context_var.set(cast("AuthenticatedUser | None", user))
        try:
            return self.polls.answer_now(message, tenant_of(), request.headers)
        finally:
            auth_context_var.reset(bound)

    async def _user(self, request: Request) -> AuthenticatedUser | bool | None:
        """The authenticated user, as ``AuthenticationMiddleware`` and ``RequireAuthMiddleware`` would let it through
        (None: the server has no auth); ``_REFUSED``: they would not (the SDK answers, 401 or 403)."""
        if self._backend is None:
            return None
        found: Any = await self._backend.authenticate(request)
        if found is None or not isinstance(found[1], AuthenticatedUser):
            return _REFUSED
        credentials, user = found
        if any(scope not in credentials.scopes for scope in self._required):
            return _REFUSED
        return cast("AuthenticatedUser", user)

    def _checked(self, request: Request, pairs: list[tuple[str, str]], body: bytes) -> JSONRPCRequest | None:
        """The request, when the handler's steps before its dispatch would let it through; else None."""
        try:
            if at_once(self._security.validate_request(request, is_post=True)) is not None:
                return None
        except BlockingIOError:
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
        if find_duplicated_routing_header(pairs) is not None:
            return None
        return message


def _request(scope: Mapping[str, Any]) -> tuple[Request, list[tuple[str, str]]]:
    """The request as the SDK's checks read it, and its headers in order (repeats kept)."""
    pairs = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
    headers = dict(reversed(pairs))  # the first of a repeated header, as Starlette's ``Headers.get`` reads it
    return cast("Request", _HeadersOnly(headers)), pairs


class PollsFront:
    """The app (Starlette's middleware stack and router, the SDK's auth and handler), with the plain ``tasks/get``
    answered first."""

    def __init__(self, app: ASGIApp, *, gate: PollsGate) -> None:
        self._app = app
        self._gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._gate.candidate(scope):
            await self._app(scope, receive, send)
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
            answer = await self._gate.answer(scope, body) if messages[-1]["type"] == "http.request" else None
        except Exception:  # a bug here must not cost the request: the app answers it
            log.exception("tasks/get shortcut failed; the SDK's handler answers")
            answer = None
        if answer is None:
            await self._app(scope, _replay(messages, receive), send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode()), (b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive`` for the app: the messages already read, then the rest."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
