"""The finished file: in the output format asked for, with what made it written into its own metadata.

Runs after a download was verified (:func:`nano_banana_mcp.images.decoding.image_meta`); blocking, for a worker
thread. A download is finished under its temporary name (:func:`finish_in_place`) and then renamed once, to its
final name; :func:`finish_image` finishes a file already saved. Pillow is imported only when an image is actually
converted.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from nano_banana_mcp.catalog import OUTPUT_FORMATS
from nano_banana_mcp.images.decoding import DECODING, MAX_PIXELS, ImageMeta, decoded_bytes
from nano_banana_mcp.images.formats import EXTENSIONS, PILLOW_ERRORS, mime_type, open_image
from nano_banana_mcp.images.provenance import Provenance, stamped

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = ["finish_image", "finish_in_place", "finished"]

_OUTPUTS: dict[str, str] = {name: name.upper() for name in OUTPUT_FORMATS}
"""Each ``output_format`` (``None`` keeps what the API delivered) as Pillow's format name."""
_KEPT = ("PNG", "JPEG", "WEBP", "GIF")
"""Formats a file keeps when no output format is asked; anything else (HEIF) becomes PNG, so it can carry provenance."""
_QUALITY = 92


def finish_in_place(path: Path, *, output_format: str | None, provenance: Provenance) -> ImageMeta:
    """Finish a verified image that is not yet under its final name (a download's part file): its content is
    replaced by the finished image (see :func:`finished`), written through no link, and its meta returned.

    The caller then renames it once, to the name for :attr:`ImageMeta.mime_type`
    (:func:`~nano_banana_mcp.images.naming.output_path`): the image is written once under its final name.
    ValueError as :func:`finished`; OSError when the file cannot be read or written.
    """
    data, meta = finished(path.read_bytes(), output_format=output_format, provenance=provenance)
    flags = os.O_WRONLY | os.O_TRUNC | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    with os.fdopen(os.open(path, flags), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    return meta


def finish_image(path: Path, *, output_format: str | None, provenance: Provenance) -> tuple[Path, ImageMeta]:
    """Rewrite a saved, verified image in place: in ``output_format`` when given, with ``provenance`` embedded
    (see :func:`finished`).

    The new file is written beside the old one (a hidden ``.name.tmp``, removed if anything fails) and renamed over
    it; its extension follows its content (``x.png`` asked as JPEG becomes ``x.jpg``, and ``x.png`` is removed).
    Returns the final path and its meta. Nothing is written outside ``path``'s folder.

    ValueError as :func:`finished`; OSError when the file cannot be read or written.
    """
    data, meta = finished(path.read_bytes(), output_format=output_format, provenance=provenance)
    extension = EXTENSIONS[meta.mime_type]
    keep = path.suffix.lower() == extension or (extension == ".jpg" and path.suffix.lower() == ".jpeg")
    final = path if keep else path.with_suffix(extension)
    _replace(path, final, data)
    return final, meta


def finished(data: bytes, *, output_format: str | None, provenance: Provenance) -> tuple[bytes, ImageMeta]:
    """The image in ``data`` in ``output_format`` when given, with ``provenance`` embedded; and its meta.

    A file that keeps its format is not re-encoded: the metadata is spliced into its container and its pixel data
    stays byte for byte what the API sent. A conversion decodes at most :data:`MAX_PIXELS` pixels (more is a
    ValueError), keeps the pixel size and the ICC profile, and takes the first frame of an animation; JPEG has no
    alpha, so transparency is flattened onto white; JPEG and WebP are written at quality 92. Anything kept in no
    output format (HEIF) becomes PNG, so it can carry provenance.

    ValueError for an unknown ``output_format`` (naming the allowed ones) or an image that cannot be rewritten.
    """
    target = _output_format(output_format)
    fields = provenance.fields()
    with open_image(io.BytesIO(data)) as im:
        kind = target or (im.format if im.format in _KEPT else "PNG")
        size = im.size
        if kind == im.format:
            alpha = im.mode in ("RGBA", "LA", "PA")  # a simple WebP that gets a VP8X header must say so
        else:
            data, alpha = _converted(im, kind)
    try:
        data = stamped(kind, data, fields, size=size, alpha=alpha)
    except (IndexError, ValueError) as err:
        reason = "it ends too early" if isinstance(err, IndexError) else str(err)
        raise ValueError(f"its {kind} structure could not be read to add metadata: {reason}") from err
    mime = mime_type(data)
    if mime is None:  # never: every kind finished here has its signature
        raise ValueError(f"its {kind} form has no known MIME type")
    return data, ImageMeta(mime_type=mime, width=size[0], height=size[1])


def _output_format(output_format: str | None) -> str | None:
    if output_format is None:
        return None
    try:
        return _OUTPUTS[output_format]
    except KeyError:
        raise ValueError(
            f"Unknown output_format {output_format!r}: use one of {', '.join(OUTPUT_FORMATS)}, "
            "or none to keep the format the API delivered."
        ) from None


def _converted(im: Image, kind: str) -> tuple[bytes, bool]:
    """``im`` encoded as ``kind`` (no metadata yet but its ICC profile), and whether the result has alpha."""
    from PIL import Image  # noqa: PLC0415

    width, height = im.size
    if width * height > MAX_PIXELS:
        raise ValueError(
            f"it is {width}x{height} pixels, more than the {MAX_PIXELS // 1_000_000} million ever decoded from one "
            "image, so it cannot be converted; ask for no output format to keep it as delivered"
        )
    icc = None if im.mode == "CMYK" else im.info.get("icc_profile")  # a CMYK profile does not fit RGB pixels
    options: dict[str, int | bool] = {}
    with DECODING.reserve(2 * decoded_bytes(im.size)):  # the pixels, and the converted copy beside them
        try:
            im.load()
        except PILLOW_ERRORS as err:
            raise ValueError(f"it does not decode as a whole image ({err})") from err
        alpha = im.has_transparency_data
        out = im
        if kind == "JPEG":
            if alpha:
                rgba = im.convert("RGBA")
                out = Image.new("RGB", im.size, (255, 255, 255))
                out.paste(rgba, mask=rgba.getchannel("A"))
            elif im.mode not in ("RGB", "L"):
                out = im.convert("RGB")
            alpha = False
            options = {"quality": _QUALITY, "optimize": True}
        elif kind == "WEBP":
            mode = "RGBA" if alpha else "RGB"
            out = im if im.mode == mode else im.convert(mode)
            options = {"quality": _QUALITY, "method": 4}
        elif im.mode == "CMYK":  # PNG holds every other mode Pillow opens from the allowed formats
            out = im.convert("RGB")
        buffer = io.BytesIO()
        out.save(buffer, kind, icc_profile=icc, **options)
    return buffer.getvalue(), alpha


def _replace(path: Path, final: Path, data: bytes) -> None:
    """Write ``data`` to a hidden temporary file beside ``path``, then rename it to ``final`` (same folder) and
    remove ``path`` if that is another file. The temporary file never follows a link and is removed on failure."""
    temp = final.with_name(f".{final.name}.tmp")
    temp.unlink(missing_ok=True)  # left by a crash: removed, never written through
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    renamed = final != path and not (final.exists() and path.samefile(final))  # x.PNG vs x.png
    try:
        fd = os.open(temp, flags, stat.S_IMODE(path.stat().st_mode))
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temp.replace(final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if renamed:
        path.unlink(missing_ok=True)
