"""The five tools end to end: SDK client → server → Monet client → emulator over HTTP → files on disk."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp import Client
from mcp_types import BlobResourceContents
from PIL import Image
from PIL.PngImagePlugin import PngImageFile

from nano_banana_mcp import catalog
from nano_banana_mcp.catalog import Model
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator, RequestRecord, output_size
from nano_banana_mcp.images.decoding import thumbnail
from nano_banana_mcp.images.provenance import read_provenance
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import MakePng, TextOf

pytestmark = pytest.mark.anyio


def api_writes(emulator: Emulator) -> list[RequestRecord]:
    """Requests that could cost money or store data at the API: creates and uploads."""
    return [r for r in emulator.requests if r.method == "POST"]


# -- happy paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(catalog.MODELS.values()), ids=lambda m: m.name)
async def test_generate_saves_images_for_each_model(
    mcp_client: Client, emulator: Emulator, settings: Settings, model: Model, text_of: TextOf
) -> None:
    """Each model's widest options produce a real image of the right size on disk, described in the result."""
    ratio = model.aspect_ratios[-1]
    resolution = model.resolutions[0] if model.resolutions else None
    args = {"prompt": "a red fox in snow", "model": model.name, "aspect_ratio": ratio, "wait_seconds": 30}
    if resolution:
        args["resolution"] = resolution
    result = await mcp_client.call_tool("generate_image", args)

    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data["status"] == "success"
    assert data["model"] == model.name
    assert data["task_id"].startswith("task_")
    [image] = data["images"]
    path = Path(image["path"])
    assert path.is_absolute()
    assert path.parent == settings.output_dir
    expected = output_size(ratio, resolution)
    with Image.open(path) as im:
        assert im.size == expected
    assert (image["width"], image["height"]) == expected
    assert image["size_bytes"] == path.stat().st_size
    assert image["mime_type"] == "image/png"
    assert image["url"].startswith("http")
    assert str(path) in text_of(result)


@pytest.mark.both_eras
async def test_result_carries_a_small_thumbnail_and_a_resource_link(mcp_client: Client, text_of: TextOf) -> None:
    """A 4K result shows a ≤512 px, ≤100 KB preview and links the full image, which reads back whole."""
    result = await mcp_client.call_tool(
        "generate_image", {"prompt": "city at night", "aspect_ratio": "16:9", "resolution": "4K"}
    )
    assert not result.is_error, text_of(result)
    [thumb] = [c for c in result.content if c.type == "image"]
    raw = base64.b64decode(thumb.data)
    assert len(raw) <= 100 * 1024
    with Image.open(io.BytesIO(raw)) as im:
        assert max(im.size) <= 512
        assert im.size[0] > im.size[1]  # still 16:9
    [link] = [c for c in result.content if c.type == "resource_link"]
    full = await mcp_client.read_resource(link.uri)
    path = Path(result.structured_content["images"][0]["path"])
    [content] = full.contents
    assert isinstance(content, BlobResourceContents)
    assert base64.b64decode(content.blob) == path.read_bytes()


async def test_offline_placeholder_is_labelled(tmp_path: Path, mode: str) -> None:
    """In offline mode the saved images say what they are in the file itself, and are not typed as AI media."""
    offline = Settings(offline=True, output_dir=tmp_path / "out", data_dir=tmp_path / "data", emulator_task_seconds=0.2)
    async with Client(create_server(offline), mode=mode) as client:
        result = await client.call_tool("generate_image", {"prompt": "a teapot"})
    assert result.structured_content["offline"] is True
    path = Path(result.structured_content["images"][0]["path"])
    with Image.open(path) as im:
        assert isinstance(im, PngImageFile)
        assert "placeholder" in im.text["Description"].lower()
    assert not read_provenance(path)["digital_source_type"].endswith("/trainedAlgorithmicMedia")


# -- refusals before anything is paid for --------------------------------------------------------

REFUSALS = [
    pytest.param({"model": "nano-banana-1", "resolution": "2K"}, "takes no resolution", id="nb1-resolution"),
    pytest.param(
        {"model": "nano-banana-1", "aspect_ratio": "21:9"}, "1:1, 2:3, 3:2, 4:3, 3:4, 16:9, 9:16", id="nb1-ratio"
    ),
    pytest.param({"model": "nano-banana-1-pro", "aspect_ratio": "8:1"}, "4:5, 5:4, 21:9", id="pro-ratio"),
    pytest.param({"model": "nano-banana-1", "images": 6}, "at most 5 reference images", id="nb1-images"),
    pytest.param({"model": "nano-banana-2", "images": 15}, "at most 14 reference images", id="nb2-images"),
    pytest.param({"model": "nano-banana-1-pro", "images": 15}, "at most 14 reference images", id="pro-images"),
    pytest.param({"prompt": "  "}, "prompt is empty", id="empty-prompt"),
]


