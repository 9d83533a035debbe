"""What the API sends as a result file: only a whole image of an allowed format and size is saved, named after its
format; anything else fails the task once and is never downloaded again. A preview is made once per image, and a
result whose preview cannot be made still comes back."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp import Client
from PIL import Image

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import TextOf

pytestmark = pytest.mark.anyio


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def flat_png(width: int, height: int, *, after_pixels: bytes = b"") -> bytes:
    """A valid black-and-white PNG, compressed row by row (never whole in memory); ``after_pixels`` goes after IDAT."""
    squeeze = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # the filter byte, then 8 pixels a byte
    pixels = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", pixels) + after_pixels + chunk(b"IEND", b"")


def text_chunk_png() -> bytes:
    """A small PNG with a zTXt chunk of 50 MB of text after its pixels (Pillow's limit for one chunk is 1 MB)."""
    return flat_png(64, 48, after_pixels=chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"A" * 50_000_000, 9)))


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (30, 160, 90)).save(buffer, fmt)
    return buffer.getvalue()


def saved(settings: Settings) -> list[Path]:
    out = settings.output_dir
    return sorted(p for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []


@pytest.fixture
async def client(settings: Settings, emulator: Emulator) -> AsyncIterator[Client]:
    emulator.task_seconds = 0.05
    async with Client(create_server(settings), read_timeout_seconds=30) as client:
        yield client


async def generate(client: Client) -> dict[str, Any]:
    result = await client.call_tool("generate_image", {"prompt": "p", "wait_seconds": 10})
    structured: dict[str, Any] = result.structured_content
    assert structured is not None, result.content
    return structured


async def settle(client: Client, task_id: str) -> None:
    """Give a retry every chance (these settings back off from 10 ms), ask for the task again, and wait again."""
    await anyio.sleep(0.15)
    await client.call_tool("get_task", {"task_id": task_id})
    await anyio.sleep(0.1)


# -- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["EPS", "BMP", "TIFF", "ICO", "PCX", "TGA"])
async def test_a_result_in_another_format_fails_the_task_and_is_never_saved(
    client: Client, settings: Settings, emulator: Emulator, fmt: str
) -> None:
    """PostScript, BMP, TIFF and the like served as the output fail the task at once: nothing saved, one download."""
    emulator.faults.output_bytes = encoded(fmt)
    data = await generate(client)
    assert data["status"] == "failed"
    assert "not a PNG, JPEG, WebP, GIF or HEIC image" in data["error"]
    await settle(client, data["task_id"])
    assert saved(settings) == []
    assert emulator.downloads == 1


@pytest.mark.parametrize(
    ("fmt", "suffix", "mime"),
    [("JPEG", ".jpg", "image/jpeg"), ("WEBP", ".webp", "image/webp"), ("GIF", ".gif", "image/gif")],
)
async def test_a_result_is_named_after_its_format(
    client: Client, settings: Settings, emulator: Emulator, fmt: str, suffix: str, mime: str
) -> None:
    """The allowed case: a JPEG, WebP or GIF output (served as image/png) is saved under its own extension."""
    emulator.faults.output_bytes = encoded(fmt)
    data = await generate(client)
    assert data["status"] == "success", data["error"]
    [image] = data["images"]
    assert (Path(image["path"]).suffix, image["mime_type"]) == (suffix, mime)
    assert saved(settings) == [Path(image["path"])]


# -- pixels and limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("side", [13000, 20000], ids=["under-pillows-limit", "over-pillows-limit"])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's, at open, under its own limit
async def test_a_decompression_bomb_fails_the_task_once(
    client: Client, settings: Settings, emulator: Emulator, side: int
) -> None:
    """A small PNG of 169 or 400 million pixels is refused from its header: the task fails, one download, no file."""
    emulator.faults.output_bytes = flat_png(side, side)
    data = await generate(client)
    assert data["status"] == "failed"
    assert "pixels" in data["error"]
    await settle(client, data["task_id"])
    assert saved(settings) == []
    assert emulator.downloads == 1


async def test_a_result_with_a_giant_text_chunk_fails_the_task_once(
    client: Client, settings: Settings, emulator: Emulator
) -> None:
    """A PNG whose pixels are fine but which carries 50 MB of text after them is not a result; it is fetched once."""
    emulator.faults.output_bytes = text_chunk_png()
    data = await generate(client)
    assert data["status"] == "failed"
    assert "not an image" in data["error"]
    await settle(client, data["task_id"])
    assert saved(settings) == []
    assert emulator.downloads == 1


# -- previews ------------------------------------------------------------------------------------


async def test_a_result_whose_preview_fails_still_comes_back(client: Client, text_of: TextOf) -> None:
    """A saved image that no longer previews (replaced on disk) leaves the preview out, with a note; the rest stays."""
    data = await generate(client)
    path = Path(data["images"][0]["path"])
    path.write_bytes(text_chunk_png())
    result = await client.call_tool("get_task", {"task_id": data["task_id"]})
    assert not result.is_error, text_of(result)
    assert result.structured_content["task_id"] == data["task_id"]
    assert result.structured_content["status"] == "success"
    assert "No preview of image 1" in text_of(result)
    assert [c.type for c in result.content if c.type != "text"] == ["resource_link"]


async def test_concurrent_calls_make_one_preview_per_image(
    client: Client, monkeypatch: pytest.MonkeyPatch, text_of: TextOf
) -> None:
    """Three get_task at once and two after them decode the saved image once: its preview is kept."""
    opened: list[str] = []
    real_open = Image.open

    def spy(fp: Any, *args: Any, **kwargs: Any) -> Image.Image:
        opened.append(str(fp if isinstance(fp, str | Path) else getattr(fp, "name", "")))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", spy)
    made = await client.call_tool("generate_image", {"prompt": "p", "wait_seconds": 0})
    handle = made.structured_content["task_id"]
    results: list[Any] = []

    async def get() -> None:
        results.append(await client.call_tool("get_task", {"task_id": handle, "wait_seconds": 10}))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(get)
    for _ in range(2):
        await get()
    assert all(any(c.type == "image" for c in r.content) for r in results), [text_of(r) for r in results]
    path = results[0].structured_content["images"][0]["path"]
    assert opened.count(path) == 1
