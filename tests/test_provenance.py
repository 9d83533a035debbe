"""The finished file: each output format from each input format, and provenance that reads back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from xml.etree import ElementTree

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngImageFile

from nano_banana_mcp import __version__
from nano_banana_mcp.emulator.render import render_placeholder
from nano_banana_mcp.images.decoding import MAX_PIXELS, image_meta
from nano_banana_mcp.images.finishing import finish_image
from nano_banana_mcp.images.provenance import Provenance, read_provenance

if TYPE_CHECKING:
    from tests.conftest import MakeUndecodablePng

pytestmark = pytest.mark.anyio

# -- finished files: output format and provenance --------------------------------------------------

AI_GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
PLACEHOLDER = "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia"
PROMPT = (
    "Draw <b>\"bold\" & 'quoted'</b> ]]> <!-- no comment --> &amp; <?pi?>\r\nline two\ttabbed\n"
    "\U0001f34c \U0001f469\u200d\U0001f469\u200d\U0001f467 שלום עולם مرحبا \u202eturned\u202c cafe\u0301 end  "
)
"""Markup, entities, quotes, CR LF, tabs, emoji (one a ZWJ family), Hebrew, Arabic, a bidi override, a combining
accent, trailing spaces."""
WHEN = datetime(2025, 6, 1, 12, 34, 56, tzinfo=UTC)
PROVENANCE = Provenance(prompt=PROMPT, model="nano-banana-2", task_id="task_abc123", created_at=WHEN)
EXPECTED = {
    "prompt": PROMPT,
    "model": "nano-banana-2",
    "task_id": "task_abc123",
    "created_at": "2025-06-01T12:34:56Z",
    "software": f"nano-banana-mcp {__version__}",
    "digital_source_type": AI_GENERATED,
    "description": PROMPT,
}
SOURCES = {"png": ("PNG", ".png"), "jpeg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp"), "gif": ("GIF", ".gif")}
TARGETS = [None, "png", "jpeg", "webp"]
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
NS = {
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "iptc": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
}


def saved(folder: Path, kind: str, colour: tuple[int, int, int, int] = (10, 120, 200, 128)) -> Path:
    """A 64x48 download as the runner names it: PNG and WebP with alpha, JPEG and GIF opaque."""
    fmt, suffix = SOURCES[kind]
    image = Image.new("RGBA", (64, 48), colour)
    image.paste((250, 40, 40, 255), (0, 0, 32, 24))
    if fmt == "JPEG":
        image = image.convert("RGB")
    elif fmt == "GIF":
        image = image.convert("RGB").convert("P")
    path = folder / f"nano-banana-20250601-123456-abc-1{suffix}"
    image.save(path, fmt)
    return path


def xmp_of(path: Path) -> ElementTree.Element:
    """The file's XMP as plain Pillow reads it, parsed."""
    with Image.open(path) as im:
        packet = im.info["xmp"]
    return ElementTree.fromstring(packet.encode() if isinstance(packet, str) else packet)


@pytest.mark.parametrize("target", TARGETS, ids=[str(t) for t in TARGETS])
@pytest.mark.parametrize("source", SOURCES)
def test_each_output_format_from_each_input_format(tmp_path: Path, source: str, target: str | None) -> None:
    """Every input becomes the asked format (None keeps it) at the same size, named and typed by its content."""
    path = saved(tmp_path, source)
    final, meta = finish_image(path, output_format=target, provenance=PROVENANCE)
    fmt = SOURCES[target or source][0]
    assert final == path.with_suffix(SOURCES[target or source][1])
    assert meta.mime_type == MIME[fmt]
    assert (meta.width, meta.height) == (64, 48)
    assert image_meta(final, verify=True) == meta
    with Image.open(final) as im:
        assert im.format == fmt
        assert im.size == (64, 48)
    assert [p.name for p in tmp_path.iterdir()] == [final.name]  # no temporary file, no old file


