"""The stdio transport, answering a request the SDK cannot read instead of leaving its client waiting.

The SDK's stdio reader (mcp 2.3, ``mcp/server/stdio.py``) turns a line it cannot read (a lone surrogate,
a 5,000-digit number, nesting too deep) into an exception item, which its dispatcher only logs at debug
level (``mcp/shared/jsonrpc_dispatcher.py``): a client whose request was unreadable waits forever
(https://github.com/modelcontextprotocol/python-sdk/issues/2751, fix proposed in
https://github.com/modelcontextprotocol/python-sdk/pull/2766). Here such a line is answered with a
JSON-RPC error for the request's id when the id can be recovered, and only logged otherwise: answering a
line with no id (a stray log line on the other side) can start an error storm between two peers
(https://github.com/modelcontextprotocol/rust-sdk/issues/938).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self, cast

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp_types import (
    INVALID_REQUEST,
    PARSE_ERROR,
    PROTOCOL_VERSION_META_KEY,
    ErrorData,
    JSONRPCError,
    JSONRPCRequest,
    jsonrpc_message_adapter,
)
from pydantic import ValidationError

from nano_banana_mcp.mcp_server.tasks_polls import METHOD, TaskPolls, polls_of
from nano_banana_mcp.tasks import DEFAULT_TENANT

if sys.platform != "win32":
    import fcntl

__all__ = ["answer_unreadable", "request_id_of", "serve_stdio"]

log = logging.getLogger(__name__)

_ID = re.compile(r'"id"\s*:\s*(-?\d{1,15}(?![\d.eE])|"(?:[^"\\]|\\.){0,200}")')
"""A top-level-looking ``"id"`` member of a line that did not parse: a number or a short string."""
_VERSION_KEY = PROTOCOL_VERSION_META_KEY  # only 2026-07-28 requests carry it: it opens a modern connection


def request_id_of(err: Exception) -> str | int | None:
    """The id of the request a read error is about, when it can be told; None otherwise."""
    if not isinstance(err, ValidationError):
        return None
    for problem in err.errors(include_url=False):
        raw: Any = problem.get("input")
        if isinstance(raw, dict):
            value = raw.get("id")
            if isinstance(value, str | int) and not isinstance(value, bool):
                return value
            return None
        if isinstance(raw, str) and raw.lstrip().startswith("{"):
            match = _ID.search(raw[:4096])
            if match is None:
                return None
            token = match.group(1)
            return token[1:-1] if token.startswith('"') else int(token)
    return None


def answer_unreadable(err: Exception) -> SessionMessage | None:
    """The error to send for an unreadable request, or None when it names no id (it is only logged)."""
    request_id = request_id_of(err)
    if request_id is None:
        log.warning("ignored an unreadable message on stdin (%s)", type(err).__name__)
        return None
    not_json = isinstance(err, ValidationError) and any(p["type"] == "json_invalid" for p in err.errors())
    code, what = (PARSE_ERROR, "Parse error") if not_json else (INVALID_REQUEST, "Invalid request")
    log.warning("answered unreadable request %r with %s", request_id, what)
    error = ErrorData(code=code, message=f"{what}: the server could not read this request.")
    return SessionMessage(JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


class _Answering:
    """A read stream that answers unreadable requests on ``write`` and passes everything else through."""

    def __init__(self, inner: Any, write: Any) -> None:
        self._inner = inner
        self._write = write

    @property
    def last_context(self) -> Any:  # the SDK reads the sender's context from here
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item  # type: ignore[no-any-return]
            answer = answer_unreadable(item)
            if answer is not None:
                await self._write.send(answer)

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None


class _PipeLines:
    """The lines of a pipe, read on the event loop as it becomes readable: no worker thread per line.

    With ``shortcut`` (:class:`_Polls`), a line it answers is answered here, on ``writer``, and never reaches the SDK.
    """

    def __init__(self, fd: int, writer: _PipeWriter) -> None:
        self._fd = fd
        self._writer = writer
        self._parts: list[bytes] = []  # the line being read
        self._lines: deque[str] = deque()
        self.shortcut: _Polls | None = None
        self._answered = 0  # answered here since the last checkpoint
        self._loop: asyncio.AbstractEventLoop | None = None  # where the pipe stays registered (asyncio only)
        self._waiter: asyncio.Future[None] | None = None

    async def _readable(self) -> None:
        """Until the pipe is readable. On asyncio the pipe stays registered with the loop while it is read (anyio's
        ``wait_readable`` registers and unregisters it at every wait: two system calls a line); it is unregistered
        only while nobody waits, so that a client sending faster than the server reads never spins the loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # another event loop (trio): anyio's way
            await anyio.wait_readable(self._fd)
            return
        self._waiter = loop.create_future()
        if self._loop is None:
            loop.add_reader(self._fd, self._wake)
            self._loop = loop
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif waiter is None and self._loop is not None:  # nobody reads now: wait to be asked again
            self._loop.remove_reader(self._fd)
            self._loop = None

    def close(self) -> None:
        """Unregister the pipe from the loop (serving has ended)."""
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str:
        while True:
            line = await self._line()
            answer = self.shortcut.answer(line) if self.shortcut is not None else None
            if answer is None:
                self._answered = 0
                await self._writer.drain()  # answers held for the rest of a burst
                return line
            self._writer.put(answer, hold=bool(self._lines))  # a burst's answers: one write
            await self._writer.drain()  # the client reads its answers before more of its lines are read
            self._answered += 1
            if self._answered >= _ANSWERS_PER_CHECKPOINT:  # a client that keeps the pipe full starves no one
                self._answered = 0
                await anyio.lowlevel.checkpoint()

    async def _line(self) -> str:
        while not self._lines:
            try:
                chunk = os.read(self._fd, _CHUNK)
            except BlockingIOError:
                await self._readable()
                continue
            if not chunk:  # end of input: a last line without its newline, then the end
                if not self._parts:
                    raise StopAsyncIteration
                self._lines.append(b"".join(self._parts).decode("utf-8", errors="replace"))
                self._parts = []
                break
            start = 0
            while (end := chunk.find(b"\n", start)) >= 0:
                self._parts.append(chunk[start : end + 1])
                self._lines.append(b"".join(self._parts).decode("utf-8", errors="replace"))
                self._parts, start = [], end + 1
            if start < len(chunk):
                self._parts.append(chunk[start:])
        return self._lines.popleft()


