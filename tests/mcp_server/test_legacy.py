"""2025-era shims, over a legacy (handshake) connection: resources/subscribe and the client's roots."""

from __future__ import annotations

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import ListRootsResult, Root

from nano_banana_mcp.config import Settings
from nano_banana_mcp.mcp_server import create_server

pytestmark = pytest.mark.anyio


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_background_finish_notifies_subscribers(settings: Settings, emulator) -> None:
    """A legacy client subscribed to a task's resource hears when it finishes after the call returned."""
    emulator.task_seconds = 0.5
    updates: list[str] = []
    updated = anyio.Event()

    async def on_message(message) -> None:
        uri = getattr(getattr(message, "params", None), "uri", None)
        if type(message).__name__ == "ResourceUpdatedNotification" and uri:
            updates.append(str(uri))
            updated.set()

    async with Client(create_server(settings), mode="legacy", message_handler=on_message) as client:
        first = await client.call_tool("generate_image", {"prompt": "notify me", "wait_seconds": 0})
        uri = f"nano-banana://tasks/{first.structured_content['task_id']}"
        with anyio.fail_after(10):
            await client.subscribe_resource(uri)
            await updated.wait()
        task = await client.read_resource(uri)
    assert updates == [uri]
    assert '"status": "success"' in task.contents[0].text


async def test_upload_reference_reads_from_a_client_root(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, emulator, png, text_of
) -> None:
    """A folder a legacy client declares as a root is readable by upload_reference too."""
    project = tmp_path_factory.mktemp("project")

    async def list_roots(context) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=project.as_uri(), name="project")])

    async with Client(create_server(settings), mode="legacy", list_roots_callback=list_roots) as client:
        result = await client.call_tool("upload_reference", {"path": str(png(project / "r.png"))})
    assert not result.is_error, text_of(result)
    assert emulator.uploads == 1


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
@pytest.mark.filterwarnings("ignore:resources/unsubscribe is removed")
async def test_subscriptions_only_to_known_tasks_and_capped_per_session(settings: Settings, emulator) -> None:
    """Made-up URIs and unknown tasks are refused (a client cannot grow the server's memory by subscribing),
    and one session holds at most 100 subscriptions."""
    emulator.task_seconds = 0
    async with Client(create_server(settings), mode="legacy") as client:
        for uri in ["https://example.com/x", "nano-banana://tasks/task_unknown", "nano-banana://other/1"] + [
            f"nano-banana://tasks/made-up-{i}" for i in range(300)
        ]:
            with pytest.raises(MCPError, match="No such task resource"):
                await client.subscribe_resource(uri)
        made = await client.call_tool("generate_image", {"prompt": "watch me"})
        task_id = made.structured_content["task_id"]
        for index in range(100):
            await client.subscribe_resource(f"nano-banana://tasks/{task_id}/images/{index}")
        await client.subscribe_resource(f"nano-banana://tasks/{task_id}/images/0")  # the same one again is fine
        with pytest.raises(MCPError, match="At most 100"):
            await client.subscribe_resource(f"nano-banana://tasks/{task_id}")
        await client.unsubscribe_resource(f"nano-banana://tasks/{task_id}/images/0")
        await client.subscribe_resource(f"nano-banana://tasks/{task_id}")
