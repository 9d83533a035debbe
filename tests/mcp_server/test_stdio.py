"""The stdio transport of a real process: unreadable requests are answered, stray lines ignored, service goes on."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

if TYPE_CHECKING:
    from tests.conftest import ServerEnv


pytestmark = pytest.mark.anyio

HELLO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
UNREADABLE = {
    "lone surrogate": '{"jsonrpc":"2.0","id":2,"method":"ping","params":{"x":"\\ud800"}}',
    "5,000-digit number": '{"jsonrpc":"2.0","id":3,"method":"ping","params":{"n":' + "9" * 5000 + "}}",
    "deep nesting": '{"jsonrpc":"2.0","id":"four","method":"ping","params":' + "[" * 5000 + "]" * 5000 + "}",
    "no jsonrpc member": '{"id":5,"method":"tools/list"}',
}


async def send(process: Process, line: str) -> None:
    assert process.stdin is not None
    await process.stdin.send((line + "\n").encode())


async def answers_to(process: Process, ids: set[int]) -> list[dict[str, Any]]:
    """Every message the server writes until it has answered each of ``ids``."""
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    buffer = ""
    stream = TextReceiveStream(process.stdout)
    with anyio.fail_after(30):
        while not ids <= {m.get("id") for m in lines}:
            buffer += await stream.receive()
            *complete, buffer = buffer.split("\n")
            lines.extend(json.loads(line) for line in complete if line.strip())
    return lines


class Served:
    """One server process over stdio, initialized, shared by the tests below: each sends its lines and reads what
    the server writes up to the answer to its own last request. Those tests look at what one line gets, not at a
    fresh process (a line that killed it would fail every test after it, too)."""

    def __init__(self, process: Process) -> None:
        assert process.stdin is not None and process.stdout is not None
        self.process = process
        self._stream = TextReceiveStream(process.stdout)
        self._buffer = ""

    async def send(self, line: str) -> None:
        await send(self.process, line)

    async def until(self, last_id: int) -> list[dict[str, Any]]:
        """Every message the server writes from here up to the answer to ``last_id`` (sent last: answers keep
        order)."""
        lines: list[dict[str, Any]] = []
        with anyio.fail_after(20):
            while not any(m.get("id") == last_id for m in lines):
                self._buffer += await self._stream.receive()
                *complete, self._buffer = self._buffer.split("\n")
                lines.extend(json.loads(line) for line in complete if line.strip())
        return lines


@pytest.fixture(scope="module")
async def served(
    server_env: ServerEnv, tmp_path_factory: pytest.TempPathFactory, command: str
) -> AsyncIterator[Served]:
    env = server_env(tmp_path_factory.mktemp("stdio"))
    async with await anyio.open_process([command], env=env) as process:
        server = Served(process)
        await server.send(json.dumps(HELLO))
        assert [m.get("id") for m in await server.until(1)] == [1]
        await server.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        yield server
        process.terminate()


@pytest.mark.parametrize("kind", UNREADABLE)
async def test_an_unreadable_request_is_answered_with_its_id(served: Served, kind: str) -> None:
    """A request the SDK cannot read gets a JSON-RPC error for its id (the client does not hang); the
    next request is served as usual."""
    ping = 100 + list(UNREADABLE).index(kind)
    await served.send(UNREADABLE[kind])
    await served.send(json.dumps({"jsonrpc": "2.0", "id": ping, "method": "ping"}))
    got = await served.until(ping)
    by_id = {message.get("id"): message for message in got}
    expected_id = json.loads(UNREADABLE[kind].split('"id":')[1].split(",")[0])
    assert by_id[expected_id]["error"]["code"] in (-32700, -32600)
    assert by_id[ping]["result"] == {}


async def test_a_line_that_is_not_json_gets_no_answer(served: Served) -> None:
    """A stray non-JSON line (a log line on the client's side) is ignored, never answered: no error storm."""
    await served.send("DEBUG something printed to the wrong stream")
    await served.send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
    got = await served.until(9)
    assert [m.get("id") for m in got] == [9]


async def test_requests_written_in_one_go_and_a_long_line_are_each_answered(
    process_env: dict[str, str], command: str
) -> None:
    """The pipe is read in chunks: 200 requests written at once and a 3 MB request split over many reads are each
    answered, in full; closing stdin then ends the server, cleanly."""
    burst = "".join(json.dumps({"jsonrpc": "2.0", "id": 100 + i, "method": "ping"}) + "\n" for i in range(200))
    long_line = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "ping", "params": {"_meta": {"pad": "x" * 3_000_000}}})
    async with await anyio.open_process([command], env=process_env) as process:
        await send(process, json.dumps(HELLO))
        await send(process, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        assert process.stdin is not None
        await process.stdin.send(burst.encode())
        await send(process, long_line)
        await send(process, json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        got = await answers_to(process, {1, 7, 9, *range(100, 300)})  # concurrent requests: in any order
        await process.stdin.aclose()
        with anyio.fail_after(20):
            assert await process.wait() == 0
    by_id = {message.get("id"): message for message in got}
    assert all(by_id[100 + i]["result"] == {} for i in range(200))
    assert by_id[7]["result"] == {} and by_id[9]["result"] == {}
