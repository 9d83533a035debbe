"""Image files: reference checks, output naming, image checks and previews. No network here.

Whoever sent it, an image is opened only as one of :data:`FORMATS` (PNG, JPEG, WebP, GIF; HEIF too when the
optional pillow-heif plugin is installed), so no other decoder Pillow carries (PostScript through Ghostscript,
TIFF, BMP, ...) ever sees a file from the API or the agent; and never more than :data:`MAX_PIXELS` pixels are
decoded (a JPEG is decoded at a reduced scale when that brings it under; anything else is refused from its
header). A reference is read from the descriptor that was checked, never opened again by its path.

Pillow is imported only when an image is actually opened, so the server starts without it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import importlib
import io
import os
import re
import stat
import struct
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from nano_banana_mcp.errors import ReferenceImageError

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "DECODE_BUDGET",
    "DECODING",
    "EXTENSIONS",
    "FORMATS",
    "MAX_PIXELS",
    "PILLOW_ERRORS",
    "THUMBNAIL_MAX_BYTES",
    "THUMBNAIL_MAX_SIDE",
    "DecodeBudget",
    "ImageMeta",
    "ReferenceFile",
    "check_reference",
    "client_root",
    "decoded_bytes",
    "image_meta",
    "open_image",
    "output_path",
    "reference_from_bytes",
    "thumbnail",
]

FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
"""What any image is opened as (Pillow's names); HEIF is added when pillow-heif is installed."""
MAX_PIXELS = 40_000_000
"""The most pixels decoded from one image: about twice the largest output the models make (4K, ~17 MP)."""
THUMBNAIL_MAX_SIDE = 512
THUMBNAIL_MAX_BYTES = 80 * 1024  # base64 adds a third: ~107 KB in the result, under its 120 KB budget

_KINDS = "PNG, JPEG, WebP or GIF"
PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
"""What Pillow raises on a file it cannot read (``UnidentifiedImageError`` is an OSError; text chunks over its
limits are a ValueError; ``verify`` raises SyntaxError)."""
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


EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/heic": ".heic",
    "image/heif": ".heif",
}


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


def _inspect(fp: BinaryIO) -> ImageMeta:
    """Type and full size of a whole image: chunk checksums (PNG) checked, then every pixel decoded (within the cap)."""
    from PIL import Image  # noqa: PLC0415

    with open_image(fp) as im:
        try:
            im.verify()  # a spliced or truncated download fails its checksums here
        except PILLOW_ERRORS as err:
            raise ValueError(f"it is damaged ({err})") from err
    fp.seek(0)  # after verify() an image must be opened again
    with _decoded(fp, THUMBNAIL_MAX_SIDE) as (im, (width, height)):
        mime = Image.MIME.get(im.format or "")
    if mime is None:
        raise ValueError(f"its type ({im.format}) has no known MIME type")
    return ImageMeta(mime_type=mime, width=width, height=height)


@dataclass(frozen=True, slots=True)
class ReferenceFile:
    """A local reference image that passed the checks, read into memory for upload."""

    path: Path | None  # None for an image that came as bytes (a data: URI)
    data: bytes
    mime_type: str
    sha256: str

    @property
    def upload_name(self) -> str:
        # The API sees a neutral name: no part of the user's path leaves the machine.
        return f"reference-{self.sha256[:12]}{EXTENSIONS[self.mime_type]}"