@pytest.mark.parametrize(("options", "expected"), REFUSALS)
async def test_refused_before_any_upload_or_create(
    mcp_client: Client,
    emulator: Emulator,
    tmp_path: Path,
    options: dict[str, Any],
    expected: str,
    png: MakePng,
    text_of: TextOf,
) -> None:
    """Each per-model rule refuses with what the model accepts; nothing is uploaded or created."""
    ref = png(tmp_path / "ref.png")
    args: dict[str, Any] = {"prompt": "a cat"} | options
    if isinstance(args.get("images"), int):
        args["images"] = [str(ref)] * args["images"]
    else:
        args["images"] = [str(ref)]
    result = await mcp_client.call_tool("generate_image", args)
    assert result.is_error
    assert expected in text_of(result)
    assert api_writes(emulator) == []
    assert emulator.creates == 0
    assert emulator.uploads == 0


async def test_bad_reference_refused_before_any_upload(
    mcp_client: Client, emulator: Emulator, tmp_path: Path, png: MakePng, text_of: TextOf
) -> None:
    """A non-image among good references stops the call before the good ones are uploaded."""
    good = png(tmp_path / "good.png")
    fake = tmp_path / "notes.png"
    fake.write_text("not an image")
    result = await mcp_client.call_tool("generate_image", {"prompt": "x", "images": [str(good), str(fake)]})
    assert result.is_error
    assert "not a PNG, JPEG, WebP, GIF or HEIC" in text_of(result)
    assert emulator.uploads == 0
    assert emulator.creates == 0


async def test_plain_http_reference_refused(mcp_client: Client, emulator: Emulator, text_of: TextOf) -> None:
    """Remote references must be https."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "x", "images": ["http://example.com/a.png"]})
    assert result.is_error
    assert "https://" in text_of(result)
    assert emulator.creates == 0


# -- references ----------------------------------------------------------------------------------


async def test_local_reference_is_uploaded_once_and_used(
    mcp_client: Client, emulator: Emulator, tmp_path: Path, png: MakePng, text_of: TextOf
) -> None:
    """A local path is uploaded, its URL goes into the task, and a second use reuses the upload."""
    ref = png(tmp_path / "me.png")
    for _ in range(2):
        result = await mcp_client.call_tool("generate_image", {"prompt": "me as a knight", "images": [str(ref)]})
        assert result.structured_content["status"] == "success", text_of(result)
    assert emulator.uploads == 1
    assert emulator.creates == 2


async def test_upload_reference_url_is_accepted_by_generate(
    mcp_client: Client, emulator: Emulator, tmp_path: Path, png: MakePng, text_of: TextOf
) -> None:
    """upload_reference returns a URL and expiry; generate_image takes that URL without another upload."""
    up = await mcp_client.call_tool("upload_reference", {"path": str(png(tmp_path / "r.png"))})
    assert not up.is_error, text_of(up)
    url = up.structured_content["url"]
    assert up.structured_content["expires_at"]
    result = await mcp_client.call_tool("generate_image", {"prompt": "same style", "images": [url]})
    assert result.structured_content["status"] == "success", text_of(result)
    assert emulator.uploads == 1


# -- long tasks, faults, failures ----------------------------------------------------------------


async def test_long_task_returns_a_handle_then_get_task_collects(
    mcp_client: Client, emulator: Emulator, text_of: TextOf
) -> None:
    """A task that outlives wait_seconds comes back as a handle; get_task with a wait returns the files."""
    emulator.task_seconds = 1.0
    first = await mcp_client.call_tool("generate_image", {"prompt": "slow", "wait_seconds": 0.1})
    assert not first.is_error, text_of(first)
    handle = first.structured_content
    assert handle["status"] in ("pending", "running")
    assert handle["images"] == []
    assert "get_task" in handle["next_step"]
    assert handle["task_id"] in text_of(first)

    done = await mcp_client.call_tool("get_task", {"task_id": handle["task_id"], "wait_seconds": 10})
    assert done.structured_content["status"] == "success"
    assert Path(done.structured_content["images"][0]["path"]).is_file()
    assert emulator.creates == 1


async def test_finished_in_background_without_anyone_waiting(mcp_client: Client, emulator: Emulator) -> None:
    """After the call returned, the server still downloads the result; get_task without waiting sees it."""
    emulator.task_seconds = 0.3
    first = await mcp_client.call_tool("generate_image", {"prompt": "later", "wait_seconds": 0})
    task_id = first.structured_content["task_id"]
    with anyio.fail_after(10):
        while True:
            await anyio.sleep(0.1)
            later = await mcp_client.call_tool("get_task", {"task_id": task_id})
            if later.structured_content["status"] == "success":
                break
    assert Path(later.structured_content["images"][0]["path"]).is_file()


async def test_dropped_stream_falls_back_to_polling(mcp_client: Client, emulator: Emulator, text_of: TextOf) -> None:
    """When the progress stream breaks, polling finishes the task; one task created."""
    emulator.task_seconds = 0.5
    emulator.faults.drop_streams = 5
    result = await mcp_client.call_tool("generate_image", {"prompt": "resilient"})
    assert result.structured_content["status"] == "success", text_of(result)
    assert emulator.creates == 1
    assert any(r.method == "GET" and r.path.startswith("/api/v1/tasks/task_") for r in emulator.requests)


@pytest.mark.parametrize("fault", ["rate_limit", "server_errors", "lose_create_responses"])
async def test_transient_faults_create_exactly_one_task(
    mcp_client: Client, emulator: Emulator, fault: str, text_of: TextOf
) -> None:
    """429s, 5xx and a lost create response are retried with the same key: one task, images saved."""
    setattr(emulator.faults, fault, 2)
    result = await mcp_client.call_tool("generate_image", {"prompt": "steady"})
    assert result.structured_content["status"] == "success", text_of(result)
    assert emulator.creates == 1


async def test_failed_task_is_a_clear_failure(mcp_client: Client, emulator: Emulator, text_of: TextOf) -> None:
    """A task the API fails comes back failed, with the API's reason."""
    emulator.faults.fail_tasks = 1
    result = await mcp_client.call_tool("generate_image", {"prompt": "doomed"})
    data = result.structured_content
    assert data["status"] == "failed"
    assert data["error"]
    assert data["images"] == []
    assert "failed" in text_of(result)


