"""The stdio transport of a real process: unreadable requests are answered, stray lines ignored, service goes on."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

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


async def answers(process: Process, last_id: int = 9) -> list[dict[str, Any]]:
    """Every message the server writes, up to the answer to ``last_id`` (sent last: answers keep order)."""
    assert process.stdout is not None
    lines: list[dict[str, Any]] = []
    buffer = ""
    stream = TextReceiveStream(process.stdout)
    with anyio.fail_after(20):
        while not any(m.get("id") == last_id for m in lines):
            buffer += await stream.receive()
            *complete, buffer = buffer.split("\n")
            lines.extend(json.loads(line) for line in complete if line.strip())
    return lines


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


@pytest.mark.parametrize("kind", UNREADABLE)
async def test_an_unreadable_request_is_answered_with_its_id(
    process_env: dict[str, str], command: str, kind: str
) -> None:
    """A request the SDK cannot read gets a JSON-RPC error for its id (the client does not hang); the
    next request is served as usual."""
    async with await anyio.open_process([command], env=process_env) as process:
        await send(process, json.dumps(HELLO))
        await send(process, json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        await send(process, UNREADABLE[kind])
        await send(process, json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        got = await answers(process)
        process.terminate()
    by_id = {message.get("id"): message for message in got}
    expected_id = json.loads(UNREADABLE[kind].split('"id":')[1].split(",")[0])
    assert by_id[expected_id]["error"]["code"] in (-32700, -32600)
    assert by_id[9]["result"] == {}


async def test_a_line_that_is_not_json_gets_no_answer(process_env: dict[str, str], command: str) -> None:
    """A stray non-JSON line (a log line on the client's side) is ignored, never answered: no error storm."""
    async with await anyio.open_process([command], env=process_env) as process:
        await send(process, json.dumps(HELLO))
        await send(process, "DEBUG something printed to the wrong stream")
        await send(process, json.dumps({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        got = await answers(process)
        process.terminate()
    assert [m.get("id") for m in got] == [1, 9]


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