class _PipeWriter:
    """Writes to a pipe on the event loop: no worker thread per message. A message is written at once when the pipe
    takes it (one system call); what it does not take waits, in order, and whoever writes next waits for it to
    drain: the SDK's writer and the shortcut's answers never interleave."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending = bytearray()
        self._draining = anyio.Lock()

    def put(self, data: bytes, *, hold: bool = False) -> None:
        """Write ``data`` after anything still pending; what the pipe does not take now is kept for :meth:`drain`.
        ``hold``: keep it for the next write or :meth:`drain` (more is about to follow: one system call for all)."""
        if hold:
            self._pending += data
            return
        if not self._pending:
            try:
                written = os.write(self._fd, data)
            except BlockingIOError:
                written = 0
            if written == len(data):
                return
            data = data[written:]
        self._pending += data

    async def drain(self) -> None:
        """Until everything put has been written."""
        if not self._pending:
            return
        with contextlib.suppress(BlockingIOError):  # most often the pipe takes it all at once
            del self._pending[: os.write(self._fd, self._pending)]
        if not self._pending:
            return
        async with self._draining:
            while self._pending:
                try:
                    written = os.write(self._fd, self._pending)
                except BlockingIOError:
                    await anyio.wait_writable(self._fd)
                    continue
                del self._pending[:written]

    async def write(self, text: str) -> None:
        self.put(text.encode("utf-8"))
        await self.drain()

    async def flush(self) -> None:
        """Nothing is buffered here once :meth:`write` returns."""


class _Polls:
    """The stdio side of :mod:`~nano_banana_mcp.mcp_server.tasks_polls`: a ``tasks/get`` line it may answer is answered
    as it is read, once the connection is a 2026-07-28 one (decided by the first request, as the SDK decides it:
    ``mcp/server/runner.py``, ``serve_dual_era_loop``); the answer is written as the SDK writes a result (compact
    JSON)."""

    def __init__(self, polls: TaskPolls) -> None:
        self._polls = polls
        self._modern: bool | None = None  # None until the first request

    def answer(self, line: str) -> bytes | None:
        """The line of the response, as it is written; None: the SDK serves the request."""
        if self._modern is False or (self._modern and METHOD not in line):
            return None
        try:
            message = jsonrpc_message_adapter.validate_json(line, by_name=False)  # as the SDK's reader parses it
        except ValidationError:
            return None  # the SDK's reader says so (answer_unreadable)
        if not isinstance(message, JSONRPCRequest):
            return None
        if self._modern is None:
            meta = (message.params or {}).get("_meta")
            self._modern = message.method != "initialize" and isinstance(meta, dict) and _VERSION_KEY in meta
            return None  # the opening request decides the era; the SDK serves it
        try:
            result = self._polls.answer_now(message, DEFAULT_TENANT)
        except Exception:  # a bug here must not cost the connection: the SDK answers from now on, as it would
            log.exception("tasks/get shortcut failed; the SDK's pipeline answers every request from now on")
            self._modern = False
            return None
        return None if result is None else result + b"\n"


_ANSWERS_PER_CHECKPOINT = 16
_CHUNK = 1 << 16


@contextmanager
def _pipes() -> Iterator[tuple[_PipeLines, _PipeWriter] | None]:
    """stdin and stdout as pipes served on the event loop, when both are pipes or sockets (as hosts start servers)
    on a POSIX system; None otherwise (a terminal, a file, Windows: the SDK's own threaded streams then).

    As the SDK's transport does, fds 0 and 1 are pointed elsewhere while serving (0 at the null device, 1 at
    stderr), so a stray ``print`` or a child process never writes into the wire; they are restored on the way out.
    """
    if sys.platform == "win32" or not all(_is_pipe(fd) for fd in (0, 1)):
        yield None
        return
    sys.stdout.flush()
    wire_in = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    wire_out = fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
        os.dup2(2, 1)
        for fd in (wire_in, wire_out):
            os.set_blocking(fd, False)
        writer = _PipeWriter(wire_out)
        yield _PipeLines(wire_in, writer), writer
    finally:
        os.close(null)
        for fd, wire in ((0, wire_in), (1, wire_out)):
            with contextlib.suppress(OSError):
                os.set_blocking(wire, True)
                os.dup2(wire, fd)
            os.close(wire)


def _is_pipe(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


async def serve_stdio(mcp: MCPServer[Any]) -> None:
    """``mcp.run()`` over stdio, with unreadable requests answered (see the module docstring), and the pipes read and
    written on the event loop (:func:`_pipes`): the SDK's streams use a worker thread for every line read and two
    for every message written, which capped a server at ~1,000 messages a second on 2 cores (bench/tasks_poll.py).
    A plain ``tasks/get`` is answered as it is read (:mod:`~nano_banana_mcp.mcp_server.tasks_polls`)."""
    # MCPServer.run_stdio_async does the same with the SDK's own streams; its low-level server is the
    # documented way in: https://github.com/modelcontextprotocol/python-sdk/blob/main/docs/migration.md
    lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    with _pipes() as pipes:
        stdin, stdout = pipes if pipes is not None else (None, None)
        polls = polls_of(mcp)
        if stdin is not None and polls is not None:
            stdin.shortcut = _Polls(polls)
        try:
            async with stdio_server(cast(Any, stdin), cast(Any, stdout)) as (read_stream, write_stream):
                await lowlevel.run(
                    _Answering(read_stream, write_stream), write_stream, lowlevel.create_initialization_options()
                )
        finally:
            if stdin is not None:
                stdin.close()