@pytest.mark.both_eras
async def test_progress_notifications_arrive(mcp_client: Client, emulator: Emulator) -> None:
    """Waiting reports progress, rising to 100 when the images are saved."""
    emulator.task_seconds = 0.6
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await mcp_client.call_tool("generate_image", {"prompt": "p"}, progress_callback=on_progress)
    assert result.structured_content["status"] == "success"
    assert len(seen) >= 3
    assert seen == sorted(seen)
    assert seen[-1] == 100


async def test_unknown_task_id_is_a_clear_error(mcp_client: Client, text_of: TextOf) -> None:
    """get_task on an id nobody knows says so and points to list_tasks."""
    result = await mcp_client.call_tool("get_task", {"task_id": "task_nope"})
    assert result.is_error
    assert "list_tasks" in text_of(result)


async def test_list_tasks_shows_this_servers_tasks(mcp_client: Client) -> None:
    """Tasks made through the server are listed newest first."""
    ids = []
    for prompt in ("one", "two"):
        result = await mcp_client.call_tool("generate_image", {"prompt": prompt})
        ids.append(result.structured_content["task_id"])
    listed = await mcp_client.call_tool("list_tasks", {})
    assert [t["task_id"] for t in listed.structured_content["tasks"]] == ids[::-1]
    assert listed.structured_content["total_local"] == 2
    assert listed.structured_content["total_api"] == 2


async def test_list_models_matches_the_catalogue(mcp_client: Client) -> None:
    """list_models reports each model's limits and the default."""
    result = await mcp_client.call_tool("list_models", {})
    models = {m["name"]: m for m in result.structured_content["models"]}
    assert set(models) == set(catalog.MODELS)
    assert result.structured_content["default"] == catalog.DEFAULT
    assert models["nano-banana-1"]["resolutions"] == []
    assert models["nano-banana-2"]["max_reference_images"] == 14


# -- no key --------------------------------------------------------------------------------------


async def test_without_a_key_tools_list_and_calls_explain(tmp_path: Path, mode: str, text_of: TextOf) -> None:
    """No key, no offline mode: the tools are listed, and a call says to set MONET_API_KEY or go offline."""
    settings = Settings(api_key=None, base_url="https://monet.vision", output_dir=tmp_path, data_dir=tmp_path)
    async with Client(create_server(settings), mode=mode) as client:
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} >= {"generate_image", "get_task", "list_tasks", "upload_reference"}
        result = await client.call_tool("generate_image", {"prompt": "a cat"})
    assert result.is_error
    assert "MONET_API_KEY" in text_of(result)
    assert "--offline" in text_of(result)


def test_thumbnail_of_a_busy_photo_fits_the_result_budget(tmp_path: Path) -> None:
    """Even a worst-case (noise) image previews at <= 512 px and <= 80 KB, so a 4K result stays under 120 KB."""
    noisy = tmp_path / "noise.png"
    Image.frombytes("RGB", (1600, 900), os.urandom(1600 * 900 * 3)).save(noisy)
    data, mime = thumbnail(noisy)
    assert mime == "image/jpeg"
    assert len(data) <= 80 * 1024
    assert len(base64.b64encode(data)) + 4096 <= 120 * 1024
    with Image.open(io.BytesIO(data)) as im:
        assert max(im.size) <= 512


async def test_generate_image_with_a_request_id_sent_twice_makes_one_task(
    mcp_client: Client, emulator: Emulator
) -> None:
    """An agent that lost the answer (a cut connection, a host timeout) calls again with the same request_id and gets
    the same task, not a second charge."""
    args = {"prompt": "once", "request_id": "agent-call-1", "wait_seconds": 10}
    first = await mcp_client.call_tool("generate_image", args)
    second = await mcp_client.call_tool("generate_image", args)
    assert first.structured_content["task_id"] == second.structured_content["task_id"]
    assert second.structured_content["status"] == "success"
    assert emulator.creates == 1
