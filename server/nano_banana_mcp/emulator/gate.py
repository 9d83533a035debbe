"""The gate every request passes before the endpoints: it records the request, notes a create's idempotency key
(even when the create is then refused), and applies latency, auth and the per-request faults to ``/api/v1``."""

from __future__ import annotations

import json
import secrets
from collections import deque
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nano_banana_mcp.emulator.control import CONTROL_PREFIX
from nano_banana_mcp.emulator.state import Endpoint, RequestRecord
from nano_banana_mcp.emulator.wire import API_PREFIX, ConnectionAborted, error

if TYPE_CHECKING:
    from nano_banana_mcp.emulator.app import Emulator
    from nano_banana_mcp.emulator.faults import FaultInjector

__all__ = ["Gate", "caller_key"]

_CREATE_PATHS: dict[str, Endpoint] = {f"{API_PREFIX}/tasks/async": "async", f"{API_PREFIX}/tasks/sync": "sync"}
_CALLER_SCOPE_KEY = "nano_banana.api_key"
"""Where the gate leaves the accepted API key of an ``/api/v1`` request, for the endpoints that count by key."""


def caller_key(request: Request) -> str:
    """The API key the gate accepted for this request ("" if it checked none)."""
    return str(request.scope.get(_CALLER_SCOPE_KEY, ""))


class Gate:
    """ASGI middleware: records every request and create key, and applies auth, latency and per-request faults."""

    def __init__(self, app: ASGIApp, emulator: Emulator, faults: FaultInjector) -> None:
        self.app = app
        self.emulator = emulator
        self.faults = faults

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
                emulator.state.key_endpoints.setdefault(key, set()).add(endpoint)
        record: RequestRecord | None = None

        async def recording_send(message: Message) -> None:
            nonlocal record
            if message["type"] == "http.response.start":
                # Recorded before the client can see the answer, so tests never race the record.
                record = RequestRecord(scope["method"], scope["path"], message["status"])
                emulator.state.requests.append(record)
            await send(message)

        try:
            refusal = await self._refusal(scope)
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
                emulator.state.requests.append(RequestRecord(scope["method"], scope["path"], 500))

    async def _refusal(self, scope: Scope) -> Response | None:
        """Latency, auth and per-request faults for ``/api/v1``; None lets the request through."""
        path: str = scope["path"]
        if path != API_PREFIX and not path.startswith(f"{API_PREFIX}/"):
            return None
        await self.faults.delay()
        if echoed := self.faults.echo(scope):
            return echoed
        key = self._accepted_key(Headers(scope=scope))
        if key is None:
            return error(401, "unauthorized", "Invalid or missing API key")
        scope[_CALLER_SCOPE_KEY] = key
        return self.faults.refusal(scope)

    def _accepted_key(self, headers: Headers) -> str | None:
        """The accepted key a request's ``Authorization: Bearer`` header carries, else None."""
        scheme, _, token = headers.get("authorization", "").partition(" ")
        presented = token.strip().encode()
        found = None
        for key in (self.emulator.api_key, *self.emulator.extra_keys):
            if secrets.compare_digest(presented, key.encode()):
                found = key
        return found if scheme.lower() == "bearer" else None


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
