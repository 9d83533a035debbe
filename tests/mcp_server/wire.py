"""A plain 2026-07-28 JSON-RPC client, over stdio and streamable HTTP: what the SDK's client cannot do (tasks).

Each request carries its own envelope in ``params._meta`` (protocol version, client info, capabilities, and the
extensions it declares: the tasks extension by default). Every message sent and received is kept in ``transcript``.
Used by the tests of ``mcp_server.tasks_extension`` and by ``bench/tasks_poll.py``.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from anyio.abc import Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from tests.loopback import TLS

PROTOCOL = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"
CLIENT_INFO = {"name": "wire-test", "version": "1"}
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
_NAMED = {"tools/call": "name", "resources/read": "uri", "tasks/get": "taskId", "tasks/update": "taskId"}
_NAMED["tasks/cancel"] = "taskId"


class WireError(Exception):
    """A JSON-RPC error answer."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code: int = error.get("code", 0)
        self.message: str = error.get("message", "")
        self.data: Any = error.get("data")


def envelope(extensions: Iterable[str] = (TASKS,)) -> dict[str, Any]:
    """The ``_meta`` of a 2026-07-28 request declaring these extensions."""
    return {
        "io.modelcontextprotocol/protocolVersion": PROTOCOL,
        "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {name: {} for name in extensions}},
    }


class Listening:
    """An open ``subscriptions/listen`` stream: its acknowledgement, then its notifications."""

    def __init__(self, receive: MemoryObjectReceiveStream[dict[str, Any]]) -> None:
        self._receive = receive
        self.ack: dict[str, Any] = {}

    async def next(self, timeout: float = 20) -> dict[str, Any]:
        with anyio.fail_after(timeout):
            return await self._receive.receive()


