"""The MCP Apps view in a real browser, against a real server: images, progress, actions, failure, keyboard, themes.

Each test plays the agent (its own tools/call through the host's client), then hands the host the tool's input and
result the way a host does, and drives the view as a person would.
"""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from mcp_types import CallToolResult
from PIL import Image, ImageStat
from playwright.async_api import Frame, expect

from nano_banana_mcp.emulator import Emulator

if TYPE_CHECKING:
    from tests.browser.conftest import TestHost
    from tests.conftest import MakePng

pytestmark = pytest.mark.anyio

PROMPT = "a lighthouse at dusk, long exposure"
# Style variables as a host sends them (the spec's example: light-dark() pairs resolved by the view's color scheme).
HOST_VARIABLES = {
    "--color-background-primary": "light-dark(#ffffff, #171717)",
    "--color-text-primary": "light-dark(#171717, #fafafa)",
    "--color-text-secondary": "light-dark(#5f5f5f, #a8a8a8)",
    "--color-border-primary": "light-dark(#d4d4d4, #404040)",
}


async def show(
    host: TestHost, arguments: dict[str, Any], tool: str = "generate_image", **open_args: Any
) -> tuple[Frame, CallToolResult]:
    """The agent calls ``tool``; the host opens the view and sends it the call's input and result."""
    result = await host.call(tool, arguments)
    view = await host.open(tool=tool, **open_args)
    await host.tool_input(arguments)
    await host.tool_result(result)
    return view, result


