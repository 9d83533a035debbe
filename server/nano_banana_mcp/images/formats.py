"""What an image may be: the formats any image is opened as, how its type is told from its bytes, the extension of
each type, and the one way to open one.

Whoever sent it, an image is opened only as one of :data:`FORMATS` (PNG, JPEG, WebP, GIF; HEIF too when the
optional pillow-heif plugin is installed), so no other decoder Pillow carries (PostScript through Ghostscript,
TIFF, BMP, ...) ever sees a file from the API or the agent.
"""

from __future__ import annotations

import functools
import importlib
import struct
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["EXTENSIONS", "FORMATS", "PILLOW_ERRORS", "SNIFF_BYTES", "mime_type", "open_image"]

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""What any image is opened as (Pillow's names); HEIF is added when pillow-heif is installed."""
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
"""What Pillow raises on a file it cannot read (``UnidentifiedImageError`` is an OSError; text chunks over its
limits are a ValueError; ``verify`` raises SyntaxError)."""
EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/heic": ".heic",
    "image/heif": ".heif",
}
"""The extension a file of each MIME type is saved or uploaded under."""
SNIFF_BYTES = 12
"""How many first bytes :func:`mime_type` reads."""
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_HEIF_BRANDS = dict.fromkeys((b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"), "image/heic")
_HEIF_BRANDS |= dict.fromkeys((b"mif1", b"msf1"), "image/heif")
"""The major brands of an ISO media file (its ``ftyp`` box) that pillow-heif opens, and what each is."""


def mime_type(head: bytes) -> str | None:
    """The MIME type of an image from its first :data:`SNIFF_BYTES` bytes: PNG, JPEG, WebP, GIF, or HEIC/HEIF; None
    for anything else.

    The one place a type is told from content: the same signatures Pillow's openers accept, so an image that
    :func:`open_image` opened has the type this names. Only the signature is read: whether the rest is a whole image
    is for the decoder to say.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _HEIF_BRANDS.get(head[8:12])
    return next((mime for signature, mime in _SIGNATURES if head.startswith(signature)), None)


@functools.cache
def _formats() -> tuple[str, ...]:
    """:data:`FORMATS`, and HEIF when pillow-heif is installed: it is not a dependency, so only ever on purpose."""
    try:
        heif = importlib.import_module("pillow_heif")
    except ImportError:
        return FORMATS
    heif.register_heif_opener()
    return (*FORMATS, "HEIF")


def open_image(fp: BinaryIO) -> Image:
    """``fp`` opened (its header read) as one of the allowed formats; ValueError saying why not."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - keep Pillow off the start-up path

    try:
        return Image.open(fp, formats=_formats())
    except UnidentifiedImageError as err:
        heic = "" if "HEIF" in _formats() else " (HEIC only with the pillow-heif plugin installed)"
        raise ValueError(f"its content is not a PNG, JPEG, WebP, GIF or HEIC image{heic}") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"it has far more pixels than are ever decoded ({err})") from err
    except PILLOW_ERRORS as err:
        raise ValueError(f"it is not a readable image ({err})") from err
