"""What made an image, written into the file's own metadata and read back from it.

What :func:`stamped` writes (:func:`read_provenance` reads the XMP back; every format carries the same packet):

- XMP, all: dc:description (the prompt; a placeholder's starts with PLACEHOLDER_LABEL), xmp:CreatorTool
  ("nano-banana-mcp VERSION"), xmp:CreateDate (ISO 8601, UTC), photoshop:TransmissionReference (the task id, IPTC's
  "Job Id"), Iptc4xmpExt:DigitalSourceType (AI_GENERATED, or PLACEHOLDER_SOURCE for a placeholder),
  Iptc4xmpExt:AISystemUsed (the model), Iptc4xmpExt:AIPromptInformation (the prompt), and dc:source (the
  ``nano-banana://sets/{name}`` URIs of the reference sets used, space-separated; only when there are any).
- PNG: iTXt chunks (UTF-8, uncompressed) Description, Software, Creation Time (ISO 8601), Source (the model), and the
  XMP as the iTXt chunk XML:com.adobe.xmp; all before the image data.
- JPEG, WebP: EXIF ImageDescription (UTF-8, as ExifTool writes it), Software, DateTime (UTC, OffsetTime +00:00), and
  the XMP: APP1 segments after the JFIF header (JPEG); EXIF and XMP chunks announced in VP8X (WebP).
- GIF: a comment extension (the description) and the XMP application extension, before the first frame.

Each replaces whatever the API or an earlier run put in the same place (the same PNG keywords, EXIF, XMP, GIF
comments), so stamping a file twice leaves one record; everything else in the file is left as it was.
"""

from __future__ import annotations

import io
import re
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from nano_banana_mcp import __version__
from nano_banana_mcp.images.formats import open_image

__all__ = [
    "AI_GENERATED",
    "PLACEHOLDER_LABEL",
    "PLACEHOLDER_SOURCE",
    "PROMPT_MAX_CHARS",
    "Provenance",
    "read_provenance",
    "stamped",
]

PROMPT_MAX_CHARS = 4_000
"""The most characters of a prompt stored in a file; a longer one is cut and ends with an ellipsis."""
AI_GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
"""IPTC digital source type of media made by a trained model: every generated image."""
PLACEHOLDER_SOURCE = "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia"
"""IPTC digital source type of an offline placeholder: drawn by code from no training data (never AI_GENERATED)."""
PLACEHOLDER_LABEL = "OFFLINE PLACEHOLDER (not a generated image)"
"""How the description of an offline placeholder starts."""

_FIELD_MAX_CHARS = 200
_NOT_IN_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
"""Characters XML 1.0 cannot hold (NUL and other C0 controls, lone surrogates, non-characters): left out."""
_NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
}
_XMP_FIELDS = {  # what read_provenance returns -> the XMP property that holds it (the table above)
    "software": "xmp:CreatorTool",
    "created_at": "xmp:CreateDate",
    "task_id": "photoshop:TransmissionReference",
    "digital_source_type": "Iptc4xmpExt:DigitalSourceType",
    "model": "Iptc4xmpExt:AISystemUsed",
    "prompt": "Iptc4xmpExt:AIPromptInformation",
    "reference_sets": "dc:source",  # only when the request used a set
}
_PNG_KEYS = {"description": "Description", "software": "Software", "created_at": "Creation Time", "model": "Source"}
_PNG_XMP = "XML:com.adobe.xmp"
_JPEG_EXIF = b"Exif\x00\x00"
_JPEG_XMP = b"http://ns.adobe.com/xap/1.0/\x00"
_JPEG_XMP_EXTENDED = b"http://ns.adobe.com/xmp/extension/\x00"
_GIF_XMP = b"\x0bXMP DataXMP"
_GIF_XMP_TRAILER = bytes([1, *range(255, -1, -1), 0])
"""XMP spec part 3: after the raw packet, a "magic trailer" that any GIF reader walks as sub-blocks to their end."""