class Wire:
    """What both transports share: ids, the envelope, the transcript."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.transcript: list[tuple[str, dict[str, Any]]] = []

    def _message(self, method: str, params: dict[str, Any] | None, extensions: Iterable[str]) -> dict[str, Any]:
        body = dict(params or {})
        body["_meta"] = {**envelope(extensions), **body.get("_meta", {})}
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": body}

    async def request(
        self, method: str, params: dict[str, Any] | None = None, *, extensions: Iterable[str] = (TASKS,)
    ) -> dict[str, Any]:
        """The result of one request; WireError for an error answer."""
        message = self._message(method, params, extensions)
        answer = await self._exchange(message)
        if "error" in answer:
            raise WireError(answer["error"])
        return answer["result"]  # type: ignore[no-any-return]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], *, extensions: Iterable[str] = (TASKS,)
    ) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments}, extensions=extensions)

    async def get(self, task_id: str, **kwargs: Any) -> dict[str, Any]:
        return await self.request("tasks/get", {"taskId": task_id}, **kwargs)

    async def poll(
        self, task_id: str, *, until: Sequence[str] = ("completed", "cancelled", "failed")
    ) -> dict[str, Any]:
        """``tasks/get`` every 50 ms (faster than ``pollIntervalMs``: a test) until the status is one of ``until``."""
        with anyio.fail_after(60):
            while (task := await self.get(task_id))["status"] not in until:
                await anyio.sleep(0.05)
        return task

    async def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def listen(
        self, notifications: dict[str, Any], *, extensions: Iterable[str] = (TASKS,)
    ) -> Any:  # an async context manager yielding Listening
        raise NotImplementedError


class StdioWire(Wire):
    """A server process spoken to over its stdin and stdout; one reader routes every answer and notification."""

    def __init__(self, process: Process) -> None:
        super().__init__()
        self.process = process
        self._waiting: dict[int | str, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._streams: dict[int, MemoryObjectSendStream[dict[str, Any]]] = {}
        self.other: list[dict[str, Any]] = []  # notifications no listen stream owns (progress, ...)
        self._send_lock = anyio.Lock()

    @classmethod
    @asynccontextmanager
    async def spawn(cls, command: Sequence[str], env: dict[str, str]) -> AsyncIterator[StdioWire]:
        async with await anyio.open_process(list(command), env=env) as process:
            wire = cls(process)
            async with anyio.create_task_group() as tg:
                tg.start_soon(wire._read)
                try:
                    yield wire
                finally:
                    tg.cancel_scope.cancel()
                    if process.returncode is None:
                        process.kill()

    async def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.transcript.append(("->", message))
        async with self._send_lock:
            await self.process.stdin.send((json.dumps(message) + "\n").encode())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    await self._route(json.loads(line))

    async def _route(self, message: dict[str, Any]) -> None:
        self.transcript.append(("<-", message))
        if "id" in message and "method" not in message:
            stream = self._waiting.pop(message["id"], None) or self._streams.pop(message["id"], None)
            if stream is not None:
                await stream.send(message)
            return
        subscription = ((message.get("params") or {}).get("_meta") or {}).get(SUBSCRIPTION_ID)
        stream = self._streams.get(subscription) if subscription is not None else None
        if stream is not None:
            await stream.send(message)
        else:
            self.other.append(message)

    async def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._waiting[message["id"]] = send
        await self._send(message)
        with anyio.fail_after(60):
            return await receive.receive()

    async def exchange_line(self, line: str, ident: int | str) -> dict[str, Any]:
        """The answer to a request written as exactly this line (whose id is ``ident``), error answers included."""
        assert self.process.stdin is not None
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._waiting[ident] = send
        self.transcript.append(("->", {"line": line}))
        async with self._send_lock:
            await self.process.stdin.send(line.encode() + b"\n")
        with anyio.fail_after(60):
            return await receive.receive()

    @asynccontextmanager
    async def listen(
        self, notifications: dict[str, Any], *, extensions: Iterable[str] = (TASKS,)
    ) -> AsyncIterator[Listening]:
        """Open a listen stream; WireError if it is refused. Closed (``notifications/cancelled``) on the way out."""
        message = self._message("subscriptions/listen", {"notifications": notifications}, extensions)
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        self._streams[message["id"]] = send
        await self._send(message)
        listening = Listening(receive)
        first = await listening.next()
        if "error" in first:
            raise WireError(first["error"])
        listening.ack = first
        try:
            yield listening
        finally:
            self._streams.pop(message["id"], None)
            await self._send(
                {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": message["id"]}}
            )


class HttpWire(Wire):
    """Streamable HTTP: one POST per request, with the routing headers; a JSON or an event-stream answer."""

    def __init__(self, url: str, token: str | None = None, http: httpx.AsyncClient | None = None) -> None:
        super().__init__()
        self.url = url
        self.headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.http = http or httpx.AsyncClient(timeout=60, verify=TLS)

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self, message: dict[str, Any]) -> dict[str, str]:
        headers = self.headers | {"MCP-Protocol-Version": PROTOCOL, "Mcp-Method": message["method"]}
        named = _NAMED.get(message["method"])
        if named is not None and isinstance(value := message["params"].get(named), str):
            headers["Mcp-Name"] = value
        return headers

    async def _exchange(self, message: dict[str, Any]) -> dict[str, Any]:
        self.transcript.append(("->", message))
        async with self.http.stream("POST", self.url, json=message, headers=self._headers(message)) as response:
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                async for event in _events(response):
                    self.transcript.append(("<-", event))
                    if event.get("id") == message["id"] and "method" not in event:
                        return event
                raise AssertionError("the event stream ended without an answer")
            body = await response.aread()
        if response.status_code >= 400 and not body.startswith(b"{"):
            raise AssertionError(f"HTTP {response.status_code}: {body[:300]!r}")
        answer: dict[str, Any] = json.loads(body)
        self.transcript.append(("<-", answer))
        return answer

    @asynccontextmanager
    async def listen(
        self, notifications: dict[str, Any], *, extensions: Iterable[str] = (TASKS,)
    ) -> AsyncIterator[Listening]:
        """Open a listen stream (a POST whose answer is an event stream); closed by disconnecting."""
        message = self._message("subscriptions/listen", {"notifications": notifications}, extensions)
        self.transcript.append(("->", message))
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
        listening = Listening(receive)
        async with self.http.stream("POST", self.url, json=message, headers=self._headers(message)) as response:
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                answer = json.loads(await response.aread())
                self.transcript.append(("<-", answer))
                raise WireError(answer["error"])
            async with anyio.create_task_group() as tg:

                async def pump() -> None:
                    async for event in _events(response):
                        self.transcript.append(("<-", event))
                        await send.send(event)

                tg.start_soon(pump)
                first = await listening.next()
                if "error" in first:
                    raise WireError(first["error"])
                listening.ack = first
                try:
                    yield listening
                finally:
                    tg.cancel_scope.cancel()


async def _events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON-RPC messages of an event stream (``data:`` lines; comments and other fields skipped)."""
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif not line and data:
            yield json.loads("\n".join(data))
            data = []
