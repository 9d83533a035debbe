"""Render the placeholder PNG of an emulated task: the requested size, and plainly not a generated image."""

from __future__ import annotations

import colorsys
import functools
import hashlib
import io
import textwrap

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

__all__ = ["PLACEHOLDER_DESCRIPTION", "PLACEHOLDER_TITLE", "output_size", "render_placeholder"]

PLACEHOLDER_TITLE = "OFFLINE PLACEHOLDER — nano-banana emulator"
PLACEHOLDER_DESCRIPTION = "Offline placeholder from the nano-banana-mcp emulator; not a generated image."

_LONG_SIDE = {"1K": 1024, "2K": 2048, "4K": 4096}
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_DASH = "—"  # Pillow's built-in font has no em dash: it is drawn as a bar
_DETAIL_SCALE = 0.7
_LINE_HEIGHT = 1.35
_WRAP_WIDTHS = (80, 48, 32, 22, 16, 11)
_WRAP_GAIN = 1.3

_BAND_RGB = (15, 15, 20)
_BORDER_RGB = (20, 20, 20)
_TITLE_RGB = (255, 214, 10)
_DETAIL_RGB = (235, 235, 235)
_INK_LEVELS = 16
"""Shades of each ink over the band, for its antialiased edges."""
_GRADIENT = 256 - 2 - 2 * _INK_LEVELS
_BAND, _BORDER = _GRADIENT, _GRADIENT + 1
_TITLE_INK = _BORDER + 1
_DETAIL_INK = _TITLE_INK + _INK_LEVELS
"""The palette's layout (:func:`_palette`): the gradient's indices, the band's, the border's, then each ink's shades."""
_GRADIENT_INDICES = [value * _GRADIENT // 256 for value in range(256)]
"""From a grey level (0-255) to its index in the gradient."""
_INKED = [0] + [255] * 255
"""A mask of wherever an ink covers at all."""


def output_size(aspect_ratio: str | None, resolution: str | None) -> tuple[int, int]:
    """Pixel size of an output: long side 1024/2048/4096 for 1K/2K/4K, short side from the ratio."""
    long_side = _LONG_SIDE.get(resolution or "1K")
    if long_side is None:
        raise ValueError(f"Unknown resolution {resolution!r}; expected one of {', '.join(_LONG_SIDE)}.")
    width, _, height = (aspect_ratio or "1:1").partition(":")
    w, h = int(width), int(height)
    if w >= h:
        return long_side, round(long_side * h / w)
    return round(long_side * w / h), long_side


def render_placeholder(
    *, model: str, prompt: str, aspect_ratio: str | None, resolution: str | None, seed: str
) -> bytes:
    """A PNG of the output size that says, large and plainly, that it is an offline placeholder.

    Deterministic: the same arguments give the same bytes (``seed`` picks the colours).

    The image is made of palette indices (see :func:`_palette`) and saved as a palette PNG: one byte a pixel and no
    row filters to choose, where an RGB PNG spent ~10 ms of a 1K render's 23 ms choosing them. The indices depend on
    the request alone and are kept for the next task of the same request; only the palette is the task's own.
    """
    hue = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:2], "big") / 65_535
    top = _rgb(hue, 0.55, 0.35)
    bottom = _rgb((hue + 0.15) % 1.0, 0.45, 0.85)
    if (resolution or "1K") == "4K":  # 16.8 MB of indices: not kept
        image = _picture(model, prompt, aspect_ratio, resolution)
    else:
        image = _kept_picture(model, prompt, aspect_ratio, resolution).copy()
    image.putpalette(_palette(top, bottom))

    info = PngImagePlugin.PngInfo()
    info.add_text("Description", PLACEHOLDER_DESCRIPTION)
    info.add_text("Software", "nano-banana-mcp emulator")
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1, pnginfo=info)
    return buffer.getvalue()


