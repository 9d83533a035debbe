"""References from anywhere, chains of edits and batches, through the real client in both protocol eras.

The emulator refuses a create whose ``input.images`` holds anything but http(s) URLs, as the API documents URLs.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp import Client
from PIL import Image

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.images.provenance import read_provenance
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import MakePng, TextOf

pytestmark = pytest.mark.anyio


def data_uri(fmt: str = "PNG", mime: str = "image/png", size: tuple[int, int] = (32, 24)) -> str:
    """An image of random pixels (so it does not compress away) as a data: URI."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(buffer, fmt)
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode()}"


async def generate(client: Client, **args: object) -> dict[str, Any]:
    result = await client.call_tool("generate_image", {"prompt": "p", "wait_seconds": 20, **args})
    assert not result.is_error, result.content
    structured: dict[str, Any] = result.structured_content
    return structured


async def test_every_reference_form_reaches_the_api_as_a_url(
    mcp_client: Client, emulator: Emulator, tmp_path: Path, png: MakePng
) -> None:
    """A path, an https URL, a data: URI and an earlier result's nano-banana:// URI all end as URLs in the create."""
    first = await generate(mcp_client)
    references = [
        str(png(tmp_path / "ref.png")),
        "https://files.monet.vision/some/reference.png",
        data_uri(),
        first["images"][0]["uri"],
    ]
    second = await generate(mcp_client, images=references)
    assert second["status"] == "success"
    sent = emulator.task_inputs()[-1]["images"]
    assert len(sent) == 4
    assert all(url.startswith(("http://", "https://")) for url in sent)
    assert sent[1] == references[1]
    assert emulator.uploads == 3  # the path, the data: URI and the saved result; the https URL as it is


async def test_a_chain_of_three_edits(mcp_client: Client, emulator: Emulator) -> None:
    """Each edit takes the previous result's URI; four tasks in all, each image saved."""
    result = await generate(mcp_client, prompt="a lighthouse")
    for step in ("at night", "in the rain", "as a woodcut"):
        result = await generate(mcp_client, prompt=step, images=[result["images"][0]["uri"]])
        assert result["status"] == "success"
        assert Path(result["images"][0]["path"]).is_file()
    assert emulator.creates == 4
    assert emulator.uploads == 3


