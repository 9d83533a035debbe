"""The placeholder images: their size, their marking, and the same bytes every time."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import httpx
import pytest
from PIL import Image

from nano_banana_mcp.emulator import PLACEHOLDER_DESCRIPTION, Emulator, output_size
from nano_banana_mcp.emulator.render import render_placeholder

if TYPE_CHECKING:
    from tests.emulator.conftest import Api


@pytest.mark.parametrize(
    ("aspect_ratio", "resolution", "size"),
    [("9:16", None, (576, 1024)), ("1:8", "1K", (128, 1024))],  # more in test_output_png_has_requested_size
)
def test_output_size_follows_ratio_and_resolution(
    aspect_ratio: str | None, resolution: str | None, size: tuple[int, int]
) -> None:
    """The long side is 1024/2048/4096 for 1K/2K/4K; the short side follows the ratio."""
    assert output_size(aspect_ratio, resolution) == size


def test_output_size_refuses_an_unknown_resolution() -> None:
    with pytest.raises(ValueError, match="8K"):
        output_size("1:1", "8K")


def test_render_is_a_marked_png_of_the_size_and_deterministic() -> None:
    """A render is a PNG of the output size, marked as a placeholder, and byte-identical when repeated."""
    options = {"model": "nano-banana-2", "prompt": "A cute cat " * 20, "aspect_ratio": "1:4", "resolution": "1K"}
    png = render_placeholder(**options, seed="task_1")
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (256, 1024))
    assert image.info["Description"] == PLACEHOLDER_DESCRIPTION
    assert render_placeholder(**options, seed="task_1") == png
    assert render_placeholder(**options, seed="task_2") != png


def test_a_request_renders_the_same_whatever_was_rendered_before() -> None:
    """Another prompt is another picture; a request renders to the same bytes after any number of others."""
    options = {"model": "nano-banana-2", "aspect_ratio": "1:1", "resolution": "1K", "seed": "task_1"}
    first = render_placeholder(**options, prompt="a cat")
    others = {render_placeholder(**options, prompt=f"a dog, take {i}") for i in range(6)}
    assert len(others) == 6
    assert first not in others
    assert render_placeholder(**options, prompt="a cat") == first


@pytest.mark.parametrize(
    ("model", "aspect_ratio", "resolution", "size"),
    [
        ("nano-banana-1", None, None, (1024, 1024)),
        ("nano-banana-1-pro", "21:9", "2K", (2048, 878)),
        ("nano-banana-2", "8:1", "4K", (4096, 512)),
    ],
)
def test_output_png_has_requested_size(
    api: Api, emulator: Emulator, model: str, aspect_ratio: str | None, resolution: str | None, size: tuple[int, int]
) -> None:
    """The output served for a task is a real PNG of the size the ratio and resolution call for."""
    assert output_size(aspect_ratio, resolution) == size
    emulator.task_seconds = 0
    options = {k: v for k, v in {"aspect_ratio": aspect_ratio, "resolution": resolution}.items() if v}
    task = api.get(api.create(model=model, **options)["id"])
    response = api.client.get(task["outputs"][0]["url"])
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size, image.info["Description"]) == ("PNG", size, PLACEHOLDER_DESCRIPTION)


def test_output_of_unfinished_task_is_404(api: Api, emulator: Emulator) -> None:
    """An output URL guessed before the task succeeds is not found."""
    emulator.task_seconds = 10
    task_id = api.create()["id"]
    assert api.client.get(f"/files/outputs/{task_id}/0.png").status_code == 404


def test_evicted_images_come_back_identical(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """Only recent images stay in memory; an older one is rendered again, byte for byte."""
    emulator.task_seconds = 0
    first = api.create(aspect_ratio="8:1")["id"]
    url = f"{emulator.base_url}/files/outputs/{first}/0.png"
    original = client.get(url).content
    for _ in range(70):  # more than the cache holds
        client.get(f"{emulator.base_url}/files/outputs/{api.create(aspect_ratio='8:1')['id']}/0.png")
    assert client.get(url).content == original
