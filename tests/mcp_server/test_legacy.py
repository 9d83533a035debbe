"""2025-era shims, over a legacy (handshake) connection: resources/subscribe and the client's roots."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.session import IncomingMessage, ListRootsFnT
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import ListRootsResult, Root, TextResourceContents
from pydantic import FileUrl, SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import MakePng, MakeSettings, TextOf
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

TOKEN = "roots-test-token-0123456789"


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_background_finish_notifies_subscribers(settings: Settings, emulator: Emulator) -> None:
    """A legacy client subscribed to a task's resource hears when it finishes after the call returned."""
    emulator.task_seconds = 0.5
    updates: list[str] = []
    updated = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
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
        [task] = (await client.read_resource(uri)).contents
    assert updates == [uri]
    assert isinstance(task, TextResourceContents)
    assert '"status": "success"' in task.text


async def test_upload_reference_reads_from_a_client_root(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, png: MakePng, text_of: TextOf
) -> None:
    """A folder a legacy client declares as a root is readable by upload_reference too."""
    project = tmp_path_factory.mktemp("project")

    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl(project.as_uri()), name="project")])

    async with Client(create_server(settings), mode="legacy", list_roots_callback=list_roots) as client:
        result = await client.call_tool("upload_reference", {"path": str(png(project / "r.png"))})
    assert not result.is_error, text_of(result)
    assert emulator.uploads == 1


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
@pytest.mark.filterwarnings("ignore:resources/unsubscribe is removed")
async def test_subscriptions_only_to_known_tasks_and_capped_per_session(settings: Settings, emulator: Emulator) -> None:
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


# -- the client's roots ----------------------------------------------------------------------------


def _roots_callback(*folders: str) -> ListRootsFnT:
    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl(uri), name=f"root {n}") for n, uri in enumerate(folders)])

    return list_roots


async def test_roots_of_an_http_client_never_widen_what_the_server_reads(
    make_settings: MakeSettings,
    emulator_server: Emulator,
    serve_http: ServeHttp,
    tmp_path_factory: pytest.TempPathFactory,
    emulator: Emulator,
    png: MakePng,
    text_of: TextOf,
) -> None:
    """Over HTTP, a legacy client declaring ``file:///``, a hidden folder or any other folder as its roots reads
    nothing outside the server's allowed folders: a mode-600 image there is refused, and nothing is uploaded."""
    settings = make_settings(emulator_server.base_url, tmp_path_factory.mktemp("served")).model_copy(
        update={"http_token": SecretStr(TOKEN)}
    )
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    private = png(elsewhere / "private.png")
    private.chmod(0o600)
    hidden = png(elsewhere / ".cache" / "cached.png")
    roots = _roots_callback("file:///", elsewhere.as_uri(), hidden.parent.as_uri())
    with serve_http(settings) as base:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http,
            Client(
                streamable_http_client(f"{base}/mcp", http_client=http), mode="legacy", list_roots_callback=roots
            ) as client,
        ):
            for path in (private, hidden):
                uploaded = await client.call_tool("upload_reference", {"path": str(path)})
                generated = await client.call_tool("generate_image", {"prompt": "p", "images": [str(path)]})
                for result in (uploaded, generated):
                    assert result.is_error
                    assert "outside the folders this server may read" in text_of(result)
    assert emulator.uploads == 0
    assert emulator.creates == 0


async def test_roots_on_stdio_keep_every_reading_rule(
    settings: Settings, tmp_path_factory: pytest.TempPathFactory, emulator: Emulator, png: MakePng, text_of: TextOf
) -> None:
    """On stdio a root may name a folder, but each rule holds for the root itself as inside it: ``file:///`` (the
    whole disk), a hidden folder, a folder inside one, a link to one and a root that is not a folder name nothing
    readable; a link inside a good root that leads out of it is refused. The plain project folder still works."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    project = tmp_path_factory.mktemp("project")
    private = png(elsewhere / "private.png")
    private.chmod(0o600)
    cached = png(elsewhere / ".cache" / "cached.png")
    deeper = png(elsewhere / ".cache" / "sub" / "deeper.png")
    (elsewhere / "linked").symlink_to(elsewhere / ".cache")
    fifo = elsewhere / "fifo"
    os.mkfifo(fifo)
    (project / "escape.png").symlink_to(private)
    roots = _roots_callback(
        "file:///",
        (elsewhere / ".cache").as_uri(),
        deeper.parent.as_uri(),
        (elsewhere / "linked").as_uri(),
        private.as_uri(),
        fifo.as_uri(),
        project.as_uri(),
    )
    refused = [private, cached, deeper, elsewhere / "linked" / "cached.png", project / "escape.png"]
    async with Client(create_server(settings), mode="legacy", list_roots_callback=roots) as client:
        for path in refused:
            result = await client.call_tool("upload_reference", {"path": str(path)})
            assert result.is_error, path
            assert "outside the folders this server may read" in text_of(result)
        assert emulator.uploads == 0
        ok = await client.call_tool("upload_reference", {"path": str(png(project / "mine.png"))})
        assert not ok.is_error, text_of(ok)
    assert emulator.uploads == 1
