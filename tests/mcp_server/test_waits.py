"""No wait outlasts the host (issue 24): every ``wait_seconds`` is at most 45 s in the schema and in what the server
does, a longer one is shortened and the result says so, and a call the host cuts off leaves its task first in
``list_tasks``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp import Client

from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import waits

if TYPE_CHECKING:
    from tests.conftest import TextOf

pytestmark = pytest.mark.anyio


@pytest.mark.both_eras
async def test_every_wait_seconds_says_45_at_most_in_its_schema(mcp_client: Client) -> None:
    """A host that checks arguments against the schema (or a model that reads it) never asks for more than 45 s."""
    tools = {t.name: t for t in (await mcp_client.list_tools()).tools}
    waiting = {
        name: t.input_schema["properties"]["wait_seconds"]
        for name, t in tools.items()
        if "wait_seconds" in t.input_schema.get("properties", {})
    }
    assert set(waiting) == {"generate_image", "get_task"}
    assert {name: schema.get("maximum") for name, schema in waiting.items()} == {
        "generate_image": 45,
        "get_task": 45,
    }


async def test_a_longer_wait_is_shortened_and_the_result_says_so(
    mcp_client: Client, emulator: Emulator, text_of: TextOf, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that asks for 90 s (OpenClaw cut such a call at 60 s, and the model got no task id) gets the task id back
    at the cap, with a line saying the wait was shortened; get_task does the same. The cap is scaled down to 0.3 s here
    so the test does not sit through 45 s."""
    monkeypatch.setattr(waits, "WAIT_CAP", 0.3)
    emulator.task_seconds = 30
    with anyio.fail_after(20):
        first = await mcp_client.call_tool("generate_image", {"prompt": "a slow fox", "wait_seconds": 90})
    assert not first.is_error, text_of(first)
    data = first.structured_content
    assert data["status"] in ("pending", "running")
    text = text_of(first)
    assert data["task_id"] in text
    assert "shortened to 0.3 s (asked: 90)" in text

    with anyio.fail_after(20):
        again = await mcp_client.call_tool("get_task", {"task_id": data["task_id"], "wait_seconds": 600})
    assert again.structured_content["status"] in ("pending", "running")
    assert "(asked: 600)" in text_of(again)


async def test_a_wait_within_the_cap_says_nothing_about_it(mcp_client: Client, text_of: TextOf) -> None:
    result = await mcp_client.call_tool("generate_image", {"prompt": "a quick fox", "wait_seconds": 30})
    assert result.structured_content["status"] == "success"
    assert "shortened" not in text_of(result)


@pytest.mark.slow  # waits on real time
async def test_a_call_the_host_cuts_off_leaves_its_task_first_in_list_tasks(
    mcp_client: Client, emulator: Emulator, text_of: TextOf
) -> None:
    """The host gives up on generate_image (its own timeout) once the task is made: the task keeps running,
    list_tasks shows it first, and get_task brings its image. The tool descriptions tell the model so."""
    emulator.task_seconds = 1.5
    await mcp_client.call_tool("generate_image", {"prompt": "an older picture", "wait_seconds": 0})
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await mcp_client.call_tool("generate_image", {"prompt": "a picture the host gave up on"})

            tg.start_soon(call)
            while emulator.creates < 2:  # the create reached the API: now the host cuts the call
                await anyio.sleep(0.02)
            tg.cancel_scope.cancel()

    listed = await mcp_client.call_tool("list_tasks", {})
    first: dict[str, Any] = listed.structured_content["tasks"][0]
    assert first["prompt"] == "a picture the host gave up on"
    with anyio.fail_after(20):
        done = await mcp_client.call_tool("get_task", {"task_id": first["task_id"], "wait_seconds": 20})
    assert done.structured_content["status"] == "success", text_of(done)
    assert emulator.creates == 2

    tools = {t.name: t.description or "" for t in (await mcp_client.list_tools()).tools}
    assert "if cut off, list_tasks shows it first" in tools["generate_image"]
    assert "newest first" in tools["list_tasks"]
