"""The MCP Tasks extension (``io.modelcontextprotocol/tasks``): a client that declares it on a ``generate_image`` call
gets a task handle, polls ``tasks/get`` (or listens) to ``completed``, and reads exactly the plain call's result.
Driven by a plain 2026-07-28 wire client (``wire.py``: the SDK's client cannot do tasks) over stdio (real
processes, one SIGKILLed) and over HTTP (the real app in a thread; two real replicas on one PostgreSQL ledger)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from tests.mcp_server.wire import TASKS, HttpWire, StdioWire, WireError
from tests.test_replicas import replicas

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server.tasks_extension import (
    MAX_TASK_IDS,
    NOT_FOUND,
    poll_interval_ms,
    working_message,
)
from nano_banana_mcp.tasks import TaskRecord

pytestmark = pytest.mark.anyio

ALICE = "alice-tasks-token-0123456789"
BOB = "bob-tasks-token-9876543210"
TEAM = "team-token-0123456789abcdef"  # tests/test_replicas.py's
UNKNOWN = "nLq3T0n8xZyQ0t6f2bW4cVh1sJ9kDe7R"  # the shape of a task id; nobody's
_ID = re.compile(r"^[A-Za-z0-9_-]{32}$")  # secrets.token_urlsafe(24): 192 bits
LONG = 600.0
"""Seconds a task takes at the emulator when a test ends it itself (``emulator.finish_tasks()``) once it has seen
what it waits for: a task that outlasts the inline second however slow the machine, with no test waiting it out."""


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    """A tool result as a task carries it: without the response's own ``_meta`` stamp (serverInfo)."""
    return {k: v for k, v in result.items() if k != "_meta"}


def _task_fields(task: dict[str, Any]) -> dict[str, Any]:
    """A ``tasks/get`` answer or a ``notifications/tasks`` params, without what only frames it."""
    return {k: v for k, v in task.items() if k not in ("_meta", "resultType")}


# -- the rules, as functions ---------------------------------------------------------------------------------


def _row(**changes: Any) -> TaskRecord:
    return TaskRecord(key="k", request=GenerateRequest(prompt="p", model="nano-banana-2"), **changes)


def test_the_poll_interval_is_short_near_the_end_and_long_while_queued_or_in_trouble() -> None:
    """1 s when half done or saving, 2 s while generating, 3 s while queued, 5 s while a problem is retried; a
    batch polls at its most urgent row's pace."""
    queued = _row(phase="created", task_id="t", api_status="pending")
    generating = _row(phase="created", task_id="t", api_status="processing", progress=20.0)
    near_end = _row(phase="created", task_id="t", api_status="processing", progress=70.0)
    saving = _row(phase="succeeded", task_id="t", api_status="success", progress=100.0)
    trouble = _row(phase="created", task_id="t", api_status="processing", progress=70.0, error="disk full")
    assert [poll_interval_ms([r]) for r in (_row(), queued, generating, near_end, saving, trouble)] == [
        3000,
        3000,
        2000,
        1000,
        1000,
        5000,
    ]
    assert poll_interval_ms([queued, near_end]) == 1000
    assert poll_interval_ms([_row(phase="downloaded"), queued]) == 3000  # a finished row asks for nothing


def test_the_working_message_says_model_progress_and_what_it_waits_on() -> None:
    assert working_message([_row()]) == (
        "Sending the request to the Monet API (nano-banana-2); waiting for it to accept."
    )
    running = _row(phase="created", task_id="t", api_status="processing", progress=42.0)
    assert working_message([running]) == "Generating with nano-banana-2: 42%; waiting for the Monet API to finish."
    stuck = _row(phase="succeeded", task_id="t", error="No space left on the output folder's disk.")
    assert working_message([stuck]) == (
        "nano-banana-2 made the image; saving it. Retrying after a problem: No space left on the output folder's disk."
    )
    assert working_message([running, _row(phase="downloaded")]) == (
        "2 images with nano-banana-2: 1 of 2 finished, 71% in all; waiting for the Monet API."
    )


# -- stdio: a real process ---------------------------------------------------------------------------------


