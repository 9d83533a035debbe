"""The app factory: resources for results, background-finish notifications, and the bearer-token check."""

from __future__ import annotations

import json
import sqlite3

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import TextResourceContents
from pydantic import SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import StaticTokenVerifier, create_server

pytestmark = pytest.mark.anyio


@pytest.mark.both_eras
async def test_task_resource_reads_the_result(mcp_client: Client) -> None:
    """A task's resource is its structured result as JSON."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "a lighthouse"})
    task_id = result.structured_content["task_id"]
    [content] = (await mcp_client.read_resource(f"nano-banana://tasks/{task_id}")).contents
    assert isinstance(content, TextResourceContents)
    task = json.loads(content.text)
    assert task["task_id"] == task_id
    assert task["status"] == "success"
    assert task["images"] == result.structured_content["images"]


@pytest.mark.both_eras
@pytest.mark.parametrize(
    ("suffix", "expected"),
    [
        pytest.param("/images/7", "has no image 7", id="index-out-of-range"),
        pytest.param("/images/x", "has no image 'x'", id="index-not-a-number"),
        pytest.param("/images/²", "has no image '²'", id="index-superscript"),
        pytest.param("/images/\u0661", "has no image '\u0661'", id="index-arabic-indic-digit"),
        pytest.param("/images/" + "9" * 5000, "has no image '99999", id="index-of-5000-digits"),
    ],
)
async def test_image_resource_refuses_an_image_the_task_lacks(mcp_client: Client, suffix: str, expected: str) -> None:
    """Reading an image the task does not have is an error that says so, however the index is written (a superscript
    digit once gave "Error creating resource from template")."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "one image"})
    uri = f"nano-banana://tasks/{result.structured_content['task_id']}{suffix}"
    with pytest.raises(MCPError, match=expected):
        await mcp_client.read_resource(uri)


@pytest.mark.both_eras
async def test_unknown_task_resource_points_to_list_tasks(mcp_client: Client) -> None:
    """A resource for a task nobody knows is an error that points to list_tasks."""
    with pytest.raises(MCPError, match="list_tasks"):
        await mcp_client.read_resource("nano-banana://tasks/task_nope")


async def test_background_finish_reaches_listeners(settings: Settings, emulator: Emulator) -> None:
    """A 2026 client listening on a task's resource hears when it finishes after the call returned."""
    emulator.task_seconds = 0.5
    heard: list[str] = []
    async with Client(create_server(settings), mode="auto") as client:
        first = await client.call_tool("generate_image", {"prompt": "notify me", "wait_seconds": 0})
        uri = f"nano-banana://tasks/{first.structured_content['task_id']}"
        with anyio.fail_after(10):
            async with client.listen(resource_subscriptions=[uri]) as sub:
                async for event in sub:
                    assert isinstance(event, ResourceUpdated)
                    heard.append(event.uri)
                    break
        [task] = (await client.read_resource(uri)).contents
    assert heard == [uri]
    assert isinstance(task, TextResourceContents)
    assert '"status": "success"' in task.text


async def test_static_token_verifier_accepts_only_its_token() -> None:
    """The configured token is accepted; any other, or a prefix of it, is not."""
    verifier = StaticTokenVerifier(SecretStr("s3cret-token"))
    accepted = await verifier.verify_token("s3cret-token")
    assert accepted is not None
    assert accepted.token != "s3cret-token"  # the secret is not carried around in the access token
    for wrong in ("s3cret", "s3cret-token2", "", "S3CRET-TOKEN"):
        assert await verifier.verify_token(wrong) is None


async def test_image_resource_serves_only_files_in_the_output_folder(mcp_client: Client, settings: Settings) -> None:
    """A ledger row edited to point at another file (/etc/passwd) is not served: the ledger is not trusted."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "mine"})
    task_id = result.structured_content["task_id"]
    uri = f"nano-banana://tasks/{task_id}/images/0"
    assert (await mcp_client.read_resource(uri)).contents  # served while it is ours

    db = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
    images = db.execute("SELECT images FROM tasks WHERE task_id=?", (task_id,)).fetchone()[0]
    db.execute(
        "UPDATE tasks SET images=? WHERE task_id=?",
        (images.replace(result.structured_content["images"][0]["path"], "/etc/passwd"), task_id),
    )
    db.commit()
    db.close()
    with pytest.raises(MCPError, match="not in the output folder"):
        await mcp_client.read_resource(uri)


@pytest.mark.both_eras
@pytest.mark.parametrize(("fmt", "mime"), [("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")])
async def test_image_resource_has_the_images_own_type(mcp_client: Client, fmt: str, mime: str) -> None:
    """A saved image read as a resource says what it is (PNG, JPEG or WebP), not the template's default."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "typed", "output_format": fmt})
    read = await mcp_client.read_resource(result.structured_content["images"][0]["uri"])
    [content] = read.contents
    assert content.mime_type == mime
