"""Named reference sets over MCP: made with upload_reference's ``set``, read as resources, named in generate_image's
``images`` (the result records them), set names completed; blind across tenants over real HTTP; and the chain an
agent runs, a character made once then three scenes, through the real process over stdio."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import BlobResourceContents, ResourceTemplateReference, TextResourceContents

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator

if TYPE_CHECKING:
    from tests.conftest import MakePng, MakeSettings, TextOf
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

HERO = "nano-banana://sets/hero"
ALICE = "alice-sets-token-0123456789"
BOB = "bob-sets-token-9876543210"


async def read_json(client: Client, uri: str) -> Any:
    [content] = (await client.read_resource(uri)).contents
    assert isinstance(content, TextResourceContents)
    return json.loads(content.text)


async def test_a_set_made_with_upload_reference_is_read_used_and_recorded(
    mcp_client: Client, emulator: Emulator, png: MakePng, settings: Settings, text_of: TextOf
) -> None:
    """upload_reference(set=...) keeps each image in the set; the set reads as resources (its images as they were
    kept); generate_image expands it, and its result names the set; a bad name is one line, nothing uploaded."""
    images = [png(settings.allowed_dirs[0] / f"hero-{i}.png", (24 + i, 24)) for i in range(2)]
    for path in images:
        up = await mcp_client.call_tool("upload_reference", {"path": str(path), "set": "Hero"})
        assert not up.is_error, text_of(up)
    assert emulator.uploads == 2

    listed = await read_json(mcp_client, "nano-banana://sets")
    assert [(s["uri"], s["size"]) for s in listed["sets"]] == [(HERO, 2)]
    shown = await read_json(mcp_client, HERO)
    assert [i["uri"] for i in shown["images"]] == [f"{HERO}/images/0", f"{HERO}/images/1"]
    [blob] = (await mcp_client.read_resource(f"{HERO}/images/1")).contents
    assert isinstance(blob, BlobResourceContents) and blob.mime_type == "image/png"

    made = await mcp_client.call_tool("generate_image", {"prompt": "the hero at sea", "images": [HERO]})
    assert not made.is_error, text_of(made)
    assert made.structured_content is not None and made.structured_content["sets"] == [HERO]
    assert (emulator.creates, emulator.uploads) == (1, 2)  # the set's uploads were still valid: none again

    bad = await mcp_client.call_tool("upload_reference", {"path": str(images[0]), "set": "no spaces please"})
    assert bad.is_error and "is not usable" in text_of(bad) and "\n" not in text_of(bad)
    unknown = await mcp_client.call_tool("generate_image", {"prompt": "x", "images": ["nano-banana://sets/villain"]})
    assert unknown.is_error and "villain" in text_of(unknown)
    assert (emulator.creates, emulator.uploads) == (1, 2)
    with pytest.raises(MCPError):
        await mcp_client.read_resource("nano-banana://sets/villain")


async def test_set_names_are_completed_for_the_set_templates(
    mcp_client: Client, png: MakePng, settings: Settings
) -> None:
    """MCP completes resource-template variables (not tool arguments): the caller's set names for ``{name}``."""
    for name in ("hero", "heroine", "style"):
        path = png(settings.allowed_dirs[0] / f"{name}.png", (10 + len(name), 10))
        assert not (await mcp_client.call_tool("upload_reference", {"path": str(path), "set": name})).is_error
    for template in ("nano-banana://sets/{name}", "nano-banana://sets/{name}/images/{index}"):
        done = await mcp_client.complete(ResourceTemplateReference(uri=template), {"name": "name", "value": "HER"})
        assert done.completion.values == ["hero", "heroine"]
    other = await mcp_client.complete(
        ResourceTemplateReference(uri="nano-banana://tasks/{task_id}"), {"name": "task_id", "value": ""}
    )
    assert other.completion.values == []