@asynccontextmanager
async def stdio(command: str, env: dict[str, str]) -> AsyncIterator[StdioWire]:
    async with StdioWire.spawn([command], env) as wire:
        yield wire


async def test_a_declared_call_becomes_a_task_that_completes_with_the_plain_calls_result(
    command: str, process_env: dict[str, str], emulator: Emulator
) -> None:
    """Over stdio: discover advertises the extension; an image still running after the inline second is answered at
    once with a task (an id of 192 random bits, not the API's); ``tasks/get`` resolves at once, says what it waits on,
    then ``completed`` with the very result the plain call gives for the same request; the same call sent again once
    done is a plain result; one create in all."""
    emulator.task_seconds = LONG
    arguments = {"prompt": "a lighthouse at dusk", "request_id": "lighthouse-1"}
    async with stdio(command, process_env) as wire:
        discovered = await wire.request("server/discover")
        assert discovered["capabilities"]["extensions"][TASKS] == {}

        created = await wire.call_tool("generate_image", arguments)
        assert created["resultType"] == "task" and created["status"] == "working"
        assert _ID.match(created["taskId"]), created["taskId"]
        assert created["ttlMs"] is None and created["pollIntervalMs"] in (1000, 2000, 3000)
        assert "nano-banana-2" in created["statusMessage"]
        assert created["createdAt"].endswith("Z") and "content" not in created

        first = await wire.get(created["taskId"])  # durable first: it resolves at once
        assert first["resultType"] == "complete" and first["status"] == "working"
        emulator.finish_tasks()
        done = await wire.poll(created["taskId"])
        assert done["status"] == "completed", done
        result = done["result"]
        structured = result["structuredContent"]
        assert structured["status"] == "success" and not result.get("isError")
        assert created["taskId"] not in (structured["task_id"], *structured["task_ids"])
        assert Path(structured["images"][0]["path"]).is_file()
        assert [c["type"] for c in result["content"]] == ["text", "image", "resource_link"]
        assert done["statusMessage"] == result["content"][0]["text"]

        plain = await wire.call_tool("generate_image", arguments, extensions=())  # a client without the extension
        assert _plain(plain) == result

        again = await wire.call_tool("generate_image", arguments)  # declared, but already done: plain
        assert again["resultType"] == "complete" and _plain(again) == result
    assert emulator.creates == 1


async def test_a_task_survives_a_sigkill_and_finishes_after_the_restart_with_one_create(
    command: str, process_env: dict[str, str], emulator: Emulator
) -> None:
    """The server is SIGKILLed while the task runs at the API; a new process on the same data dir answers
    ``tasks/get`` for it, and its sweep finishes it: completed, the image saved, one create."""
    emulator.task_seconds = LONG
    async with stdio(command, process_env) as wire:
        created = await wire.call_tool("generate_image", {"prompt": "a survivor"})
        assert created["resultType"] == "task"
        wire.process.kill()  # SIGKILL: no clean-up of any kind
        await wire.process.wait()
    assert emulator.creates == 1
    async with stdio(command, process_env) as wire:
        after = await wire.get(created["taskId"])
        assert after["status"] == "working"
        emulator.finish_tasks()
        done = await wire.poll(created["taskId"])
    assert done["status"] == "completed"
    assert Path(done["result"]["structuredContent"]["images"][0]["path"]).is_file()
    assert emulator.creates == 1


async def test_without_the_extension_a_2026_client_gets_todays_answer(
    command: str, process_env: dict[str, str], emulator: Emulator
) -> None:
    """A 2026-07-28 request that does not declare the extension waits ``wait_seconds`` and gets the plain result,
    task id and ``get_task`` advice included, as before; its ``tasks/*`` calls are refused with -32021."""
    emulator.task_seconds = 2.0
    async with stdio(command, process_env) as wire:
        plain = await wire.call_tool("generate_image", {"prompt": "no tasks", "wait_seconds": 0}, extensions=())
        with pytest.raises(WireError) as refused:
            await wire.get(UNKNOWN, extensions=())
    assert plain["resultType"] == "complete" and "taskId" not in plain
    assert plain["structuredContent"]["status"] in ("pending", "running")
    assert "get_task(" in plain["content"][0]["text"]
    assert refused.value.code == -32021
    assert refused.value.data == {"requiredCapabilities": {"extensions": {TASKS: {}}}}


