"""Image files: only allowed formats are ever decoded, never more than the pixel cap, and a reference is read
from the very file that was checked, whatever is swapped in meanwhile."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import io
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import ReferenceImageError
from nano_banana_mcp.images.decoding import DECODE_BUDGET, MAX_PIXELS, image_meta, thumbnail
from nano_banana_mcp.images.reading import check_reference

if TYPE_CHECKING:
    from tests.conftest import MakePng, MakeUndecodablePng, TextOf

pytestmark = pytest.mark.anyio

OTHER_FORMATS = ["eps", "bmp", "tif", "ico", "pcx", "tga"]
"""Formats Pillow can open that are never accepted: PostScript would run Ghostscript on the file."""
RACE_SECONDS = 0.5


def other_format(path: Path) -> Path:
    """A small image in the format its suffix names (Pillow writes EPS without Ghostscript)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), (200, 30, 30)).save(path)
    return path


# -- formats and pixels --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", OTHER_FORMATS)
def test_a_result_in_another_format_is_not_an_image(tmp_path: Path, suffix: str) -> None:
    """The result check opens PNG, JPEG, WebP and GIF only: BMP, TIFF, EPS and the rest are refused."""
    with pytest.raises(ValueError, match="not a PNG, JPEG, WebP, GIF or HEIC image"):
        image_meta(other_format(tmp_path / f"out.{suffix}"), verify=True)


@pytest.mark.parametrize("suffix", OTHER_FORMATS)
def test_a_preview_opens_only_allowed_formats(tmp_path: Path, suffix: str) -> None:
    """No preview is made of another format, so no other decoder (Ghostscript for EPS) ever runs."""
    with pytest.raises(ValueError, match="not a PNG, JPEG, WebP, GIF or HEIC image"):
        thumbnail(other_format(tmp_path / f"out.{suffix}"))


def test_a_preview_never_decodes_past_the_pixel_cap(tmp_path: Path, undecodable_png: MakeUndecodablePng) -> None:
    """A small file of too many pixels is refused from its header, before any pixel is decoded (its pixel data
    cannot be decoded at all: a decode would fail with another error)."""
    side = int(MAX_PIXELS**0.5) + 100
    big = undecodable_png(tmp_path / "big.png", (side, side))
    with pytest.raises(ValueError, match="pixels"):
        thumbnail(big)


def test_a_large_jpeg_is_previewed_at_a_reduced_scale(tmp_path: Path) -> None:
    """A JPEG over the cap is decoded at 1/8 scale for its preview, so it still gets one."""
    photo = tmp_path / "photo.jpg"
    Image.new("L", (8000, 6000), 128).save(photo)
    assert MAX_PIXELS < 8000 * 6000
    data, mime = thumbnail(photo)
    assert mime == "image/jpeg"
    assert data.startswith(b"\xff\xd8")


@pytest.mark.parametrize("mode", ["P", "1"])
def test_a_palette_image_is_previewed_as_smoothly_as_a_full_colour_one(tmp_path: Path, mode: str) -> None:
    """A palette or black-and-white PNG (the emulator's placeholders are palette PNGs) is shrunk for its preview with
    the same filter as any other: a black and white checkerboard of single pixels, halved, is an even grey, where
    picking every other pixel would leave it all black or all white."""
    board = Image.new("L", (1024, 1024))
    board.putdata([255 * ((x + y) % 2) for y in range(1024) for x in range(1024)])
    path = tmp_path / "board.png"
    board.convert(mode).save(path)
    data, _ = thumbnail(path)
    preview = Image.open(io.BytesIO(data)).convert("L")
    assert preview.size == (512, 512)
    greys = [grey for grey, count in enumerate(preview.histogram()) if count]
    assert 100 < greys[0] <= greys[-1] < 155, greys


# -- one decode budget for the process ----------------------------------------------------------


def _memory_mb(pid: int, field: str) -> float:
    """``VmHWM`` (peak) or ``VmRSS`` of a process, in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise AssertionError(f"no {field} for process {pid}")


def _child(command: str) -> int:
    """The server process this test spawned (a child of the test's process running ``command``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == os.getpid() and command.encode() in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    raise AssertionError("the server process was not found")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's peak memory from /proc")
@pytest.mark.slow  # a server process of its own
async def test_concurrent_calls_decode_within_one_process_wide_budget(
    command: str, process_env: dict[str, str], text_of: TextOf
) -> None:
    """Four calls at once, each with a data: URI of a small PNG that decodes to 159 MB: the server's peak memory grows
    by the one decode budget of the process (~320 MB), not by what each call or worker thread would keep (without the
    budget: ~630 MB; without giving freed pixels back: ~135 MB kept once the calls had answered; both measured). One
    image a call shows it as well as three did, for a third of the decoding."""
    side = 6300  # 6300 x 6300 x 4 bytes: 159 MB decoded, under the 40 MP cap
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (40, 90, 160)).save(buffer, "PNG", compress_level=9)
    uri = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    params = StdioServerParameters(command=command, args=[], env=process_env)
    async with Client(params, read_timeout_seconds=300) as client:
        pid = _child(command)
        start = _memory_mb(pid, "VmRSS")
        results = []

        async def call() -> None:
            arguments = {"prompt": "decode memory", "images": [uri], "wait_seconds": 0}
            results.append(await client.call_tool("generate_image", arguments))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(call)
        peak, kept = _memory_mb(pid, "VmHWM"), _memory_mb(pid, "VmRSS")
    assert not any(r.is_error for r in results), [text_of(r) for r in results]
    overhead = 60  # MB: the interpreter's own allocations while four calls are served (measured: ~25)
    assert peak - start <= DECODE_BUDGET / 1e6 + overhead, (start, peak, kept)
    assert kept - start <= 100, (start, peak, kept)  # freed pixels go back to the system