def varied(png: bytes) -> bool:
    """An image with content: many colours and real contrast, not a blank or flat box."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1 << 20) or []
    return len(colours) > 50 and max(ImageStat.Stat(image).stddev) > 20


async def save(host: TestHost, screenshots: Path, name: str) -> None:
    """A screenshot of the view as the host shows it (for the README with NANO_BANANA_SCREENSHOTS=docs)."""
    await host.page.wait_for_timeout(200)  # the last size-changed has been applied
    png = await host.page.locator("#slot iframe").screenshot(animations="disabled")
    (screenshots / name).write_bytes(png)


async def test_finished_result_shows_its_images_full_size_and_its_request(host: TestHost, screenshots: Path) -> None:
    """Each image of a finished result shows (real pixels, alt text from the prompt) with its size, file path and
    request; a click fetches the full image through resources/read; Copy path puts the path on the clipboard."""
    arguments = {"prompt": PROMPT, "aspect_ratio": "16:9", "count": 2}
    view, result = await show(host, arguments)
    images = result.structured_content["images"]

    pictures = view.locator("ul.images img")
    await expect(pictures).to_have_count(2)
    for index in range(2):
        await expect(pictures.nth(index)).to_have_attribute("alt", f"Image {index + 1} of 2: {PROMPT}")
        assert await pictures.nth(index).evaluate("img => img.complete && img.naturalWidth > 0")
        assert varied(await pictures.nth(index).screenshot())
    await expect(view.locator("h1")).to_have_text("Done: 2 images")
    facts = view.locator("dl.facts")
    await expect(facts).to_contain_text("nano-banana-2")
    await expect(facts).to_contain_text("16:9")
    for image in images:
        await expect(view.get_by_text(image["path"], exact=True)).to_be_visible()
    await save(host, screenshots, "viewer.png")

    reads = host.count("resources/read")
    await view.get_by_role("button", name="Show image 1 full size").click()
    full = view.locator("section.full img")
    await expect(full).to_have_attribute("src", re.compile(r"^data:image/png;base64,"))
    assert await full.evaluate("img => img.naturalWidth") == images[0]["width"]
    assert host.count("resources/read") == reads + 1
    await view.get_by_role("button", name="Close").click()
    await expect(view.locator("section.full")).to_have_count(0)

    await view.get_by_role("button", name="Copy path").first.click()
    await expect(view.get_by_role("button", name="Copied")).to_be_visible()
    assert await host.page.evaluate("navigator.clipboard.readText()") == images[0]["path"]


async def test_progress_moves_while_the_task_runs(host: TestHost, emulator: Emulator) -> None:
    """While the agent's generate_image call waits, the view finds its task and shows its progress rising (through
    get_task); the result then shows the images."""
    emulator.task_seconds = 5.0
    arguments = {"prompt": "a slow sunrise over the sea", "wait_seconds": 20}
    view = await host.open()
    await host.tool_input(arguments)
    bar = view.get_by_role("progressbar")
    seen: list[int] = []
    results: list[Any] = []

    async def agent() -> None:
        results.append(await host.call("generate_image", arguments))

    async with anyio.create_task_group() as tg:
        tg.start_soon(agent)
        with anyio.fail_after(60):  # only against a hang
            while not results:
                if await bar.count():
                    value = await bar.get_attribute("aria-valuenow")
                    if value is not None and (not seen or int(value) != seen[-1]):
                        seen.append(int(value))
                        if len(seen) == 2:  # it moved: the API may finish it now
                            emulator.finish_tasks()
                await anyio.sleep(0.1)
    await host.tool_result(results[0])
    await expect(view.locator("ul.images img")).to_have_count(1)

    assert len(seen) >= 2, f"the progress did not move: {seen}"
    assert seen == sorted(seen), f"the progress went back: {seen}"
    assert seen[0] < 100
    assert host.count("tools/call", "get_task") >= 2


async def test_variations_and_edit_make_new_tasks(host: TestHost, emulator: Emulator) -> None:
    """Variations sends the same request again and Edit sends the typed prompt with this image as the reference:
    each is one new task at the emulator, shown with its progress and then its image; Back returns."""
    view, result = await show(host, {"prompt": PROMPT, "aspect_ratio": "3:2"})
    first_id = result.structured_content["task_id"]
    assert emulator.creates == 1

    await view.get_by_role("button", name="Variations").click()
    await expect(view.get_by_role("button", name="← Back")).to_be_visible()
    await expect(view.locator("h1")).to_have_text("Done: 1 image", timeout=15_000)
    assert emulator.creates == 2
    variation = emulator.task_inputs()[-1]
    assert (variation["prompt"], variation["aspect_ratio"], variation.get("images")) == (PROMPT, "3:2", None)
    await expect(view.locator("dl.facts")).not_to_contain_text(first_id)
    assert any("variations" in c["content"][0]["text"] for c in await host.page.evaluate("host.modelContext"))

    await view.get_by_role("button", name="Edit image 1").click()
    prompt_box = view.get_by_label("Describe the change to image 1")
    await expect(prompt_box).to_be_focused()
    await prompt_box.fill("make it night, with stars")
    await view.get_by_role("button", name="Make the edit").click()
    await expect(view.locator("h1")).to_have_text("Done: 1 image", timeout=15_000)
    await expect(view.locator(".prompt").first).to_have_text("make it night, with stars")
    assert emulator.creates == 3
    edit = emulator.task_inputs()[-1]
    assert edit["prompt"] == "make it night, with stars"
    assert edit["aspect_ratio"] == "3:2"
    assert len(edit["images"]) == 1  # the variation's saved file, uploaded as the reference

    await view.get_by_role("button", name="← Back").click()
    await expect(view.locator(".prompt").first).to_have_text(PROMPT)


async def test_failed_task_shows_its_error_and_retry_works(host: TestHost, emulator: Emulator) -> None:
    """A failed task shows the API's error as an alert; Retry makes one new task, which succeeds and shows."""
    emulator.faults.fail_tasks = 1
    view, result = await show(host, {"prompt": PROMPT})
    assert result.structured_content["status"] == "failed"

    await expect(view.locator("h1")).to_have_text("Failed")
    await expect(view.get_by_role("alert")).to_contain_text(result.structured_content["error"])
    await expect(view.get_by_role("button", name="Variations")).to_have_count(0)
    await view.get_by_role("button", name="Retry").click()
    await expect(view.locator("ul.images img")).to_have_count(1, timeout=15_000)
    await expect(view.locator("h1")).to_have_text("Done: 1 image")
    assert emulator.creates == 2


async def focus_walk(host: TestHost, view: Frame, presses: int) -> list[str]:
    """Press Tab from the top of the host page; the data-key of each control of the view that got focus."""
    await host.page.evaluate("document.activeElement && document.activeElement.blur()")
    keys = []
    for _ in range(presses):
        await host.page.keyboard.press("Tab")
        key = await view.evaluate("document.hasFocus() && document.activeElement?.getAttribute('data-key')")
        if key:
            keys.append(key)
    return keys