# -- HTTP: the real app, two tenants -------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    base: str
    settings: Settings


@pytest.fixture(scope="module")
def tasks_server(
    tmp_path_factory: pytest.TempPathFactory,
    make_settings: Callable[[str | None, Path], Settings],
    emulator_server: Emulator,
    serve_http: Callable[[Settings], AbstractContextManager[str]],
) -> Iterator[Served]:
    """The HTTP app with two tenants, alice and bob."""
    root = tmp_path_factory.mktemp("tasks")
    tokens = root / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    tokens.chmod(0o600)
    settings = make_settings(emulator_server.base_url, root).model_copy(update={"http_tokens_file": tokens})
    with serve_http(settings) as base:
        yield Served(f"{base}/mcp", base, settings)


@asynccontextmanager
async def http(served: Served, token: str) -> AsyncIterator[HttpWire]:
    wire = HttpWire(served.url, token)
    try:
        yield wire
    finally:
        await wire.aclose()


async def _error(call: Any) -> WireError:
    with pytest.raises(WireError) as caught:
        await call
    return caught.value


async def test_another_tenants_task_answers_exactly_like_an_unknown_one(
    tasks_server: Served, emulator: Emulator
) -> None:
    """Bob's ``tasks/get``, ``tasks/update`` and ``tasks/cancel`` of alice's task get the unknown id's -32602, word
    for word; his listen for it is acknowledged without it; alice's task goes on, uncancelled, to completed."""
    emulator.task_seconds = LONG
    async with http(tasks_server, ALICE) as alice, http(tasks_server, BOB) as bob:
        created = await alice.call_tool("generate_image", {"prompt": "alice's secret"})
        task_id = created["taskId"]
        extras: tuple[tuple[str, dict[str, Any]], ...] = (
            ("tasks/get", {}),
            ("tasks/update", {"inputResponses": {}}),
            ("tasks/cancel", {}),
        )
        for method, extra in extras:
            theirs = await _error(bob.request(method, {"taskId": task_id, **extra}))
            unknown = await _error(bob.request(method, {"taskId": UNKNOWN, **extra}))
            assert (theirs.code, theirs.message, theirs.data) == (unknown.code, unknown.message, unknown.data)
            assert theirs.code == -32602 and theirs.message == NOT_FOUND
        async with bob.listen({"taskIds": [task_id, UNKNOWN]}) as listening:
            assert listening.ack["params"]["notifications"]["taskIds"] == []
        emulator.finish_tasks()
        done = await alice.poll(task_id)
    assert done["status"] == "completed"
    assert "alice's secret" not in json.dumps(bob.transcript)


async def test_cancel_is_acknowledged_and_the_paid_image_is_still_saved_and_listed(
    tasks_server: Served, emulator: Emulator
) -> None:
    """``tasks/cancel`` answers an empty result; the task reports ``cancelled`` (saying the image is still made and
    where); the API has no cancel, so the image is saved and ``list_tasks`` lists it. A finished task stays
    ``completed`` when cancelled."""
    emulator.task_seconds = LONG
    async with http(tasks_server, ALICE) as alice:
        created = await alice.call_tool("generate_image", {"prompt": "cancel me"})
        ack = await alice.request("tasks/cancel", {"taskId": created["taskId"]})
        assert ack["resultType"] == "complete" and set(ack) <= {"resultType", "_meta"}
        cancelled = await alice.get(created["taskId"])
        assert cancelled["status"] == "cancelled" and "result" not in cancelled
        assert "still made" in cancelled["statusMessage"] and "list_tasks" in cancelled["statusMessage"]

        task_id = re.findall(r"\(([^()]*)\)\.$", cancelled["statusMessage"])[0]
        emulator.finish_tasks()  # the API finishes it all the same
        saved = await alice.call_tool("get_task", {"task_id": task_id, "wait_seconds": 30}, extensions=())
        assert saved["structuredContent"]["status"] == "success"
        assert Path(saved["structuredContent"]["images"][0]["path"]).is_file()
        listed = await alice.call_tool("list_tasks", {}, extensions=())
        assert task_id in [t["task_id"] for t in listed["structuredContent"]["tasks"]]
        assert (await alice.get(created["taskId"]))["status"] == "cancelled"  # it stays so

        other = await alice.call_tool("generate_image", {"prompt": "finish first"})
        emulator.finish_tasks()
        await alice.poll(other["taskId"])
        await alice.request("tasks/cancel", {"taskId": other["taskId"]})
        assert (await alice.get(other["taskId"]))["status"] == "completed"
    assert emulator.creates == 2