def _picture(model: str, prompt: str, aspect_ratio: str | None, resolution: str | None) -> Image.Image:
    """The placeholder's palette indices ("L"): the gradient, the border, and the band with its text."""
    width, height = output_size(aspect_ratio, resolution)
    # A 1-pixel-wide gradient of indices stretched to size: cheap to make, and flat rows compress fast.
    column = Image.linear_gradient("L").resize((1, height), Image.Resampling.BILINEAR)
    column = column.point(_GRADIENT_INDICES)
    image = column.resize((width, height), Image.Resampling.NEAREST)

    head = " ".join(prompt.split())
    head = head if len(head) <= 60 else f"{head[:59]}…"
    details = [
        f"{model} · {aspect_ratio or '1:1'} · {resolution or '1K'} · {width}x{height} px",
        f"“{head}”",
        "Not a generated image.",
    ]
    size, title_lines, detail_lines = _layout(width, height, details)
    title_font = ImageFont.load_default(size=size)
    detail_font = ImageFont.load_default(size=max(round(size * _DETAIL_SCALE), 6))

    border = max(min(width, height) // 64, 2)
    ImageDraw.Draw(image).rectangle((0, 0, width - 1, height - 1), outline=_BORDER, width=border)
    step = size * _LINE_HEIGHT
    block = step * (len(title_lines) + _DETAIL_SCALE * len(detail_lines))
    pad = size * 0.5
    band_top = max(round((height - block) / 2 - pad), 0)
    band_size = (width, min(round(block + 2 * pad), height - band_top))
    # Each ink's coverage drawn alone (antialiased, 0-255), then turned into that ink's indices over the band.
    title, detail = Image.new("L", band_size), Image.new("L", band_size)
    y = pad
    for line in title_lines:
        _draw_centered(ImageDraw.Draw(title), width / 2, y, line, title_font)
        y += step
    for line in detail_lines:
        _draw_centered(ImageDraw.Draw(detail), width / 2, y, line, detail_font)
        y += step * _DETAIL_SCALE
    band = title.point(_TITLE_INDICES)
    band.paste(detail.point(_DETAIL_INDICES), mask=detail.point(_INKED))
    image.paste(band, (0, band_top))
    return image


_kept_picture = functools.lru_cache(maxsize=4)(_picture)
"""The latest pictures of 1K and 2K requests (at most 4.2 MB each): tests and trials ask for the same one again."""


def _palette(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> bytes:
    """The 256 colours: the gradient from ``top`` to ``bottom``, the band, the border, then each ink's shades."""
    colours = [_mix(top, bottom, i / (_GRADIENT - 1)) for i in range(_GRADIENT)]
    colours += [_BAND_RGB, _BORDER_RGB]
    for ink in (_TITLE_RGB, _DETAIL_RGB):
        colours += [_mix(_BAND_RGB, ink, (level + 1) / _INK_LEVELS) for level in range(_INK_LEVELS)]
    return bytes(channel for colour in colours for channel in colour)


def _ink_indices(first: int) -> list[int]:
    """A lookup from an ink's coverage (0-255) to its index: the band where there is none, else its nearest shade."""
    return [_BAND] + [first + max(round(value * _INK_LEVELS / 255) - 1, 0) for value in range(1, 256)]


_TITLE_INDICES, _DETAIL_INDICES = _ink_indices(_TITLE_INK), _ink_indices(_DETAIL_INK)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    return (
        round(a[0] + (b[0] - a[0]) * share),
        round(a[1] + (b[1] - a[1]) * share),
        round(a[2] + (b[2] - a[2]) * share),
    )


def _layout(width: int, height: int, details: list[str]) -> tuple[int, list[str], list[str]]:
    """The largest title size, and the wrapped lines, at which the text fits the image.

    Lines fill at most 90% of the width and the block 70% of the height; narrow images get
    more, shorter lines (a narrower wrap is taken only when it makes the text clearly larger).
    """
    probe = _PROBE
    best: tuple[int, list[str], list[str]] = (0, [PLACEHOLDER_TITLE], details)
    for chars in _WRAP_WIDTHS:
        title_lines = _wrap(PLACEHOLDER_TITLE, chars)
        detail_lines = [piece for line in details for piece in _wrap(line, chars)]
        widest = max(
            *(_probe_width(line) for line in title_lines),
            *(_probe_width(line) * _DETAIL_SCALE for line in detail_lines),
        )
        lines = len(title_lines) + _DETAIL_SCALE * len(detail_lines)
        scale = min(0.9 * width / widest, 0.7 * height / (_LINE_HEIGHT * probe * lines))
        if int(probe * scale) > best[0] * _WRAP_GAIN:
            best = (int(probe * scale), title_lines, detail_lines)
    return max(best[0], 6), best[1], best[2]


_PROBE = 100
"""The font size at which lines are measured, then scaled."""


@functools.lru_cache(maxsize=256)
def _probe_width(line: str) -> float:
    """A line's width at the probe size (the title's lines and most details recur from one render to the next)."""
    return _text_width(_probe_font(), line)


@functools.cache
def _probe_font() -> _Font:
    return ImageFont.load_default(size=_PROBE)


def _wrap(text: str, chars: int) -> list[str]:
    return textwrap.wrap(text, chars, break_long_words=False, break_on_hyphens=False) or [text]


def _text_width(font: _Font, text: str) -> float:
    parts = text.split(_DASH)
    return sum(font.getlength(part) for part in parts) + (len(parts) - 1) * font.getlength("M")


def _draw_centered(draw: ImageDraw.ImageDraw, center: float, top: float, text: str, font: _Font) -> None:
    """Draw one line in full coverage centred on ``center``, with any em dash drawn as a bar at hyphen height."""
    x = center - _text_width(font, text) / 2
    em = font.getlength("M")
    _, bar_top, _, bar_bottom = font.getbbox("-")
    middle, half = top + (bar_top + bar_bottom) / 2, max(em * 0.04, 0.5)
    for i, part in enumerate(text.split(_DASH)):
        if i:
            draw.rectangle((x + em * 0.1, middle - half, x + em * 0.9, middle + half), fill=255)
            x += em
        draw.text((x, top), part, font=font, fill=255)
        x += font.getlength(part)


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)