async def test_a_batch_with_one_failure_returns_the_others(
    mcp_client: Client, emulator: Emulator, text_of: TextOf
) -> None:
    """count=3 with one task failing at the API: three creates, two images, the failure named, each id usable."""
    emulator.faults.fail_tasks = 1
    made = await mcp_client.call_tool("generate_image", {"prompt": "three takes", "count": 3, "wait_seconds": 20})
    result = made.structured_content
    assert emulator.creates == 3
    assert len(result["task_ids"]) == 3
    assert result["task_id"] == result["task_ids"][0]
    assert len(result["images"]) == 2
    assert result["status"] == "success"
    assert "1 of 3 tasks failed" in result["error"]
    assert "1 of 3 tasks failed" in text_of(made)
    statuses = []
    for task_id in result["task_ids"]:
        got = await mcp_client.call_tool("get_task", {"task_id": task_id})
        statuses.append(got.structured_content["status"])
    assert sorted(statuses) == ["failed", "success", "success"]
    assert len({image["uri"] for image in result["images"]}) == 2


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("data:image/png;base64,bm90IGFuIGltYWdl", "cannot be used"),
        ("data:text/plain;base64,aGVsbG8=", "not a base64 PNG, JPEG, WebP or GIF"),
        ("data:image/bmp;base64,Qk0=", "not a base64 PNG, JPEG, WebP or GIF"),
        ("data:image/png;base64,@@@@", "cannot be decoded"),
        ("nano-banana://tasks/task_elsewhere/images/0", "did not make"),
        ("nano-banana://tasks/../images/0", "is not a result URI"),
        ("nano-banana://other", "is not a result URI"),
        ("https://", "is not a usable URL"),
        ("https:///no-host.png", "is not a usable URL"),
        ("https://example.com/a picture.png", "no spaces"),
        ("https://[::1/x.png", "is not a usable URL"),
    ],
)
async def test_bad_references_are_refused_before_anything_is_paid(
    mcp_client: Client, emulator: Emulator, reference: str, expected: str, text_of: TextOf
) -> None:
    """A data: URI that is not an image or of another type, a result URI of another server or malformed: refused
    with what is allowed, and no create sent."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "p", "images": [reference]})
    assert result.is_error
    assert expected in text_of(result)
    assert emulator.creates == 0


async def test_a_data_uri_over_the_size_limit_is_refused(
    settings: Settings, emulator: Emulator, text_of: TextOf
) -> None:
    """A data: URI larger than the reference limit is refused before it is decoded."""
    small = settings.model_copy(update={"max_reference_bytes": 2_000})
    async with Client(create_server(small)) as client:
        result = await client.call_tool("generate_image", {"prompt": "p", "images": [data_uri(size=(400, 400))]})
    assert result.is_error
    assert "the limit is" in text_of(result)
    assert emulator.creates == 0


async def test_result_uris_of_unfinished_tasks_or_missing_images_are_refused(
    mcp_client: Client, emulator: Emulator, text_of: TextOf
) -> None:
    """An image index past the end, or a task not finished yet, is refused with what to do; no create."""
    done = await generate(mcp_client)
    past = done["images"][0]["uri"].replace("/images/0", "/images/5")
    refused = await mcp_client.call_tool("generate_image", {"prompt": "p", "images": [past]})
    assert "has 1 (numbered from 0)" in text_of(refused)
    emulator.task_seconds = 30
    running = await generate(mcp_client, wait_seconds=0)
    early = f"nano-banana://tasks/{running['task_id']}/images/0"
    refused = await mcp_client.call_tool("generate_image", {"prompt": "p", "images": [early]})
    assert "only a finished task's image can be used" in text_of(refused)
    with anyio.fail_after(60):  # the running task's own create is sent in the background: wait for it
        while emulator.creates < 2:
            await anyio.sleep(0.01)
    assert emulator.creates == 2


@pytest.mark.parametrize(
    "args",
    [
        {"count": 0},
        {"count": 5},
        {"output_format": "bmp"},
        {"model": "nano-banana-1", "images": [data_uri()] * 6},
    ],
    ids=["count-0", "count-5", "format-bmp", "too-many-references"],
)
async def test_out_of_range_options_are_refused(mcp_client: Client, emulator: Emulator, args: dict[str, Any]) -> None:
    """count outside 1-4, an unknown output_format, more references than the model takes: refused, no create."""
    result = await mcp_client.call_tool("generate_image", {"prompt": "p", **args})
    assert result.is_error
    assert emulator.creates == 0
    assert emulator.uploads == 0


@pytest.mark.parametrize(
    ("fmt", "pil", "suffix"), [("png", "PNG", ".png"), ("jpeg", "JPEG", ".jpg"), ("webp", "WEBP", ".webp")]
)
async def test_each_output_format_decodes_back_with_its_provenance(
    mcp_client: Client, emulator: Emulator, fmt: str, pil: str, suffix: str
) -> None:
    """The saved file is in the format asked for (extension and mime type match its content) and carries what made
    it: prompt, model, task id, this tool, and the IPTC type of AI-generated media."""
    prompt = 'a "quoted" <fox> & a 🦊, 狐'
    result = await generate(mcp_client, prompt=prompt, output_format=fmt, aspect_ratio="16:9")
    [image] = result["images"]
    path = Path(image["path"])
    assert path.suffix == suffix
    with Image.open(path) as im:
        assert im.format == pil
        assert im.size == (1024, 576)
        assert Image.MIME[im.format] == image["mime_type"]
    assert image["size_bytes"] == path.stat().st_size
    made = read_provenance(path)
    assert made["prompt"] == prompt
    assert made["model"] == "nano-banana-2"
    assert made["task_id"] == result["task_id"]
    assert "nano-banana-mcp" in made["software"]
    assert made["digital_source_type"].endswith("/trainedAlgorithmicMedia")