@pytest.mark.parametrize("source", SOURCES)
def test_a_kept_format_is_not_re_encoded(tmp_path: Path, source: str) -> None:
    """Without an output format (or asked for its own), the file decodes to exactly what the API sent."""
    path = saved(tmp_path, source)
    with Image.open(path) as im:
        before = im.tobytes()
    final, _ = finish_image(path, output_format=None, provenance=PROVENANCE)
    same = None if source == "gif" else source
    final, _ = finish_image(final, output_format=same, provenance=PROVENANCE)
    with Image.open(final) as im:
        assert im.tobytes() == before  # a JPEG or lossy WebP encoded again would differ


def test_jpeg_flattens_transparency_onto_white(tmp_path: Path) -> None:
    """JPEG has no alpha: a transparent pixel becomes white, not black."""
    path = saved(tmp_path, "png", colour=(0, 0, 0, 0))
    final, _ = finish_image(path, output_format="jpeg", provenance=PROVENANCE)
    with Image.open(final) as im:
        assert im.mode == "RGB"
        pixel = im.getpixel((60, 44))
        assert isinstance(pixel, tuple)
        assert all(channel >= 250 for channel in pixel)


@pytest.mark.parametrize("target", [None, "png", "webp"])
def test_png_and_webp_keep_transparency(tmp_path: Path, target: str | None) -> None:
    """A transparent PNG stays transparent as PNG or WebP."""
    final, _ = finish_image(saved(tmp_path, "png"), output_format=target, provenance=PROVENANCE)
    with Image.open(final) as im:
        assert im.mode == "RGBA"
        low, high = im.getchannel("A").getextrema()
        assert isinstance(low, int)
        assert 120 <= low <= 136
        assert high == 255


def test_a_simple_webp_with_alpha_announces_it(tmp_path: Path) -> None:
    """A lossless WebP with alpha gets the VP8X header its metadata needs, with the alpha flag the spec asks for."""
    path = tmp_path / "lossless.webp"
    Image.new("RGBA", (64, 48), (10, 120, 200, 128)).save(path, "WEBP", lossless=True)
    assert path.read_bytes()[12:16] == b"VP8L"
    final, _ = finish_image(path, output_format=None, provenance=PROVENANCE)
    data = final.read_bytes()
    assert data[12:16] == b"VP8X"
    assert data[20] & 0x1C == 0x1C  # alpha, EXIF, XMP
    assert int.from_bytes(data[24:27], "little") + 1 == 64
    with Image.open(final) as im:
        assert im.mode == "RGBA"
        assert im.getchannel("A").getextrema() == (128, 128)


@pytest.mark.parametrize("target", TARGETS, ids=[str(t) for t in TARGETS])
@pytest.mark.parametrize("source", SOURCES)
def test_provenance_reads_back_exactly(tmp_path: Path, source: str, target: str | None) -> None:
    """Prompt (hostile characters and all), model, task, time, tool and source type come back as written."""
    final, _ = finish_image(saved(tmp_path, source), output_format=target, provenance=PROVENANCE)
    assert read_provenance(final) == EXPECTED


@pytest.mark.parametrize("source", ["png", "jpeg", "webp"])
def test_xmp_holds_the_provenance_for_any_reader(tmp_path: Path, source: str) -> None:
    """Plain Pillow finds the XMP; it parses as XML, types the image as AI-generated, and holds the exact prompt."""
    final, _ = finish_image(saved(tmp_path, source), output_format=None, provenance=PROVENANCE)
    root = xmp_of(final)
    assert root.findtext(".//iptc:DigitalSourceType", namespaces=NS) == AI_GENERATED
    assert root.findtext(".//iptc:AIPromptInformation", namespaces=NS) == PROMPT
    assert root.findtext(".//iptc:AISystemUsed", namespaces=NS) == "nano-banana-2"
    assert root.findtext(".//dc:description/rdf:Alt/rdf:li", namespaces=NS) == PROMPT
    assert root.findtext(".//photoshop:TransmissionReference", namespaces=NS) == "task_abc123"
    assert root.findtext(".//xmp:CreateDate", namespaces=NS) == "2025-06-01T12:34:56Z"
    assert root.findtext(".//xmp:CreatorTool", namespaces=NS) == f"nano-banana-mcp {__version__}"


