"""A result is written once under its final name: downloaded to one temporary name in the output folder, checked,
converted and given its provenance there, then renamed to its final name once. No other name ever holds it, so a
crash leaves either a hidden temporary file (started over) or the finished image, never a half-made one."""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from PIL import Image

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.images.provenance import read_provenance
from nano_banana_mcp.mcp_server import create_server

pytestmark = pytest.mark.anyio


def encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 24), (30, 160, 90)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.fixture
def renames(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> list[tuple[str, str]]:
    """Every rename into the output folder, whoever makes it, as (old name, new name); each is still made."""
    seen: list[tuple[str, str]] = []
    out = settings.output_dir

    def watched(rename: Callable[..., None]) -> Callable[..., None]:
        def call(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if Path(os.fspath(dst)).parent == out:
                seen.append((Path(os.fspath(src)).name, Path(os.fspath(dst)).name))
            rename(src, dst, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "replace", watched(os.replace))
    monkeypatch.setattr(os, "rename", watched(os.rename))
    return seen


@pytest.fixture
async def client(settings: Settings, emulator: Emulator) -> AsyncIterator[Client]:
    emulator.task_seconds = 0.05
    async with Client(create_server(settings), read_timeout_seconds=30) as client:
        yield client


@pytest.mark.parametrize(
    ("delivered", "output_format", "kind"),
    [("PNG", None, "PNG"), ("JPEG", None, "JPEG"), ("PNG", "jpeg", "JPEG"), ("JPEG", "webp", "WEBP")],
    ids=["png-kept", "jpeg-kept", "png-to-jpeg", "jpeg-to-webp"],
)
async def test_a_result_is_renamed_once_from_one_temporary_name_to_its_final_name(
    client: Client,
    settings: Settings,
    emulator: Emulator,
    renames: list[tuple[str, str]],
    delivered: str,
    output_format: str | None,
    kind: str,
) -> None:
    """Whatever the API delivered and whatever format was asked, the output folder sees one rename: from a hidden
    temporary name to the final name, with the image already finished (its format and provenance); nothing else is
    left in the folder."""
    emulator.faults.output_bytes = encoded(delivered)
    arguments: dict[str, Any] = {"prompt": "a heron", "wait_seconds": 10}
    if output_format is not None:
        arguments["output_format"] = output_format
    result = await client.call_tool("generate_image", arguments)
    data = result.structured_content
    assert data is not None, result.content
    assert data["status"] == "success", data["error"]
    [image] = data["images"]
    final = Path(image["path"])

    assert len(renames) == 1, f"the output was renamed {len(renames)} times: {renames}"
    [(temporary, name)] = renames
    assert name == final.name
    assert temporary.startswith("."), f"{temporary} is not a hidden temporary name"
    assert sorted(p.name for p in settings.output_dir.iterdir()) == [final.name]
    with Image.open(final) as im:
        assert im.format == kind
    assert read_provenance(final)["prompt"] == "a heron"