@dataclass(frozen=True, slots=True)
class Provenance:
    """What made an image, as :func:`stamped` writes it into the file. ``created_at`` must carry its time zone."""

    prompt: str
    model: str
    task_id: str
    created_at: datetime
    offline: bool = False
    """An emulator placeholder: labelled as such, and never typed as AI-generated media."""
    reference_sets: tuple[str, ...] = ()
    """The ``nano-banana://sets/{name}`` URIs the request's references came from."""

    def __post_init__(self) -> None:
        if self.created_at.utcoffset() is None:
            raise ValueError("Provenance.created_at needs a time zone (use datetime.now(UTC))")

    def fields(self) -> dict[str, str]:
        """What goes into the file, as :func:`read_provenance` reads it back: prompt, model, task_id, created_at
        (ISO 8601 UTC), software (this tool and its version), digital_source_type, description, and reference_sets
        (space-separated URIs) when there are any.

        Characters XML cannot hold are left out; the prompt is cut at :data:`PROMPT_MAX_CHARS`.
        """
        prompt = _storable(self.prompt, PROMPT_MAX_CHARS)
        sets = {"reference_sets": _storable(" ".join(self.reference_sets), 1_000)} if self.reference_sets else {}
        return sets | {
            "prompt": prompt,
            "model": _storable(self.model, _FIELD_MAX_CHARS),
            "task_id": _storable(self.task_id, _FIELD_MAX_CHARS),
            "created_at": self.created_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "software": f"nano-banana-mcp {__version__}",
            "digital_source_type": PLACEHOLDER_SOURCE if self.offline else AI_GENERATED,
            "description": f"{PLACEHOLDER_LABEL} from the nano-banana-mcp emulator. Prompt: {prompt}"
            if self.offline
            else prompt,
        }