def test_png_text_chunks_hold_the_provenance(tmp_path: Path) -> None:
    """PNG readers that know only text chunks see the prompt, tool, time and model (iTXt: any Unicode survives)."""
    final, _ = finish_image(saved(tmp_path, "png"), output_format=None, provenance=PROVENANCE)
    with Image.open(final) as im:
        assert isinstance(im, PngImageFile)
        text = dict(im.text)
    assert text["Description"] == PROMPT
    assert text["Software"] == f"nano-banana-mcp {__version__}"
    assert text["Creation Time"] == "2025-06-01T12:34:56Z"
    assert text["Source"] == "nano-banana-2"
    assert AI_GENERATED in text["XML:com.adobe.xmp"]


@pytest.mark.parametrize("source", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("target", ["jpeg", "webp"])
def test_exif_holds_the_provenance(tmp_path: Path, source: str, target: str) -> None:
    """JPEG and WebP carry EXIF ImageDescription (UTF-8), Software and DateTime (UTC)."""
    final, _ = finish_image(saved(tmp_path, source), output_format=target, provenance=PROVENANCE)
    with Image.open(final) as im:
        exif = im.getexif()
    assert exif[0x010E].encode("latin-1").decode() == PROMPT  # Pillow reads EXIF text as Latin-1
    assert exif[0x0131] == f"nano-banana-mcp {__version__}"
    assert exif[0x0132] == "2025:06:01 12:34:56"
    assert exif.get_ifd(0x8769)[0x9010] == "+00:00"


def test_a_gif_keeps_its_format_and_gets_a_comment(tmp_path: Path) -> None:
    """A GIF stays a GIF: its comment is the description, and its XMP (read by read_provenance) says the rest."""
    final, _ = finish_image(saved(tmp_path, "gif"), output_format=None, provenance=PROVENANCE)
    with Image.open(final) as im:
        assert im.format == "GIF"
        assert im.info["comment"].decode() == PROMPT
    assert read_provenance(final)["digital_source_type"] == AI_GENERATED


@pytest.mark.parametrize("target", [None, "jpeg", "webp"])
@pytest.mark.parametrize("source", ["png", "gif"])
def test_offline_placeholders_say_so(tmp_path: Path, source: str, target: str | None) -> None:
    """A placeholder's description starts with the label, and it is never typed as AI-generated media."""
    offline = Provenance(prompt="a cat", model="nano-banana-2", task_id="t1", created_at=WHEN, offline=True)
    final, _ = finish_image(saved(tmp_path, source), output_format=target, provenance=offline)
    found = read_provenance(final)
    assert found["description"].startswith("OFFLINE PLACEHOLDER (not a generated image)")
    assert found["digital_source_type"] == PLACEHOLDER
    assert found["prompt"] == "a cat"
    assert b"trainedAlgorithmicMedia" not in final.read_bytes()


def test_the_emulators_own_text_is_replaced(tmp_path: Path) -> None:
    """An emulator placeholder's own Description and Software chunks give way to ours: one of each."""
    path = tmp_path / "placeholder.png"
    path.write_bytes(
        render_placeholder(model="nano-banana-2", prompt="a cat", aspect_ratio="1:1", resolution=None, seed="s")
    )
    offline = Provenance(prompt="a cat", model="nano-banana-2", task_id="t1", created_at=WHEN, offline=True)
    final, _ = finish_image(path, output_format=None, provenance=offline)
    data = final.read_bytes()
    assert data.count(b"Description\0") == 1
    assert data.count(b"Software\0") == 1
    with Image.open(final) as im:
        assert isinstance(im, PngImageFile)
        assert im.text["Description"].startswith("OFFLINE PLACEHOLDER (not a generated image)")


@pytest.mark.parametrize("source", SOURCES)
def test_finishing_twice_leaves_one_record(tmp_path: Path, source: str) -> None:
    """A file finished again (a resumed task) holds only the latest provenance, once."""
    path = saved(tmp_path, source)
    final, _ = finish_image(path, output_format=None, provenance=PROVENANCE)
    later = Provenance(prompt="second", model="nano-banana-1", task_id="task_2", created_at=WHEN)
    final, _ = finish_image(final, output_format=None, provenance=later)
    assert read_provenance(final)["prompt"] == "second"
    data = final.read_bytes()
    assert data.count(b"<x:xmpmeta") == 1
    assert data.count(f"nano-banana-mcp {__version__}".encode()) == (1 if source == "gif" else 2)  # XMP, text/EXIF


def test_characters_xml_cannot_hold_are_left_out(tmp_path: Path) -> None:
    """NUL, other control characters and lone surrogates are dropped; the rest of the prompt is kept."""
    odd = Provenance(prompt="a\x00b\x07c\ud800d\x1be", model="m", task_id="t", created_at=WHEN)
    final, _ = finish_image(saved(tmp_path, "jpeg"), output_format=None, provenance=odd)
    assert read_provenance(final)["prompt"] == "abcde"


def test_a_long_prompt_is_capped(tmp_path: Path) -> None:
    """At most 4,000 characters of a prompt are stored, the cut marked with an ellipsis."""
    long = Provenance(prompt="ab" * 5_000, model="m", task_id="t", created_at=WHEN)
    final, _ = finish_image(saved(tmp_path, "jpeg"), output_format=None, provenance=long)
    prompt = read_provenance(final)["prompt"]
    assert len(prompt) == 4_000
    assert prompt.endswith("…")
    assert prompt.startswith("abab")


def test_the_time_is_stored_in_utc() -> None:
    """A creation time in another zone is stored as UTC; one without a zone is refused."""
    cest = Provenance(
        prompt="p",
        model="m",
        task_id="t",
        created_at=datetime(2025, 6, 1, 14, 34, 56, tzinfo=timezone(timedelta(hours=2))),
    )
    assert cest.fields()["created_at"] == "2025-06-01T12:34:56Z"
    with pytest.raises(ValueError, match="time zone"):
        Provenance(prompt="p", model="m", task_id="t", created_at=datetime(2025, 6, 1))


@pytest.mark.parametrize("wrong", ["gif", "jpg", "PNG", ""])
def test_an_unknown_output_format_is_refused(tmp_path: Path, wrong: str) -> None:
    """An output format outside png, jpeg, webp is refused naming those, and the file is left alone."""
    path = saved(tmp_path, "png")
    before = path.read_bytes()
    with pytest.raises(ValueError, match="png, jpeg, webp"):
        finish_image(path, output_format=wrong, provenance=PROVENANCE)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_failed_rewrite_leaves_no_temporary_file(tmp_path: Path) -> None:
    """When the rename fails (a folder is in the way), the temporary file is removed and the original kept."""
    path = saved(tmp_path, "png")
    before = path.read_bytes()
    (tmp_path / path.with_suffix(".jpg").name).mkdir()
    with pytest.raises(OSError):
        finish_image(path, output_format="jpeg", provenance=PROVENANCE)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".jpg").name])


def test_a_link_at_the_temporary_name_is_never_written_through(tmp_path: Path) -> None:
    """A link left where the temporary file goes is removed, not followed: nothing is written outside the folder."""
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    folder = tmp_path / "out"
    folder.mkdir()
    path = saved(folder, "png")
    (folder / f".{path.name}.tmp").symlink_to(outside)
    final, _ = finish_image(path, output_format=None, provenance=PROVENANCE)
    assert outside.read_text() == "keep me"
    assert [p.name for p in folder.iterdir()] == [final.name]


def test_a_conversion_never_decodes_past_the_pixel_cap(tmp_path: Path, undecodable_png: MakeUndecodablePng) -> None:
    """Converting an image over the cap is refused from its header; keeping its format needs no decode at all (its
    pixel data cannot be decoded: a decode would fail with another error)."""
    side = int(MAX_PIXELS**0.5) + 100
    big = undecodable_png(tmp_path / "big.png", (side, side))
    with pytest.raises(ValueError, match="pixels"):
        finish_image(big, output_format="jpeg", provenance=PROVENANCE)
    final, meta = finish_image(big, output_format=None, provenance=PROVENANCE)
    assert (meta.width, meta.height) == (side, side)
    assert read_provenance(final)["prompt"] == PROMPT
