"""Image files: reference checks, output naming, size reading and thumbnails. No network here.

Pillow is imported only when an image is actually opened, so the server starts without it.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nano_banana_mcp.errors import ReferenceImageError

__all__ = [
    "THUMBNAIL_MAX_BYTES",
    "THUMBNAIL_MAX_SIDE",
    "ImageMeta",
    "ReferenceFile",
    "check_reference",
    "image_meta",
    "output_path",
    "sniff_mime",
    "thumbnail",
]

THUMBNAIL_MAX_SIDE = 512
THUMBNAIL_MAX_BYTES = 80 * 1024  # base64 adds a third: ~107 KB in the result, under its 120 KB budget

_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/heic": ".heic",
    "image/heif": ".heif",
}


def sniff_mime(head: bytes) -> str | None:
    """The image type from a file's first bytes, or None when they are not an image we accept."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"):
            return "image/heic"
        if brand in (b"mif1", b"msf1", b"heif"):
            return "image/heif"
    return None


@dataclass(frozen=True, slots=True)
class ReferenceFile:
    """A local reference image that passed the checks, read into memory for upload."""

    path: Path
    data: bytes
    mime_type: str
    sha256: str

    @property
    def upload_name(self) -> str:
        # The API sees a neutral name: no part of the user's path leaves the machine.
        return f"reference-{self.sha256[:12]}{_EXTENSIONS[self.mime_type]}"


def check_reference(path: str | Path, *, max_bytes: int, roots: Sequence[Path]) -> ReferenceFile:
    """Read a local reference image, or refuse it naming the rule it breaks.

    The path is resolved first (symlinks followed), then it must lie inside one of ``roots``, not in a
    hidden folder below that root, be at most ``max_bytes``, and be an image by its content.
    """
    shown = str(path)[:200]
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise ReferenceImageError(
            f"Reference image {shown!r} was not found. Pass the absolute path of an existing image file, "
            "or an https:// URL."
        ) from err
    root = next((r for r in roots if resolved.is_relative_to(r)), None)
    if root is None:
        raise ReferenceImageError(
            f"Reference image {shown!r} is outside the folders this server may read "
            f"({', '.join(str(r) for r in roots)}). Add its folder to NANO_BANANA_ALLOWED_DIRS (or --allowed-dir), "
            "or copy the image into one of them."
        )
    hidden = next((part for part in resolved.relative_to(root).parts if part.startswith(".")), None)
    if hidden is not None:
        raise ReferenceImageError(
            f"Reference image {shown!r} is in or is a hidden item ({hidden}); hidden files and folders such as "
            "~/.ssh are never read. Copy the image somewhere visible."
        )
    if not resolved.is_file():
        raise ReferenceImageError(f"Reference image {shown!r} is not a regular file.")
    size = resolved.stat().st_size
    if size > max_bytes:
        raise ReferenceImageError(
            f"Reference image {shown!r} is {size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
            "Resize or recompress it first."
        )
    try:
        with resolved.open("rb") as file:
            data = file.read(max_bytes + 1)  # the file may have grown since the size check
    except OSError as err:
        raise ReferenceImageError(f"Reference image {shown!r} could not be read ({err.strerror}).") from err
    if len(data) > max_bytes:
        raise ReferenceImageError(f"Reference image {shown!r} is over the {max_bytes / 1e6:.0f} MB limit.")
    mime = sniff_mime(data[:32])
    if mime is None:
        raise ReferenceImageError(
            f"Reference image {shown!r} is not a PNG, JPEG, WebP, GIF or HEIC/HEIF image (checked by its "
            "content, not its name)."
        )
    return ReferenceFile(path=resolved, data=data, mime_type=mime, sha256=hashlib.sha256(data).hexdigest())


_SAFE = re.compile(r"[^A-Za-z0-9]+")


def output_path(output_dir: Path, local_id: str, index: int, mime_type: str | None, when: datetime) -> Path:
    """Where output ``index`` of a task is saved: a name the server chooses, inside ``output_dir``.

    Nothing from the prompt or the API goes into it, only the time and our own request id.
    """
    stamp = when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    ident = _SAFE.sub("", local_id)[:12] or "image"
    extension = _EXTENSIONS.get(mime_type or "", ".png")
    return output_dir / f"nano-banana-{stamp}-{ident}-{index + 1}{extension}"


@dataclass(frozen=True, slots=True)
class ImageMeta:
    mime_type: str
    width: int
    height: int


def image_meta(path: Path, *, verify: bool = False) -> ImageMeta:
    """Type and pixel size of a saved image; raises ValueError if it is not a readable image.

    ``verify`` also checks the file is whole (Pillow's ``verify``: chunk checksums for PNG) without
    decoding the pixels, so a truncated or spliced download is caught.
    """
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - keep Pillow off the start-up path

    try:
        with Image.open(path) as im:
            width, height = im.size
            mime = Image.MIME.get(im.format or "", None)
            if verify:
                im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:  # verify() raises SyntaxError too
        raise ValueError(f"{path.name} is not a readable image ({err})") from err
    if mime is None:
        raise ValueError(f"{path.name} is an image of an unknown type")
    return ImageMeta(mime_type=mime, width=width, height=height)


def thumbnail(
    path: Path, *, max_side: int = THUMBNAIL_MAX_SIDE, max_bytes: int = THUMBNAIL_MAX_BYTES
) -> tuple[bytes, str]:
    """A JPEG preview no longer than ``max_side`` on its long side and at most ``max_bytes``."""
    from PIL import Image  # noqa: PLC0415

    with Image.open(path) as im:
        im.draft("RGB", (max_side, max_side))  # JPEG decoders can shrink while decoding
        # Shrink first (reducing_gap: a fast box pre-reduction, then LANCZOS), convert the small image after.
        im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
        preview = im.convert("RGB")
    for quality in (85, 75, 65, 50, 35):
        buffer = io.BytesIO()
        preview.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= max_bytes:
            return buffer.getvalue(), "image/jpeg"
        if quality == 50:
            preview.thumbnail((max_side // 2, max_side // 2), Image.Resampling.LANCZOS)
    return buffer.getvalue(), "image/jpeg"
