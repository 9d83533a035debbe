"""Ask before a large spend (NANO_BANANA_CONFIRM_OVER): through the SDK client's elicitation callback, in both eras
(2026-07-28: input_required before any task; 2025-11-25: elicitation/create). Declined: nothing paid."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp_types import ElicitRequestFormParams, ElicitRequestParams, ElicitResult, InputRequiredResult
from tests.mcp_server.wire import TASKS, StdioWire

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import TextOf

pytestmark = pytest.mark.anyio

PRICES = 'unit = "USD"\n[nano-banana-2]\n2K = 0.06\n'
Answer = Callable[[ElicitRequestParams], ElicitResult]


class Person:
    """The elicitation callback: records each question and answers as told."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.asked: list[ElicitRequestParams] = []

    async def __call__(self, context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append(params)
        return self.answer(params)


def accept(params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="accept", content={"generate": True})


def decline(params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="decline")


def untick(params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="accept", content={"generate": False})


def confirming(settings: Settings, tmp_path: Path, **more: Any) -> Settings:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    return settings.model_copy(update={"confirm_over": 2, "prices": prices, **more})


@asynccontextmanager
async def connected(settings: Settings, mode: str, person: Person | None) -> AsyncIterator[Client]:
    async with Client(create_server(settings), mode=mode, read_timeout_seconds=30, elicitation_callback=person) as c:
        yield c


GENERATE = {"prompt": "a batch", "count": 3, "resolution": "2K", "wait_seconds": 30}


@pytest.mark.both_eras
async def test_accepted_the_call_goes_on(
    settings: Settings, tmp_path: Path, emulator: Emulator, mode: str, text_of: TextOf
) -> None:
    """Over the threshold, the person is asked what the call makes and costs; yes: the images are made."""
    emulator.task_seconds = 0
    person = Person(accept)
    async with connected(confirming(settings, tmp_path), mode, person) as client:
        result = await client.call_tool("generate_image", GENERATE)
    assert not result.is_error, result
    assert result.structured_content is not None
    assert result.structured_content["status"] == "success"
    assert result.structured_content["made"] == "3 images with nano-banana-2 at 2K, cost 0.18 USD"
    assert "Made 3 images with nano-banana-2 at 2K, cost 0.18 USD." in text_of(result)
    [asked] = person.asked
    assert isinstance(asked, ElicitRequestFormParams)
    assert asked.message == (
        "Generate 3 images with nano-banana-2 at 2K for 0.18 USD? Each image is paid for; this server asks before a "
        "call makes more than 2 (NANO_BANANA_CONFIRM_OVER)."
    )
    assert "generate" in asked.requested_schema["properties"]
    assert emulator.creates == 3


@pytest.mark.both_eras
@pytest.mark.parametrize("answer", [decline, untick])
async def test_declined_nothing_is_paid(
    settings: Settings, tmp_path: Path, emulator: Emulator, mode: str, answer: Answer, text_of: TextOf
) -> None:
    """No (declined, or the box unticked): an error that says nothing was paid, and no create, no row."""
    person = Person(answer)
    async with connected(confirming(settings, tmp_path), mode, person) as client:
        result = await client.call_tool("generate_image", GENERATE)
        listed = await client.call_tool("list_tasks", {})
    assert result.is_error
    assert "Not generated, nothing was paid: the person" in text_of(result)
    assert len(person.asked) == 1
    assert emulator.creates == 0
    assert listed.structured_content is not None
    assert listed.structured_content["total_local"] == 0


@pytest.mark.both_eras
async def test_under_the_threshold_nobody_is_asked(
    settings: Settings, tmp_path: Path, emulator: Emulator, mode: str
) -> None:
    emulator.task_seconds = 0
    person = Person(decline)
    async with connected(confirming(settings, tmp_path), mode, person) as client:
        result = await client.call_tool("generate_image", GENERATE | {"count": 2})
    assert not result.is_error
    assert person.asked == []
    assert emulator.creates == 2


@pytest.mark.both_eras
async def test_a_client_that_cannot_ask_gets_the_configured_behaviour(
    settings: Settings, tmp_path: Path, emulator: Emulator, mode: str, text_of: TextOf
) -> None:
    """Without form elicitation: refused by default (saying how many a call may make), made with proceed."""
    emulator.task_seconds = 0
    async with connected(confirming(settings, tmp_path), mode, None) as client:
        refused = await client.call_tool("generate_image", GENERATE)
    assert refused.is_error
    assert "this client cannot ask" in text_of(refused)
    assert "Ask for at most 2 images per call" in text_of(refused)
    assert emulator.creates == 0
    async with connected(confirming(settings, tmp_path, confirm_unasked="proceed"), mode, None) as client:
        made = await client.call_tool("generate_image", GENERATE)
    assert not made.is_error
    assert emulator.creates == 3


async def test_2026_the_question_rides_input_required_before_any_task(
    settings: Settings, tmp_path: Path, emulator: Emulator
) -> None:
    """On 2026-07-28 the first answer is input_required carrying the form and its question (not state alone), and
    nothing is written or sent until the answer comes back, even for a client that declares the Tasks extension."""
    emulator.task_seconds = 0
    async with connected(confirming(settings, tmp_path), "auto", Person(accept)) as client:
        first = await client.session.call_tool("generate_image", GENERATE, allow_input_required=True)
        assert isinstance(first, InputRequiredResult)
        assert first.input_requests
        [request] = first.input_requests.values()
        assert isinstance(request.params, ElicitRequestFormParams)
        assert request.params.message.startswith("Generate 3 images with nano-banana-2 at 2K for 0.18 USD?")
        listed = await client.call_tool("list_tasks", {})
        assert listed.structured_content is not None
        assert listed.structured_content["total_local"] == 0
    assert emulator.creates == 0


async def test_the_daily_limit_refuses_before_the_person_is_asked(
    settings: Settings, tmp_path: Path, emulator: Emulator, text_of: TextOf
) -> None:
    person = Person(accept)
    async with connected(confirming(settings, tmp_path, daily_image_limit=2), "legacy", person) as client:
        result = await client.call_tool("generate_image", GENERATE)
    assert result.is_error
    assert "daily limit is 2 images" in text_of(result)
    assert person.asked == []
    assert emulator.creates == 0


async def test_a_2026_host_with_the_tasks_extension_gets_its_task_only_after_the_answer(
    command: str, process_env: dict[str, str], tmp_path: Path, emulator: Emulator
) -> None:
    """A real server process over stdio, a host that declares the Tasks extension and form elicitation: the call is
    answered input_required (the question in inputRequests), nothing is created; sent again with the answer and the
    requestState, it becomes a task that completes with 3 creates. Declined instead: no task, nothing created."""
    emulator.task_seconds = 600.0  # longer than the 1 s inline wait (a task) until the test ends it
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    env = process_env | {"NANO_BANANA_CONFIRM_OVER": "2", "NANO_BANANA_PRICES": str(prices)}
    capabilities: dict[str, Any] = {
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {TASKS: {}}, "elicitation": {"form": {}}}
    }

    async def call(extra: dict[str, Any]) -> dict[str, Any]:
        params = {"name": "generate_image", "arguments": GENERATE, "_meta": capabilities, **extra}
        return await wire.request("tools/call", params)

    async with StdioWire.spawn([command], env) as wire:
        asked = await call({})
        assert asked["resultType"] == "input_required"
        [(key, request)] = asked["inputRequests"].items()
        assert request["method"] == "elicitation/create"
        assert request["params"]["message"].startswith("Generate 3 images with nano-banana-2 at 2K for 0.18 USD?")
        assert emulator.creates == 0
        no = {"action": "decline"}
        declined = await call({"inputResponses": {key: no}, "requestState": asked["requestState"]})
        assert declined.get("isError") is True and declined.get("resultType") != "task"
        assert emulator.creates == 0
        yes = {"action": "accept", "content": {"generate": True}}
        task = await call({"inputResponses": {key: yes}, "requestState": asked["requestState"]})
        assert task["resultType"] == "task", task
        emulator.finish_tasks()
        done = await wire.poll(task["taskId"])
    assert done["status"] == "completed"
    assert done["result"]["structuredContent"]["made"].startswith("3 images")
    assert emulator.creates == 3
