"""Decoding within limits: never more than :data:`MAX_PIXELS` pixels from one image, and never more than
:data:`DECODE_BUDGET` bytes of pixels held at once in this process; an image's type and size, and previews.

A JPEG is decoded at a reduced scale when that brings it under the cap; anything else over it is refused from its
header.
"""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from nano_banana_mcp.images.formats import PILLOW_ERRORS, SNIFF_BYTES, mime_type, open_image

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "DECODE_BUDGET",
    "DECODING",
    "MAX_PIXELS",
    "THUMBNAIL_MAX_BYTES",
    "THUMBNAIL_MAX_SIDE",
    "DecodeBudget",
    "ImageMeta",
    "checked_meta",
    "decoded_bytes",
    "image_meta",
    "thumbnail",
]

MAX_PIXELS = 40_000_000
"""The most pixels decoded from one image: about twice the largest output the models make (4K, ~17 MP)."""
THUMBNAIL_MAX_SIDE = 512
THUMBNAIL_MAX_BYTES = 80 * 1024  # base64 adds a third: ~107 KB in the result, under its 120 KB budget

DECODE_BUDGET = 2 * MAX_PIXELS * 4
"""Bytes of decoded pixels held at once in this process, whatever arrives at the same time (results checked,
previews made, references checked, outputs converted): two images of the cap (Pillow keeps 4 bytes a pixel for RGB),
~320 MB."""
_MMAP_THRESHOLD = 1 << 20
"""Allocations from this size up get pages of their own, given back to the system when freed (glibc's mallopt)."""


class DecodeBudget:
    """A process-wide budget of decoded bytes: a decode waits until its pixels fit beside those held by others.

    The wait is bounded: each holder decodes one image of at most :data:`MAX_PIXELS` and lets go. Its first use also
    has glibc's malloc give large blocks back to the system when they are freed (see :func:`_give_back_freed_pixels`),
    without which the budget bounds what is decoded at once but not what the process keeps.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self._held = 0
        self._changed = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold ``nbytes`` of the budget (at most all of it) while the block runs, waiting until they are free."""
        _give_back_freed_pixels()
        nbytes = max(0, min(nbytes, self.total))
        with self._changed:
            self._changed.wait_for(lambda: self._held + nbytes <= self.total)
            self._held += nbytes
        try:
            yield
        finally:
            with self._changed:
                self._held -= nbytes
                self._changed.notify_all()


DECODING = DecodeBudget(DECODE_BUDGET)
"""The one decode budget of this process."""