# -- references: the content is decoded -----------------------------------------------------------


@pytest.mark.parametrize("magic", [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff\xe0"], ids=["png", "gif", "jpeg"])
def test_image_magic_followed_by_text_is_not_a_reference(tmp_path: Path, magic: bytes) -> None:
    """The first bytes prove nothing: a reference must decode as an image."""
    fake = tmp_path / "notes.png"
    fake.write_bytes(magic + b"\n-----BEGIN OPENSSH PRIVATE KEY-----\n" + b"b3BlbnNzaC1rZXktdjEAAAAA\n" * 20)
    with pytest.raises(ReferenceImageError, match="checked by its content"):
        check_reference(fake, max_bytes=1_000_000, roots=[tmp_path])


@pytest.mark.parametrize("suffix", OTHER_FORMATS)
def test_a_reference_in_another_format_is_refused(tmp_path: Path, suffix: str) -> None:
    """References are opened with the same allowlist of formats as results."""
    with pytest.raises(ReferenceImageError, match="checked by its content"):
        check_reference(other_format(tmp_path / f"ref.{suffix}"), max_bytes=1_000_000, roots=[tmp_path])


async def test_text_behind_image_magic_is_never_uploaded(
    mcp_client: Client, tmp_path: Path, emulator: Emulator, text_of: TextOf
) -> None:
    """Through the tool: a key file that starts like a PNG is refused and nothing is uploaded."""
    fake = tmp_path / "key.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n-----BEGIN OPENSSH PRIVATE KEY-----\n")
    result = await mcp_client.call_tool("upload_reference", {"path": str(fake)})
    assert result.is_error
    assert "checked by its content" in text_of(result)
    assert emulator.uploads == 0


# -- references: what is read is what was checked -------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
needs_exchange = pytest.mark.skipif(_renameat2 is None, reason="atomic rename-exchange is Linux's renameat2")


def exchange(a: Path, b: Path) -> None:
    """Swap the two names in one step (renameat2 RENAME_EXCHANGE): the checked name is always something."""
    assert _renameat2 is not None
    if _renameat2(-100, os.fsencode(a), -100, os.fsencode(b), 2) != 0:  # AT_FDCWD, RENAME_EXCHANGE
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def race(a: Path, b: Path, check: Callable[[], None]) -> None:
    """Call ``check`` over and over for RACE_SECONDS while another thread swaps ``a`` and ``b`` as fast as it can."""
    stop = threading.Event()

    def swapping() -> None:
        while not stop.is_set():
            exchange(a, b)

    swapper = threading.Thread(target=swapping, daemon=True)
    swapper.start()
    try:
        deadline = time.monotonic() + RACE_SECONDS
        while time.monotonic() < deadline:
            check()
    finally:
        stop.set()
        swapper.join()


@needs_exchange
@pytest.mark.parametrize("swapped", ["file", "folder"])
def test_a_checked_path_swapped_for_a_link_is_never_read(tmp_path: Path, png: MakePng, swapped: str) -> None:
    """Swapping the file or its folder for a link into ~/.ssh between the check and the read never sends the secret."""
    secret = png(tmp_path / ".ssh" / "photo.png", (40, 40))
    photo = png(tmp_path / "pics" / "photo.png")
    link = tmp_path / "link"
    link.symlink_to(secret if swapped == "file" else secret.parent)
    read: list[bytes] = []

    def check() -> None:
        with contextlib.suppress(ReferenceImageError):
            read.append(check_reference(photo, max_bytes=1_000_000, roots=[tmp_path]).data)

    race(photo if swapped == "file" else photo.parent, link, check)
    assert secret.read_bytes() not in read


@needs_exchange
def test_a_file_swapped_for_a_fifo_is_refused_at_once(tmp_path: Path, png: MakePng) -> None:
    """A FIFO swapped in after the check is refused at once; no read blocks waiting for a writer."""
    photo = png(tmp_path / "pics" / "photo.png")
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    checks: list[None] = []

    def check() -> None:
        with contextlib.suppress(ReferenceImageError):
            check_reference(photo, max_bytes=1_000_000, roots=[tmp_path])
        checks.append(None)

    checker = threading.Thread(target=race, args=(photo, fifo, check), daemon=True)
    checker.start()
    checker.join(timeout=RACE_SECONDS + 60)  # only against a hang: a read that opened the FIFO waits for ever
    blocked = checker.is_alive()
    for name in (photo, fifo) if blocked else ():  # a read is stuck opening the FIFO: a writer releases it
        if stat.S_ISFIFO(name.stat().st_mode):
            os.close(os.open(name, os.O_WRONLY | os.O_NONBLOCK))
    checker.join()
    assert not blocked, "a reference check blocked on a FIFO"
    assert checks, "no check ran"


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    """A FIFO in an allowed folder is refused as not a regular file, without waiting for a writer."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ReferenceImageError, match="not a regular file"):
        check_reference(fifo, max_bytes=1000, roots=[tmp_path])