async def test_tasks_calls_without_the_extension_get_32021_and_unknown_ids_32602(tasks_server: Served) -> None:
    """Every ``tasks/*`` method and a listen for task ids, without the extension declared: -32021 naming it. With
    it: an unknown id is -32602 on all three methods; a listen naming too many ids is -32602."""
    async with http(tasks_server, ALICE) as alice:
        for method in ("tasks/get", "tasks/update", "tasks/cancel"):
            refused = await _error(alice.request(method, {"taskId": UNKNOWN, "inputResponses": {}}, extensions=()))
            assert refused.code == -32021
            assert refused.data == {"requiredCapabilities": {"extensions": {TASKS: {}}}}
            unknown = await _error(alice.request(method, {"taskId": UNKNOWN, "inputResponses": {}}))
            assert (unknown.code, unknown.message) == (-32602, NOT_FOUND)
        with pytest.raises(WireError) as listen_refused:
            async with alice.listen({"taskIds": [UNKNOWN]}, extensions=()):
                pass
        assert listen_refused.value.code == -32021
        with pytest.raises(WireError) as too_many:
            async with alice.listen({"taskIds": [f"id-{i}" for i in range(MAX_TASK_IDS + 1)]}):
                pass
        assert too_many.value.code == -32602 and str(MAX_TASK_IDS) in too_many.value.message


async def test_a_listener_hears_each_change_up_to_the_completed_result(
    tasks_server: Served, emulator: Emulator
) -> None:
    """``subscriptions/listen`` with ``taskIds``: the ack names the caller's task (not an unknown id), then one
    ``notifications/tasks`` with its state, one per change (progress included), the last ``completed`` with what
    ``tasks/get`` answers."""
    emulator.task_seconds = 2.0
    async with http(tasks_server, ALICE) as alice:
        created = await alice.call_tool("generate_image", {"prompt": "listen to me"})
        task_id = created["taskId"]
        heard: list[dict[str, Any]] = []
        async with alice.listen({"taskIds": [task_id, UNKNOWN]}) as listening:
            assert listening.ack["method"] == "notifications/subscriptions/acknowledged"
            assert listening.ack["params"]["notifications"]["taskIds"] == [task_id]
            while not heard or heard[-1]["params"]["status"] != "completed":
                heard.append(await listening.next())
        final = await alice.get(task_id)
    assert {n["method"] for n in heard} == {"notifications/tasks"}
    assert {n["params"]["taskId"] for n in heard} == {task_id}
    working = [n["params"]["statusMessage"] for n in heard if n["params"]["status"] == "working"]
    assert len(working) == len(set(working)) >= 2  # each a change: progress moved between them
    assert _task_fields(heard[-1]["params"]) == _task_fields(final)


async def test_a_batch_is_one_task_with_every_image(tasks_server: Served, emulator: Emulator) -> None:
    """``count=2``: one task; while working it speaks of both images; completed, its result names both tasks and
    both saved images, as the plain call's does."""
    emulator.task_seconds = LONG
    async with http(tasks_server, ALICE) as alice:
        created = await alice.call_tool("generate_image", {"prompt": "two of them", "count": 2})
        assert created["resultType"] == "task"
        assert created["statusMessage"].startswith("2 images with nano-banana-2")
        emulator.finish_tasks()
        done = await alice.poll(created["taskId"])
    structured = done["result"]["structuredContent"]
    assert structured["status"] == "success" and len(structured["task_ids"]) == 2
    assert len([c for c in done["result"]["content"] if c["type"] == "resource_link"]) == 2
    assert all(Path(image["path"]).is_file() for image in structured["images"])
    assert emulator.creates == 2