def _storable(text: str, limit: int) -> str:
    text = _NOT_IN_XML.sub("", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def stamped(kind: str, data: bytes, fields: dict[str, str], *, size: tuple[int, int], alpha: bool) -> bytes:
    """``data`` (a whole image of Pillow's format ``kind``) with ``fields`` written into its container, replacing what
    an earlier run wrote. ``size`` and ``alpha`` describe the image (a simple WebP gets a header announcing them).

    ValueError or IndexError when the container cannot be read."""
    xmp = _xmp(fields)
    if kind == "PNG":
        return _png_with(data, fields, xmp)
    if kind == "GIF":
        return _gif_with(data, fields["description"].encode(), xmp)
    exif = _exif(fields)
    if kind == "JPEG":
        return _jpeg_with(data, exif, xmp)
    return _webp_with(data, exif.removeprefix(_JPEG_EXIF), xmp, size=size, alpha=alpha)


def _xmp(fields: dict[str, str]) -> bytes:
    """An XMP packet of ``fields``; every value escaped as XML text (a carriage return as a character reference)."""

    def text(value: str) -> str:
        return escape(value, {"\r": "&#13;"})

    description = text(fields["description"])
    properties = "".join(
        f"\n   <{name}>{text(fields[key])}</{name}>" for key, name in _XMP_FIELDS.items() if key in fields
    )
    namespaces = "".join(f'\n    xmlns:{prefix}="{uri}"' for prefix, uri in _NS.items() if prefix not in ("x", "rdf"))
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        f'<x:xmpmeta xmlns:x="{_NS["x"]}">\n'
        f' <rdf:RDF xmlns:rdf="{_NS["rdf"]}">\n'
        f'  <rdf:Description rdf:about=""{namespaces}>\n'
        f'   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>'
        f"{properties}\n"
        "  </rdf:Description>\n"
        " </rdf:RDF>\n"
        "</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    ).encode()


def _exif(fields: dict[str, str]) -> bytes:
    """An EXIF block as JPEG holds it: ImageDescription (UTF-8, as ExifTool writes it), Software, DateTime (UTC,
    with OffsetTime +00:00)."""
    from PIL import Image  # noqa: PLC0415

    created = datetime.fromisoformat(fields["created_at"])
    exif = Image.Exif()
    exif[0x010E] = fields["description"].encode()  # ImageDescription; bytes are written as they are
    exif[0x0131] = fields["software"]  # Software
    exif[0x0132] = created.strftime("%Y:%m:%d %H:%M:%S")  # DateTime
    exif.get_ifd(0x8769)[0x9010] = "+00:00"  # Exif IFD: OffsetTime
    return exif.tobytes()


def _png_with(data: bytes, fields: dict[str, str], xmp: bytes) -> bytes:
    """The PNG with our iTXt chunks before its image data, in place of any text chunk under the same keywords."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    def itxt(keyword: str, value: str | bytes) -> bytes:  # uncompressed, no language: readable by anything
        text = value if isinstance(value, bytes) else value.encode()
        return chunk(b"iTXt", keyword.encode("latin-1") + b"\0\0\0\0\0" + text)

    ours = b"".join(itxt(keyword, fields[key]) for key, keyword in _PNG_KEYS.items()) + itxt(_PNG_XMP, xmp)
    replaced = {k.encode("latin-1") for k in (*_PNG_KEYS.values(), _PNG_XMP)}
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError("no PNG signature")
    out, pos, placed = [data[:8]], 8, False
    while True:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if end > len(data):
            raise ValueError(f"the {kind!r} chunk runs past the end")
        if not placed and kind in (b"IDAT", b"fcTL", b"IEND"):
            out.append(ours)
            placed = True
        if not (kind in (b"tEXt", b"zTXt", b"iTXt") and data[pos + 8 : end].split(b"\0", 1)[0] in replaced):
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            return b"".join(out)


def _jpeg_with(data: bytes, exif: bytes, xmp: bytes) -> bytes:
    """The JPEG with our EXIF and XMP segments after its SOI (and JFIF APP0), in place of any EXIF or XMP it had."""

    def app1(body: bytes) -> bytes:
        if len(body) > 65_533:
            raise ValueError("a metadata segment is over 64 KB")
        return b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body

    if not data.startswith(b"\xff\xd8"):
        raise ValueError("no JPEG start marker")
    head, kept, pos = [data[:2]], [], 2
    while True:
        if data[pos] != 0xFF:
            raise ValueError(f"no marker at byte {pos}")
        while data[pos] == 0xFF:  # fill bytes
            pos += 1
        start, marker = pos - 1, data[pos]
        if marker in (0xDA, 0xD9):  # start of scan (or an empty image): the rest is kept as it is
            rest = data[start:]
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 1
            kept.append(data[start:pos])
            continue
        end = pos + 1 + int.from_bytes(data[pos + 1 : pos + 3], "big")
        if end > len(data) or end < pos + 3:
            raise ValueError(f"the segment at byte {start} has a bad length")
        body = data[pos + 3 : end]
        if not (marker == 0xE1 and body.startswith((_JPEG_EXIF, _JPEG_XMP, _JPEG_XMP_EXTENDED))):
            (head if not kept and marker == 0xE0 and body.startswith(b"JFIF\0") else kept).append(data[start:end])
        pos = end
    return b"".join([*head, app1(exif), app1(_JPEG_XMP + xmp), *kept, rest])


def _webp_with(data: bytes, exif: bytes, xmp: bytes, *, size: tuple[int, int], alpha: bool) -> bytes:
    """The WebP with our EXIF and XMP chunks at its end (in place of any it had) and their flags set in VP8X;
    a simple WebP gets the VP8X header that announces them."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("no RIFF WEBP header")
    end_of_riff = min(len(data), 8 + int.from_bytes(data[4:8], "little"))
    chunks, pos = [], 12
    while pos + 8 <= end_of_riff:
        kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        end = pos + 8 + length
        if end > len(data):
            raise ValueError(f"the {kind!r} chunk runs past the end")
        if kind not in (b"EXIF", b"XMP "):
            chunks.append((kind, data[pos + 8 : end]))
        pos = end + (length & 1)
    if not chunks:
        raise ValueError("no image chunk")
    if chunks[0][0] == b"VP8X":
        header = chunks[0][1]
        chunks[0] = (b"VP8X", bytes([header[0] | 0x0C]) + header[1:])  # EXIF (0x08) and XMP (0x04) present
    else:
        flags = 0x0C | (0x10 if alpha else 0)
        width, height = size
        header = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
        chunks.insert(0, (b"VP8X", header))
    chunks += [(b"EXIF", exif), (b"XMP ", xmp)]
    body = b"WEBP" + b"".join(k + len(c).to_bytes(4, "little") + c + b"\0" * (len(c) & 1) for k, c in chunks)
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def _gif_blocks(data: bytes) -> tuple[int, list[tuple[int, int]]]:
    """Where a GIF's blocks start and end (after the header and global colour table), up to its trailer."""

    def sub_blocks(pos: int) -> int:
        while data[pos]:
            pos += 1 + data[pos]
        return pos + 1

    if data[:6] not in (b"GIF87a", b"GIF89a"):
        raise ValueError("no GIF header")
    pos = 13 + _colour_table(data[10])
    first, blocks = pos, []
    while data[pos] != 0x3B:
        start = pos
        if data[pos] == 0x21:  # extension: label, then sub-blocks
            pos = sub_blocks(pos + 2)
        elif data[pos] == 0x2C:  # image: descriptor, local colour table, LZW code size, sub-blocks
            pos = sub_blocks(pos + 11 + _colour_table(data[pos + 9]))
        else:
            raise ValueError(f"an unknown block at byte {pos}")
        if pos > len(data):
            raise ValueError("a block runs past the end")
        blocks.append((start, pos))
    return first, blocks


def _colour_table(flags: int) -> int:
    """The size of the colour table a GIF screen or image descriptor's packed ``flags`` announce."""
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _is_ours(data: bytes, start: int) -> bool:
    """A GIF block that :func:`stamped` writes (and so replaces): a comment, or XMP."""
    return data[start] == 0x21 and (data[start + 1] == 0xFE or data[start + 1 : start + 14] == b"\xff" + _GIF_XMP)


def _gif_with(data: bytes, comment: bytes, xmp: bytes) -> bytes:
    """The GIF (made 89a) with a comment (the description) and the XMP application extension before its first
    frame, in place of any comment or XMP it had. The frames are not touched."""
    first, blocks = _gif_blocks(data)
    kept = [data[start:end] for start, end in blocks if not _is_ours(data, start)]
    at = next((i for i, b in enumerate(kept) if b[:2] != b"\x21\xff"), len(kept))  # after NETSCAPE and the like
    note = b"".join(bytes([len(part)]) + part for part in (comment[i : i + 255] for i in range(0, len(comment), 255)))
    ours = b"\x21\xfe" + note + b"\0" + b"\x21\xff" + _GIF_XMP + xmp + _GIF_XMP_TRAILER
    return b"".join([b"GIF89a", data[6:first], *kept[:at], ours, *kept[at:], b"\x3b"])


def _gif_xmp(data: bytes) -> bytes | None:
    """The XMP packet of a GIF's XMP application extension, if it has one."""
    _, blocks = _gif_blocks(data)
    for start, end in blocks:
        if data[start : start + 14] == b"\x21\xff" + _GIF_XMP:
            packet = data[start + 14 : end]
            cut = packet.find(_GIF_XMP_TRAILER[:4])
            return packet[:cut] if cut >= 0 else None
    return None


def read_provenance(path: Path) -> dict[str, str]:
    """The provenance :func:`stamped` wrote, read from the file's XMP: prompt, model, task_id, created_at,
    software, digital_source_type, description (those present; empty when the file has no XMP).

    ValueError when the file is not an image of an allowed format; OSError when it cannot be read.
    """
    data = path.read_bytes()
    with open_image(io.BytesIO(data)) as im:
        packet: str | bytes | None = im.info.get("xmp")
        if packet is None and im.format == "GIF":  # Pillow does not read XMP from a GIF
            try:
                packet = _gif_xmp(data)
            except (IndexError, ValueError):
                packet = None
    return _parsed_xmp(packet) if packet else {}


def _parsed_xmp(packet: str | bytes) -> dict[str, str]:
    raw = packet.encode() if isinstance(packet, str) else packet
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:  # an XMP packet never has one: no entity is ever expanded
        return {}
    try:
        root = ElementTree.fromstring(raw)  # noqa: S314 - no DTD (checked above), so nothing for expat to expand
    except ElementTree.ParseError:
        return {}
    found: dict[str, str] = {}
    names = {"description": "dc:description", **_XMP_FIELDS}
    for description in root.iter(f"{{{_NS['rdf']}}}Description"):
        for key, name in names.items():
            prefix, local = name.split(":")
            tag = f"{{{_NS[prefix]}}}{local}"
            element = description.find(tag)
            if element is not None and key == "description":
                element = element.find(f".//{{{_NS['rdf']}}}li")
            value = description.get(tag) if element is None else element.text or ""
            if value is not None:
                found.setdefault(key, value)
    return found