def check_reference(path: str | Path, *, max_bytes: int, roots: Sequence[Path]) -> ReferenceFile:
    """Read a local reference image, or refuse it naming the rule it breaks.

    The path is resolved first (symlinks followed), then it must lie inside one of ``roots`` and not in a hidden
    folder below that root. That very path is then opened without following any link (see :func:`_open_exactly`),
    so a file or folder swapped for a link or a FIFO after the check is refused, not read. The opened descriptor
    must be a regular file of at most ``max_bytes``; only it is read, and its content must decode as an image of
    an allowed format within the pixel cap.
    """
    shown = str(path)[:200]
    if "\x00" in str(path):  # os calls refuse it with a ValueError of their own
        raise ReferenceImageError(
            f"Reference image {shown!r} holds a NUL character, which no file path can. Pass the absolute path of an "
            "existing image file, or an https:// URL."
        )
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
    not_a_file = ReferenceImageError(f"Reference image {shown!r} is not a regular file.")
    if not resolved.is_file():  # the clear answer for a folder or a device; the descriptor is checked again below
        raise not_a_file
    try:
        fd = _open_exactly(resolved)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EMLINK):
            raise ReferenceImageError(
                f"Reference image {shown!r} changed while it was being checked (it or a folder above it was moved, "
                "or replaced by a link); it was not read. Pass it again once it stays where it is."
            ) from err
        raise ReferenceImageError(f"Reference image {shown!r} could not be read ({err.strerror}).") from err
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device swapped in: never read (it was opened non-blocking)
            raise not_a_file
        if info.st_size > max_bytes:
            raise ReferenceImageError(
                f"Reference image {shown!r} is {info.st_size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
                "Resize or recompress it first."
            )
        try:
            data = file.read(max_bytes + 1)  # the file may have grown since the size check
        except OSError as err:
            raise ReferenceImageError(f"Reference image {shown!r} could not be read ({err.strerror}).") from err
    if len(data) > max_bytes:
        raise ReferenceImageError(f"Reference image {shown!r} is over the {max_bytes / 1e6:.0f} MB limit.")
    try:
        meta = _inspect(io.BytesIO(data))
    except ValueError as err:
        raise ReferenceImageError(
            f"Reference image {shown!r} cannot be used: {err} (checked by its content, not its name). "
            f"Pass a {_KINDS} image, resized if it is very large."
        ) from err
    return ReferenceFile(path=resolved, data=data, mime_type=meta.mime_type, sha256=hashlib.sha256(data).hexdigest())


_SPECIAL_FOLDERS = tuple(Path(p) for p in ("/proc", "/sys", "/dev")) if os.name == "posix" else ()
"""The kernel's folders of special files: never a root, nor inside one."""


def client_root(path: str | Path) -> Path:
    """A folder an MCP client declared as a root (stdio only), resolved; else ReferenceImageError saying why it is
    not read from.

    The rules for a file inside a root hold for the root itself: links are followed first and the folder they lead
    to is what is judged; it must be a folder (not a file, a FIFO or a device), with no hidden folder on its path
    (``~/.cache``, or anything inside it, names nothing readable); and it may not be the whole disk, a folder above
    the home folder (``/``, ``/home``) or a folder of the kernel's special files (``/proc``, ``/sys``, ``/dev``).
    """
    shown = str(path)[:200]
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise ReferenceImageError(f"the root {shown!r} does not exist") from err
    if not resolved.is_dir():
        raise ReferenceImageError(f"the root {shown!r} is not a folder")
    hidden = next((part for part in resolved.parts if part.startswith(".")), None)
    if hidden is not None:
        raise ReferenceImageError(f"the root {shown!r} is or is inside a hidden folder ({hidden})")
    try:
        home: Path | None = Path.home().resolve()
    except (OSError, RuntimeError):  # no home folder known: only the whole disk is too wide
        home = None
    if resolved.parent == resolved or (home is not None and resolved != home and home.is_relative_to(resolved)):
        raise ReferenceImageError(f"the root {shown!r} holds the whole disk or every user's home folder")
    if any(resolved.is_relative_to(folder) for folder in _SPECIAL_FOLDERS):
        raise ReferenceImageError(f"the root {shown!r} is a folder of the system's special files")
    return resolved