async def test_a_2025_session_sees_no_tasks(
    tasks_server: Served, hello: Callable[..., httpx.Response], emulator: Emulator
) -> None:
    """A 2025-11-25 session (the handshake most hosts speak): initialize names no tasks extension, generate_image
    answers as before (``wait_seconds``, then the task id and ``get_task`` advice), ``tasks/get`` does not exist."""
    emulator.task_seconds = 2.0
    auth = {"Authorization": f"Bearer {ALICE}"}
    opened = hello(tasks_server.base, auth)
    assert opened.status_code == 200
    assert TASKS not in json.dumps(_sse_or_json(opened))
    headers = auth | {
        "Mcp-Session-Id": opened.headers["mcp-session-id"],
        "MCP-Protocol-Version": "2025-11-25",
        "Accept": "application/json, text/event-stream",
    }
    async with httpx.AsyncClient(timeout=30, headers=headers) as client:
        await client.post(tasks_server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = {"name": "generate_image", "arguments": {"prompt": "2025", "wait_seconds": 0}}
        made = _sse_or_json(
            await client.post(
                tasks_server.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}
            )
        )
        get = {"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"taskId": UNKNOWN}}
        missing = _sse_or_json(await client.post(tasks_server.url, json=get))
    result = made["result"]
    assert "resultType" not in result and "taskId" not in result
    assert result["structuredContent"]["status"] in ("pending", "running")
    assert "get_task(" in result["content"][0]["text"]
    assert missing["error"]["code"] == -32601


def _sse_or_json(response: httpx.Response) -> dict[str, Any]:
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        answer: dict[str, Any] = json.loads(data[-1])
        return answer
    body: dict[str, Any] = response.json()
    return body


# -- replicas on one PostgreSQL ledger -------------------------------------------------------------------------


async def test_any_replica_answers_for_a_task_and_hears_it_finish(
    process_env: dict[str, str], database_url: str, command: str, emulator: Emulator, tmp_path: Path
) -> None:
    """Two ``serve --http`` processes on one PostgreSQL ledger: a task made through A resolves through B at once;
    B's listener hears it finish (A works it; the ledger announces the finish); B's ``tasks/get`` gives the completed
    result; a cancel through B shows through A. One create per task."""
    emulator.task_seconds = LONG
    env = process_env | {"NANO_BANANA_DATABASE_URL": database_url, "NANO_BANANA_HTTP_TOKEN": TEAM}
    with replicas("AB", command, env, tmp_path) as team:
        a, b = HttpWire(team["A"].url, TEAM), HttpWire(team["B"].url, TEAM)
        try:
            created = await a.call_tool("generate_image", {"prompt": "made on A"})
            task_id = created["taskId"]
            assert (await b.get(task_id))["status"] == "working"
            async with b.listen({"taskIds": [task_id]}) as listening:
                assert listening.ack["params"]["notifications"]["taskIds"] == [task_id]
                emulator.finish_tasks()
                with anyio.fail_after(30):
                    while (heard := await listening.next())["params"]["status"] != "completed":
                        pass
            done = await b.get(task_id)
            assert done["status"] == "completed" and done["result"]["structuredContent"]["status"] == "success"
            assert _task_fields(heard["params"]) == _task_fields(done)

            second = await a.call_tool("generate_image", {"prompt": "cancelled on B"})
            await b.request("tasks/cancel", {"taskId": second["taskId"]})
            assert (await a.get(second["taskId"]))["status"] == "cancelled"
        finally:
            await a.aclose()
            await b.aclose()
    # One create per task, counted by prompt: a task an earlier test left running on this module's shared server
    # (the 2025-era one's) is created again, under its own key, once the emulator's reset forgets it, and lands here.
    prompts = [entry.get("prompt") for entry in emulator.task_inputs()]
    assert sorted(p for p in prompts if p in ("made on A", "cancelled on B")) == ["cancelled on B", "made on A"]