@functools.cache
def _give_back_freed_pixels() -> None:
    """On glibc, every block from :data:`_MMAP_THRESHOLD` up (Pillow's pixel blocks, 16 MB) is mapped on its own and
    returned to the system when freed.

    By default glibc raises that threshold to the size of the first such block freed (up to 32 MB), so later pixel
    blocks come from the malloc arena of the worker thread that decodes, which keeps them once freed: each thread
    then holds up to a whole image of its own (bench/decode_rss.py, 8 concurrent calls of 14 data: URIs of 159 MB
    each: peak RSS 698 MB with two decodes at a time).
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return
    except (ValueError, OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return
    import ctypes  # noqa: PLC0415 - only where it is used

    try:
        ctypes.CDLL(None).mallopt(-3, _MMAP_THRESHOLD)  # M_MMAP_THRESHOLD; setting it stops glibc's adjusting it
    except (OSError, AttributeError):
        return


def decoded_bytes(size: tuple[int, int]) -> int:
    """The most memory Pillow takes for the pixels of an image of ``size`` (4 bytes a pixel: RGB is kept as RGBX)."""
    return size[0] * size[1] * 4


def _sized(im: Image, scale_to: int) -> tuple[int, int]:
    """Set a JPEG to decode at the smallest scale not under ``scale_to`` a side; refuse what would decode past the cap.

    Returns the image's full size.
    """
    full = im.size
    if im.format == "JPEG":
        im.draft(None, (scale_to, scale_to))  # JPEG decoders shrink 2, 4 or 8 times while decoding
    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"it is {full[0]}x{full[1]} pixels, more than the {MAX_PIXELS // 1_000_000} million ever decoded "
            "from one image"
        )
    return full


@contextmanager
def _decoded(fp: BinaryIO, scale_to: int) -> Iterator[tuple[Image, tuple[int, int]]]:
    """The image in ``fp`` decoded whole (see :func:`_sized`), with its full size; ValueError if it cannot be."""
    with open_image(fp) as im:
        full = _sized(im, scale_to)
        with DECODING.reserve(decoded_bytes(im.size)):
            try:
                im.load()  # the pixels, then what follows them (PNG text chunks, within Pillow's limits)
            except PILLOW_ERRORS as err:
                raise ValueError(f"it does not decode as a whole image ({err})") from err
            yield im, full


@dataclass(frozen=True, slots=True)
class ImageMeta:
    mime_type: str
    width: int
    height: int


def checked_meta(fp: BinaryIO) -> ImageMeta:
    """Type and full size of a whole image: chunk checksums (PNG) checked, then every pixel decoded (within the cap).

    ValueError (saying why) unless it is an image of an allowed format that decodes whole within the pixel cap.
    """
    head = fp.read(SNIFF_BYTES)
    fp.seek(0)
    with open_image(fp) as im:
        try:
            im.verify()  # a spliced or truncated download fails its checksums here
        except PILLOW_ERRORS as err:
            raise ValueError(f"it is damaged ({err})") from err
    fp.seek(0)  # after verify() an image must be opened again
    with _decoded(fp, THUMBNAIL_MAX_SIDE) as (im, (width, height)):
        return _meta(head, im, width, height)


def _meta(head: bytes, im: Image, width: int, height: int) -> ImageMeta:
    """The meta of an image Pillow opened, its type told from its first bytes (``head``)."""
    mime = mime_type(head)
    if mime is None:
        raise ValueError(f"its type ({im.format}) has no known MIME type")
    return ImageMeta(mime_type=mime, width=width, height=height)


def image_meta(path: Path, *, verify: bool = False) -> ImageMeta:
    """Type and pixel size of a saved image; ValueError (saying why, without the file's name) unless it is an image
    of an allowed format that decodes within the pixel cap. OSError is about the file itself (missing, unreadable).

    ``verify`` also proves it whole: chunk checksums (PNG), then every pixel decoded (a JPEG at a reduced scale),
    so a truncated or spliced download, or one past Pillow's own limits (a giant text chunk), is caught here and
    not when its preview is made.
    """
    with path.open("rb") as fp:
        if verify:
            return checked_meta(fp)
        head = fp.read(SNIFF_BYTES)
        fp.seek(0)
        with open_image(fp) as im:
            return _meta(head, im, *_sized(im, THUMBNAIL_MAX_SIDE))


def thumbnail(
    source: Path | bytes, *, max_side: int = THUMBNAIL_MAX_SIDE, max_bytes: int = THUMBNAIL_MAX_BYTES
) -> tuple[bytes, str]:
    """A JPEG preview no longer than ``max_side`` on its long side and at most ``max_bytes``.

    ValueError (saying why) when the file is not an image that can be previewed: another format, too many pixels,
    damaged. OSError when the file cannot be read.
    """
    from PIL import Image  # noqa: PLC0415

    with (
        source.open("rb") if isinstance(source, Path) else io.BytesIO(source) as fp,
        _decoded(fp, max_side) as (im, _),
    ):
        # Shrink first (reducing_gap: a fast box pre-reduction, then LANCZOS), convert the small image after; but a
        # palette or bilevel image is converted first, as Pillow only ever shrinks those by picking pixels.
        shrunk = im.convert("RGB") if im.mode in ("P", "1") else im
        shrunk.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        preview = shrunk.convert("RGB")
    for quality in (85, 75, 65, 50, 35):
        buffer = io.BytesIO()
        preview.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue(), "image/jpeg"
        if quality == 50:
            preview.thumbnail((max_side // 2, max_side // 2), Image.Resampling.LANCZOS)
    return buffer.getvalue(), "image/jpeg"
