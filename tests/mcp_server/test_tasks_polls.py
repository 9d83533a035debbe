"""The plain ``tasks/get`` is answered ahead of the SDK's pipeline, with exactly the SDK's answer: every request below
is sent twice, once as a client sends it, once in a form only the SDK's path takes (over stdio the method spelled
``tasks\\/get``, a JSON escape the shortcut does not look for; over HTTP a chunked body, which has no Content-Length),
and the two answers must be the same, errors included. Over HTTP (the real app, in this process, served by the HTTP
protocol of ``serve --http`` and by uvicorn's own) the shortcut's debug lines show which requests it answered, and
where: the plain polls of a working or cancelled task, and nothing else; by the protocol when it serves."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx
import pytest
from pydantic import SecretStr
from tests.mcp_server.wire import CLIENT_INFO, PROTOCOL, TASKS, HttpWire, StdioWire, envelope

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator

if TYPE_CHECKING:
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

ALICE = "alice-polls-token-0123456789"
BOB = "bob-polls-token-9876543210"
UNKNOWN = "nLq3T0n8xZyQ0t6f2bW4cVh1sJ9kDe7R"
SHORTCUT = "nano_banana_mcp.mcp_server.tasks_polls"
PROTOCOL_SHORTCUT = "nano_banana_mcp.mcp_server.tasks_polls_uvicorn"
VERSION_KEY, INFO_KEY, CAPABILITIES_KEY = (
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
)


def _get(task_id: Any, meta: dict[str, Any] | None = None, ident: int | str = 7, **extra: Any) -> dict[str, Any]:
    params = {"taskId": task_id, "_meta": envelope() if meta is None else meta, **extra}
    return {"jsonrpc": "2.0", "id": ident, "method": "tasks/get", "params": params}


def _variants(working: str, cancelled: str, completed: str) -> dict[str, tuple[dict[str, Any], bool]]:
    """Requests, and whether the shortcut answers them (the rest are the SDK's: errors, a completed task)."""
    other_extension = {"extensions": {TASKS: {}, "io.example/other": {"x": 1}}}
    return {
        "working": (_get(working), True),
        "a string id": (_get(working, ident="poll-1"), True),
        "more in _meta and params": (
            _get(working, {VERSION_KEY: PROTOCOL, CAPABILITIES_KEY: other_extension, "progressToken": 3}, note="x"),
            True,
        ),
        "cancelled": (_get(cancelled), True),
        "completed": (_get(completed), False),
        "unknown id": (_get(UNKNOWN), False),
        "a long id": (_get("x" * 201), False),
        "without the extension": (_get(working, envelope(extensions=())), False),
        "capabilities of the wrong shape": (
            _get(working, {VERSION_KEY: PROTOCOL, INFO_KEY: CLIENT_INFO, CAPABILITIES_KEY: {"extensions": [TASKS]}}),
            False,
        ),
        "a task id that is a number": (_get(12345), False),
        "no capabilities in the envelope": (_get(working, {VERSION_KEY: PROTOCOL, INFO_KEY: CLIENT_INFO}), False),
        "another protocol version": (_get(working, envelope() | {VERSION_KEY: "2099-01-01"}), False),
    }


async def _tasks(wire: StdioWire | HttpWire, emulator: Emulator) -> tuple[str, str, str]:
    """A task still queued at the API (its state does not move for a minute), one cancelled, one completed."""
    emulator.task_seconds = 600.0
    completed = (await wire.call_tool("generate_image", {"prompt": "done soon"}))["taskId"]
    emulator.finish_tasks()
    working = (await wire.call_tool("generate_image", {"prompt": "queued for long"}))["taskId"]
    cancelled = (await wire.call_tool("generate_image", {"prompt": "cancelled"}))["taskId"]
    await wire.request("tasks/cancel", {"taskId": cancelled})
    await wire.poll(completed)
    with anyio.fail_after(30):  # the API has said "pending": nothing changes now for a minute
        while not (await wire.get(working))["statusMessage"].startswith("Queued at the Monet API"):
            await anyio.sleep(0.05)
    return working, cancelled, completed


async def test_over_stdio_the_shortcut_answers_as_the_sdk_does_also_once_a_task_changed(
    command: str, process_env: dict[str, str], emulator: Emulator
) -> None:
    async with StdioWire.spawn([command], process_env) as wire:
        working, cancelled, completed = await _tasks(wire, emulator)
        for name, (request, shortcut) in _variants(working, cancelled, completed).items():
            line = json.dumps(request)
            answered = await wire.exchange_line(line, request["id"])
            by_the_sdk = await wire.exchange_line(line.replace('"tasks/get"', '"tasks\\/get"'), request["id"])
            assert answered == by_the_sdk, name
            if shortcut:
                assert answered["result"]["status"] in ("working", "cancelled"), name
        await wire.request("tasks/cancel", {"taskId": working})  # a task the shortcut has just answered as working
        line = json.dumps(_get(working))
        answered = await wire.exchange_line(line, 7)
        assert answered["result"]["status"] == "cancelled"
        assert answered == await wire.exchange_line(line.replace('"tasks/get"', '"tasks\\/get"'), 7)


@pytest.fixture(params=["protocol", "front"])
def polls_server(
    tmp_path: Path,
    make_settings: Callable[[str | None, Path], Settings],
    emulator: Emulator,
    serve_http: ServeHttp,
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    """The HTTP app with two tenants, alice and bob; its ``/mcp`` URL. Served as ``serve --http`` serves it (the plain
    poll answered by the HTTP protocol), then by uvicorn's own protocol (answered by the app's front middleware)."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    tokens.chmod(0o600)
    settings = make_settings(emulator.base_url, tmp_path).model_copy(update={"http_tokens_file": tokens})
    with serve_http(settings, protocol=request.param == "protocol") as base:
        yield f"{base}/mcp"


def _headers(token: str, **changes: str) -> list[tuple[str, str]]:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": PROTOCOL,
        "Mcp-Method": "tasks/get",
    } | changes
    return list(headers.items())


async def _post(
    http: httpx.AsyncClient, url: str, body: bytes, headers: list[tuple[str, str]], *, chunked: bool
) -> tuple[int, str, Any]:
    """Status, content type and ``WWW-Authenticate``, and the body (parsed when JSON)."""

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    response = await http.post(url, content=chunks() if chunked else body, headers=headers)
    text = response.text
    kind = response.headers.get("content-type", "") + " " + response.headers.get("www-authenticate", "")
    return response.status_code, kind, json.loads(text) if text[:1] == "{" else text


async def test_over_http_the_shortcut_answers_as_the_sdk_does_and_only_the_plain_polls(
    polls_server: str, emulator: Emulator, caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest
) -> None:
    wire = HttpWire(polls_server, ALICE)
    try:
        working, cancelled, completed = await _tasks(wire, emulator)
    finally:
        await wire.aclose()
    cases: list[tuple[str, dict[str, Any], list[tuple[str, str]], bool]] = [
        (name, request, _headers(ALICE), shortcut)
        for name, (request, shortcut) in _variants(working, cancelled, completed).items()
    ]
    cases += [
        ("another tenant's task", _get(working), _headers(BOB), False),
        ("a foreign Host", _get(working), _headers(ALICE, Host="evil.example:80"), False),
        ("a foreign Origin", _get(working), _headers(ALICE, Origin="http://evil.example"), False),
        ("not JSON by its Content-Type", _get(working), _headers(ALICE, **{"Content-Type": "text/plain"}), False),
        ("no event stream accepted", _get(working), _headers(ALICE, Accept="application/json"), False),
        ("any type accepted", _get(working), _headers(ALICE, Accept="*/*"), True),
        (
            "a version header unlike the envelope",
            _get(working),
            _headers(ALICE, **{"MCP-Protocol-Version": "x"}),
            False,
        ),
        ("a method header unlike the body", _get(working), _headers(ALICE, **{"Mcp-Method": "tasks/cancel"}), False),
        ("the method header twice", _get(working), [*_headers(ALICE), ("Mcp-Method", "tasks/get")], False),
        ("a notification", {k: v for k, v in _get(working).items() if k != "id"}, _headers(ALICE), False),
        ("no bearer token", _get(working), [h for h in _headers(ALICE) if h[0] != "Authorization"], False),
        ("a wrong bearer token", _get(working), _headers("not-a-tenant-token-0123456789"), False),
        ("a token without the Bearer scheme", _get(working), _headers(ALICE, Authorization=ALICE), False),
    ]
    caplog.set_level(logging.DEBUG, logger=SHORTCUT)
    caplog.set_level(logging.DEBUG, logger=PROTOCOL_SHORTCUT)
    by_protocol = request.node.callspec.params["polls_server"] == "protocol"
    async with httpx.AsyncClient(timeout=30) as http:
        for name, message, headers, shortcut in cases:
            body = json.dumps(message).encode()
            caplog.clear()
            answered = await _post(http, polls_server, body, headers, chunked=False)
            took = [r for r in caplog.records if r.name == SHORTCUT and "answered ahead of the SDK" in r.message]
            assert len(took) == int(shortcut), name
            protocol = [r for r in caplog.records if r.name == PROTOCOL_SHORTCUT and "answered" in r.message]
            assert len(protocol) == int(shortcut and by_protocol), name  # else by the app's front middleware
            by_the_sdk = await _post(http, polls_server, body, headers, chunked=True)
            assert answered == by_the_sdk, name
            if shortcut:
                assert answered[0] == 200 and answered[2]["result"]["status"] in ("working", "cancelled"), name


@pytest.mark.parametrize("protocol", [True, False], ids=["protocol", "front"])
async def test_with_one_token_a_poll_with_a_wrong_token_gets_the_sdks_401(
    settings: Settings, emulator: Emulator, serve_http: ServeHttp, caplog: pytest.LogCaptureFixture, protocol: bool
) -> None:
    """One bearer token (the tenant ``default``): a poll of a working task with a wrong token, or none, is the SDK's
    401, never the task, whoever answers polls (the shortcut authenticates before it reads anything)."""
    with serve_http(settings.model_copy(update={"http_token": SecretStr(ALICE)}), protocol=protocol) as base:
        wire = HttpWire(f"{base}/mcp", ALICE)
        try:
            emulator.task_seconds = 600.0
            task_id = (await wire.call_tool("generate_image", {"prompt": "one token"}))["taskId"]
        finally:
            await wire.aclose()
        body = json.dumps(_get(task_id)).encode()
        caplog.set_level(logging.DEBUG, logger=SHORTCUT)
        async with httpx.AsyncClient(timeout=30) as http:
            assert (await _post(http, f"{base}/mcp", body, _headers(ALICE), chunked=False))[0] == 200
            caplog.clear()
            for headers in (_headers(BOB), [h for h in _headers(ALICE) if h[0] != "Authorization"]):
                answered = await _post(http, f"{base}/mcp", body, headers, chunked=False)
                assert answered == await _post(http, f"{base}/mcp", body, headers, chunked=True)
                assert answered[0] == 401 and "invalid_token" in answered[1], answered
        assert not [r for r in caplog.records if r.name == SHORTCUT]


async def test_a_failing_shortcut_leaves_the_answer_to_the_sdk(
    polls_server: str, emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the shortcut fail (a bug), the poll is still answered, by the SDK, as if there were no shortcut."""
    wire = HttpWire(polls_server, ALICE)
    try:
        emulator.task_seconds = 600.0
        task_id = (await wire.call_tool("generate_image", {"prompt": "still answered"}))["taskId"]

        async def broken(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("a bug in the shortcut")

        def broken_now(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError("a bug in the shortcut")

        monkeypatch.setattr("nano_banana_mcp.mcp_server.tasks_polls.TaskPolls.answer", broken)
        monkeypatch.setattr("nano_banana_mcp.mcp_server.tasks_polls.TaskPolls.answer_now", broken_now)
        task = await wire.get(task_id)
    finally:
        await wire.aclose()
    assert task["resultType"] == "complete" and task["taskId"] == task_id and task["status"] == "working"


def _raw(url: str, body: dict[str, Any], token: str = ALICE, **extra: str) -> bytes:
    """One HTTP/1.1 POST as bytes, with the headers a host sends."""
    payload = json.dumps(body).encode()
    host = url.removeprefix("http://").split("/", 1)[0]
    headers = {
        "Host": host,
        **dict(_headers(token, **{"Mcp-Method": body.get("method", "")})),
        "Content-Length": str(len(payload)),
    } | extra
    return b"POST /mcp HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode() + b"\r\n" + payload


async def _responses(stream: anyio.abc.ByteStream, count: int) -> list[tuple[bytes, dict[str, str], Any]]:
    """``count`` HTTP responses read off ``stream``: status line, headers, parsed body (JSON or event stream)."""
    buffer = b""
    found: list[tuple[bytes, dict[str, str], Any]] = []
    with anyio.fail_after(30):
        while len(found) < count:
            head, sep, rest = buffer.partition(b"\r\n\r\n")
            if sep:
                status, *lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
                if "content-length" in headers and len(rest) >= int(headers["content-length"]):
                    size = int(headers["content-length"])
                    found.append((status.encode(), headers, json.loads(rest[:size])))
                    buffer = rest[size:]
                    continue
                if headers.get("transfer-encoding") == "chunked" and b"\r\n0\r\n\r\n" in rest:
                    body, _, buffer = rest.partition(b"\r\n0\r\n\r\n")
                    data = [line[5:] for line in body.split(b"\n") if line.startswith(b"data:")]
                    found.append((status.encode(), headers, json.loads(data[-1])))
                    continue
            buffer += await stream.receive()
    return found


async def test_pipelined_polls_are_answered_in_order_and_connection_close_is_kept(
    polls_server: str, emulator: Emulator
) -> None:
    """Requests sent back to back on one connection (HTTP/1.1 pipelining) are answered in their order, whichever
    path answers each (a plain poll, another method, the SDK's error for an unknown task); a request saying
    ``Connection: close`` is answered, then the connection is closed, as uvicorn does for any other request. (The
    SDK's own answers carry its HTTP statuses: 404 for an unknown method, 400 for an unknown task.)"""
    wire = HttpWire(polls_server, ALICE)
    try:
        emulator.task_seconds = 600.0
        task_id = (await wire.call_tool("generate_image", {"prompt": "polled back to back"}))["taskId"]
    finally:
        await wire.aclose()
    host, port = polls_server.removeprefix("http://").split("/", 1)[0].rsplit(":", 1)
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"_meta": envelope()}}
    requests = [_raw(polls_server, _get(task_id, ident=1)), _raw(polls_server, ping)]
    requests += [_raw(polls_server, _get(UNKNOWN, ident=3)), _raw(polls_server, _get(task_id, ident=4))]
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(b"".join(requests))
        answers = await _responses(stream, 4)
        assert [body["id"] for _, _, body in answers] == [1, 2, 3, 4]
        assert answers[0][0].split()[1] == answers[3][0].split()[1] == b"200"
        assert answers[0][2]["result"]["status"] == answers[3][2]["result"]["status"] == "working"
        assert answers[2][2]["error"]["code"] == -32602
        assert {"date", "server", "content-type"} <= answers[0][1].keys()
        await stream.send(_raw(polls_server, _get(task_id, ident=5), Connection="close"))
        [(_, headers, body)] = await _responses(stream, 1)
        assert body["id"] == 5 and body["result"]["status"] == "working" and headers.get("connection") == "close"
        with contextlib.suppress(anyio.BrokenResourceError):  # a request after it is not answered: closed
            await stream.send(_raw(polls_server, _get(task_id, ident=6)))
        with anyio.fail_after(10), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await stream.receive()