if sys.platform == "win32":

    def _open_exactly(path: Path) -> int:
        """``path`` opened for reading, only if the opened file's final path is ``path`` itself.

        Windows has no O_NOFOLLOW: the file is opened, then the handle's final path (links and junctions resolved)
        must be the path that was checked.
        """
        fd = os.open(path, os.O_RDONLY | os.O_BINARY)
        try:
            final = _final_path(fd)
        except OSError:
            os.close(fd)
            raise
        if os.path.normcase(final) != os.path.normcase(str(path)):
            os.close(fd)
            raise OSError(errno.ELOOP, f"the path now leads to {final}")
        return fd

    def _final_path(fd: int) -> str:
        """The final path of an open file (GetFinalPathNameByHandleW), without the ``\\\\?\\`` prefix."""
        import ctypes  # noqa: PLC0415
        import msvcrt  # noqa: PLC0415
        from ctypes import wintypes  # noqa: PLC0415

        get = ctypes.windll.kernel32.GetFinalPathNameByHandleW
        get.argtypes = (wintypes.HANDLE, wintypes.LPWSTR, wintypes.DWORD, wintypes.DWORD)
        get.restype = wintypes.DWORD
        buffer = ctypes.create_unicode_buffer(32_768)
        length = get(msvcrt.get_osfhandle(fd), buffer, len(buffer), 0)  # FILE_NAME_NORMALIZED, VOLUME_NAME_DOS
        if not 0 < length < len(buffer):
            raise ctypes.WinError()
        final = buffer.value
        if final.startswith("\\\\?\\UNC\\"):
            return "\\\\" + final[8:]
        return final.removeprefix("\\\\?\\")

else:
    _FOLDER = os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_PATH", os.O_RDONLY)  # O_PATH: no read right needed
    _FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY

    def _open_exactly(path: Path) -> int:
        """``path`` (absolute, resolved) opened one name at a time from ``/``, following no link on the way.

        Each folder is opened relative to the one before (``dir_fd``) with O_NOFOLLOW, and the file with
        O_NOFOLLOW and O_NONBLOCK (a FIFO opens at once instead of waiting for a writer): a name swapped for a link
        since the path was checked fails with ELOOP or ENOTDIR, so what is opened is what was checked.
        """
        anchor, *folders, name = path.parts
        fd = os.open(anchor, _FOLDER)
        try:
            for folder in folders:
                inner = os.open(folder, _FOLDER, dir_fd=fd)
                os.close(fd)
                fd = inner
            return os.open(name, _FILE, dir_fd=fd)
        finally:
            os.close(fd)


_SAFE = re.compile(r"[^A-Za-z0-9]+")


def output_path(output_dir: Path, local_id: str, index: int, mime_type: str | None, when: datetime) -> Path:
    """Where output ``index`` of a task is saved: a name the server chooses, inside ``output_dir``.

    Nothing from the prompt or the API goes into it, only the time and our own request id.
    """
    stamp = when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    ident = _SAFE.sub("", local_id)[:12] or "image"
    extension = EXTENSIONS.get(mime_type or "", ".png")
    return output_dir / f"nano-banana-{stamp}-{ident}-{index + 1}{extension}"


@dataclass(frozen=True, slots=True)
class ImageMeta:
    mime_type: str
    width: int
    height: int


def image_meta(path: Path, *, verify: bool = False) -> ImageMeta:
    """Type and pixel size of a saved image; ValueError (saying why, without the file's name) unless it is an image
    of an allowed format that decodes within the pixel cap. OSError is about the file itself (missing, unreadable).

    ``verify`` also proves it whole: chunk checksums (PNG), then every pixel decoded (a JPEG at a reduced scale),
    so a truncated or spliced download, or one past Pillow's own limits (a giant text chunk), is caught here and
    not when its preview is made.
    """
    with path.open("rb") as fp:
        if verify:
            return _inspect(fp)
        from PIL import Image  # noqa: PLC0415

        with open_image(fp) as im:
            width, height = _sized(im, THUMBNAIL_MAX_SIDE)
            mime = Image.MIME.get(im.format or "")
    if mime is None:
        raise ValueError(f"its type ({im.format}) has no known MIME type")
    return ImageMeta(mime_type=mime, width=width, height=height)


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


def reference_from_bytes(data: bytes, *, max_bytes: int, shown: str) -> ReferenceFile:
    """A reference image given as bytes (a ``data:`` URI), checked like a file: size, then a capped decode."""
    if len(data) > max_bytes:
        raise ReferenceImageError(
            f"Reference image {shown} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
            "Resize or recompress it first."
        )
    try:
        meta = _inspect(io.BytesIO(data))
    except ValueError as err:
        raise ReferenceImageError(
            f"Reference image {shown} cannot be used: {err}. Pass a {_KINDS} image, resized if it is very large."
        ) from err
    return ReferenceFile(path=None, data=data, mime_type=meta.mime_type, sha256=hashlib.sha256(data).hexdigest())