@pytest.fixture
def two_tenants(
    tmp_path: Path, make_settings: MakeSettings, emulator: Emulator, serve_http: ServeHttp
) -> Iterator[tuple[str, Settings]]:
    """The HTTP app with a tokens file of two tenants, alice and bob."""
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob sha256:{hashlib.sha256(BOB.encode()).hexdigest()}\n")
    tokens.chmod(0o600)
    settings = make_settings(emulator.base_url, tmp_path).model_copy(update={"http_tokens_file": tokens})
    with serve_http(settings) as base:
        yield f"{base}/mcp", settings


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client,
    ):
        yield client


def _error(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


async def test_a_set_is_blind_across_tenants_over_http(
    two_tenants: tuple[str, Settings], emulator: Emulator, png: MakePng
) -> None:
    """Alice's set is not listed, read, completed or usable for bob: each answer is the one a name nobody made gets,
    and nothing is paid; bob's set of the same name is his own."""
    url, settings = two_tenants
    reference = png(settings.allowed_dirs[0] / "alice-hero.png")
    async with connect(url, ALICE) as alice, connect(url, BOB) as bob:
        made = await alice.call_tool("upload_reference", {"path": str(reference), "set": "hero"})
        assert not made.is_error, _error(made)
        assert (await read_json(bob, "nano-banana://sets"))["sets"] == []

        def same(text: str, name: str) -> str:
            return text.replace(name, "<name>")

        answers = []
        for name in ("hero", "nobody"):
            used = await bob.call_tool("generate_image", {"prompt": "x", "images": [f"nano-banana://sets/{name}"]})
            assert used.is_error
            with pytest.raises(MCPError) as read:
                await bob.read_resource(f"nano-banana://sets/{name}")
            with pytest.raises(MCPError) as image:
                await bob.read_resource(f"nano-banana://sets/{name}/images/0")
            answers.append(
                [same(_error(used), name), same(read.value.error.message, name), same(image.value.error.message, name)]
            )
        assert answers[0] == answers[1]
        completed = await bob.complete(
            ResourceTemplateReference(uri="nano-banana://sets/{name}"), {"name": "name", "value": ""}
        )
        assert completed.completion.values == []
        assert emulator.creates == 0

        his = await bob.call_tool("upload_reference", {"path": str(reference), "set": "hero"})
        assert not his.is_error, _error(his)
        bob_set, alice_set = await read_json(bob, "nano-banana://sets/hero"), await read_json(alice, HERO)
        assert len(bob_set["images"]) == len(alice_set["images"]) == 1
        assert emulator.uploads == 2  # each tenant's own upload


async def test_a_character_made_once_then_three_scenes_over_stdio(
    emulator: Emulator, process_env: dict[str, str], tmp_path: Path, png: MakePng, command: str
) -> None:
    """The chain SKILL.md teaches, through the real process: two images of the hero kept once as a set, then three
    scenes that each name nano-banana://sets/hero; each scene is one create, and the set is uploaded once."""
    character = [png(tmp_path / "hero" / f"{view}.png", (32 + i, 32)) for i, view in enumerate(("front", "side"))]
    params = StdioServerParameters(command=command, args=[], env=process_env)
    async with Client(params, read_timeout_seconds=30) as client:
        for path in character:
            kept = await client.call_tool("upload_reference", {"path": str(path), "set": "hero"})
            assert not kept.is_error, _error(kept)
        scenes = []
        for scene in ("the hero in a forest", "the hero on a rooftop at night", "the hero asleep on a train"):
            made = await client.call_tool("generate_image", {"prompt": scene, "images": [HERO]})
            assert not made.is_error, _error(made)
            scenes.append(made.structured_content)
    assert [s["sets"] for s in scenes] == [[HERO]] * 3
    assert all(s["status"] == "success" for s in scenes)
    assert (emulator.creates, emulator.uploads) == (3, 2)
    inputs = [task.input["images"] for task in emulator.state.tasks.values()]
    assert len(inputs) == 3 and inputs[0] == inputs[1] == inputs[2] and len(inputs[0]) == 2
