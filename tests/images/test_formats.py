"""An image's type is told from its first bytes in one place, and it names what the decoder opened: a saved file's
MIME type, a reference's upload type and an image resource's type all agree with its content."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from nano_banana_mcp.images.formats import SNIFF_BYTES, mime_type, open_image

WRITTEN = [(fmt, mode) for fmt in ("PNG", "WEBP", "GIF") for mode in ("RGB", "RGBA", "L", "P")]
WRITTEN += [("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK")]


@pytest.mark.parametrize(("fmt", "mode"), WRITTEN)
def test_the_type_told_from_the_first_bytes_is_the_one_the_decoder_opened(fmt: str, mode: str) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (16, 8)).save(buffer, fmt)
    data = buffer.getvalue()
    with open_image(io.BytesIO(data)) as im:
        opened = Image.MIME[im.format or ""]
    assert mime_type(data[:SNIFF_BYTES]) == opened


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (b"\x00\x00\x00\x18ftypheic", "image/heic"),
        (b"\x00\x00\x00\x18ftypmif1", "image/heif"),
        (b"\x00\x00\x00\x18ftypisom", None),  # an MP4 video
        (b"GIF8 is not enough", None),
        (b"RIFF\x00\x00\x00\x00WAVE", None),
        (b"%!PS-Adobe-3.0 EPSF", None),
        (b"BM6\x00\x00\x00\x00\x00", None),
        (b"", None),
    ],
)
def test_other_content_has_no_image_type(head: bytes, mime: str | None) -> None:
    assert mime_type(head) == mime