async def controls(view: Frame) -> set[str]:
    """The keys of every visible, enabled control of the view."""
    keys = await view.evaluate(
        """() => [...document.querySelectorAll('button, textarea, input, select, a[href], [tabindex]')]
            .filter(el => !el.disabled && el.tabIndex >= 0 && el.getClientRects().length)
            .map(el => el.getAttribute('data-key'))"""
    )
    assert None not in keys, "a control has no data-key"
    return set(keys)


async def test_keyboard_reaches_every_control(host: TestHost) -> None:
    """Tab reaches every control of a result, of the edit form and of the full-size image; Enter opens them and
    Escape or Close returns focus to where it was."""
    view, _ = await show(host, {"prompt": PROMPT, "count": 2})
    await expect(view.locator("ul.images img")).to_have_count(2)
    wanted = await controls(view)
    assert {"recent", "open-0", "open-1", "copy-0", "copy-1", "edit-0", "edit-1", "variations"} <= wanted
    assert wanted <= set(await focus_walk(host, view, len(wanted) + 3))

    await view.get_by_role("button", name="Edit image 2").focus()
    await host.page.keyboard.press("Enter")
    await expect(view.get_by_label("Describe the change to image 2")).to_be_focused()
    wanted = await controls(view)
    assert {"edit-prompt", "edit-submit", "edit-cancel"} <= wanted
    assert wanted <= set(await focus_walk(host, view, len(wanted) + 3))
    await view.get_by_label("Describe the change to image 2").focus()
    await host.page.keyboard.press("Escape")
    await expect(view.get_by_role("button", name="Edit image 2")).to_be_focused()

    await view.get_by_role("button", name="Show image 1 full size").focus()
    await host.page.keyboard.press("Enter")
    await expect(view.get_by_role("button", name="Close")).to_be_focused()
    await expect(view.locator("section.full img")).to_have_count(1)
    wanted = await controls(view)
    assert {"full-actual", "full-close"} <= wanted
    assert wanted <= set(await focus_walk(host, view, len(wanted) + 3))
    await view.get_by_role("button", name="Close").focus()
    await host.page.keyboard.press("Enter")
    await expect(view.get_by_role("button", name="Show image 1 full size")).to_be_focused()


CONTRAST = """
(selectors) => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 4).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length < 4 || c[3] > 0.5) return c;
    }
    return rgb(getComputedStyle(document.body).backgroundColor);
  };
  const out = { page: lum(rgb(getComputedStyle(document.body).backgroundColor)) };
  for (const selector of selectors) {
    const el = document.querySelector(selector);
    if (!el) { out[selector] = null; continue; }
    const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(background(el))];
    out[selector] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  }
  return out;
}
"""
TEXTS = [
    "h1",
    ".prompt",
    ".facts dt",
    ".facts dd",
    "figcaption .muted",
    "figcaption code",
    "button.primary",
    "[data-key=copy-0]",
    ".badge",
]


@pytest.mark.parametrize("variables", [None, HOST_VARIABLES], ids=["own-colours", "host-variables"])
async def test_light_and_dark_themes_are_readable(
    host: TestHost, variables: dict[str, str] | None, screenshots: Path
) -> None:
    """In the host's light and dark themes (with its style variables or without), every kind of text keeps a
    contrast of at least 4.5:1 (WCAG AA); a theme change from the host applies at once."""
    view, _ = await show(host, {"prompt": PROMPT}, theme="dark", variables=variables)
    await expect(view.locator("ul.images img")).to_have_count(1)
    for theme in ("dark", "light"):
        if theme == "light":
            await host.page.evaluate("([theme, variables]) => host.setTheme(theme, variables)", [theme, variables])
            await expect(view.locator("html")).to_have_attribute("data-theme", "light")
        measured = await view.evaluate(CONTRAST, TEXTS)
        assert (measured["page"] < 0.05) if theme == "dark" else (measured["page"] > 0.85), (theme, measured)
        low = {k: round(v, 2) for k, v in measured.items() if k != "page" and (v is None or v < 4.5)}
        assert not low, f"{theme}: too little contrast {low}"
        if variables is None and theme == "dark":
            await save(host, screenshots, "viewer-dark.png")


async def test_gallery_shows_recent_tasks_and_opens_one(host: TestHost, emulator: Emulator, screenshots: Path) -> None:
    """list_tasks shows as a grid of recent tasks, newest first, with previews of the finished ones and the failed one
    marked; a card opens its task in the viewer, and Back returns to the grid."""
    for prompt in ("a red fox in snow", "a paper boat on a puddle"):
        await host.call("generate_image", {"prompt": prompt, "aspect_ratio": "1:1"})
    emulator.faults.fail_tasks = 1
    await host.call("generate_image", {"prompt": "a city that fails"})
    arguments = {"page": 1, "page_size": 3}
    view, _ = await show(host, arguments, tool="list_tasks")

    cards = view.locator("button.card")
    await expect(cards).to_have_count(3)
    await expect(cards.nth(0)).to_contain_text("a city that fails")
    # The header's spend line, from nano-banana://usage (the session's server has made others' images too).
    await expect(view.locator("[data-usage]")).to_have_text(re.compile(r"^Today: \d+ images$"))
    await expect(cards.nth(0).locator(".badge")).to_have_text("failed")
    await expect(cards.nth(1).locator("img")).to_have_count(1)
    await expect(cards.nth(2).locator("img")).to_have_count(1)
    assert await cards.nth(1).locator("img").evaluate("img => img.complete && img.naturalWidth > 0")
    await save(host, screenshots, "gallery.png")
    wanted = await controls(view)
    assert "refresh" in wanted
    assert sum(key.startswith("card-") for key in wanted) == 3
    assert wanted <= set(await focus_walk(host, view, len(wanted) + 3))

    await cards.nth(2).click()
    await expect(view.locator(".prompt").first).to_have_text("a red fox in snow")
    await expect(view.locator("ul.images img")).to_have_count(1)
    await expect(view.locator("dl.facts")).to_contain_text("1:1")
    await view.get_by_role("button", name="← Back").click()
    await expect(view.locator("button.card")).to_have_count(3)


async def test_waiting_get_task_shows_progress_then_the_images(host: TestHost, emulator: Emulator) -> None:
    """An agent collecting a running task with get_task(wait_seconds): the view polls the task from the start and
    shows it when it is done, whatever the host does with the waiting call."""
    emulator.task_seconds = 600.0  # running until the progress bar is seen
    started = await host.call("generate_image", {"prompt": "a quick sketch", "wait_seconds": 0})
    task_id = started.structured_content["task_id"]
    view = await host.open(tool="get_task")
    await host.tool_input({"task_id": task_id, "wait_seconds": 30})
    await expect(view.get_by_role("progressbar")).to_be_visible()
    emulator.finish_tasks()
    await expect(view.locator("ul.images img")).to_have_count(1, timeout=15_000)
    await expect(view.locator(".prompt").first).to_have_text("a quick sketch")


async def test_a_refused_call_shows_why_and_the_view_still_works(host: TestHost) -> None:
    """A call refused before anything was made (here: a resolution the model does not take) shows its message as an
    alert, offers no Variations or Retry of a request that cannot work, and Recent images still opens the gallery."""
    view, result = await show(host, {"prompt": PROMPT, "model": "nano-banana-1", "resolution": "2K"})
    assert result.is_error
    await expect(view.get_by_role("alert")).to_contain_text("nano-banana-1")
    await expect(view.get_by_role("button", name=re.compile("Variations|Retry"))).to_have_count(0)
    await view.get_by_role("button", name="Recent images").click()
    await expect(view.locator("h1")).to_have_text("Recent images")


async def test_a_result_made_from_a_set_names_the_set(host: TestHost, png: MakePng, tmp_path: Path) -> None:
    """A result whose references came from a named set shows that set among its facts."""
    data = base64.b64encode(png(tmp_path / "hero.png").read_bytes()).decode()
    kept = await host.call("upload_reference", {"path": f"data:image/png;base64,{data}", "set": "viewer-hero"})
    assert not kept.is_error, kept.content
    view, result = await show(host, {"prompt": PROMPT, "images": ["nano-banana://sets/viewer-hero"]})
    assert result.structured_content["sets"] == ["nano-banana://sets/viewer-hero"]
    await expect(view.locator("h1")).to_have_text("Done: 1 image")
    fact = view.locator("dl.facts div", has=view.locator("dt", has_text="Sets"))
    await expect(fact.locator("dd")).to_have_text("viewer-hero")
