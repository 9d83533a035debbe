"""Downloading finished images from the emulator: atomic, resumed, capped, checked, and only from allowed hosts."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import DownloadError
from nano_banana_mcp.monet import Downloader, MonetClient, RetryPolicy

pytestmark = pytest.mark.anyio

REQUEST = GenerateRequest(prompt="a lighthouse at dusk", model="nano-banana-2", aspect_ratio="16:9", resolution="1K")
FAST = RetryPolicy(attempts=5, wait_initial=0.01, wait_max=0.05, max_retry_after=1.0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BIG = 50_000_000


@pytest.fixture
async def url(client: MonetClient, emulator: Emulator) -> str:
    """The output URL of a finished task."""
    emulator.task_seconds = 0
    task = await client.create_async(REQUEST, str(uuid.uuid4()))
    return (await client.get_task(task.id)).urls[0]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def downloads(emulator: Emulator) -> list[int]:
    """Statuses of the output downloads the emulator answered."""
    return [r.status for r in emulator.requests if r.path.startswith("/files/")]


async def test_download_streams_to_disk_atomically(client: MonetClient, url: str, out: Path) -> None:
    """A finished image lands complete at the destination, with its size and type, and no part file left over."""
    got = await client.download(url, out / "a.png", max_bytes=BIG)
    assert got.path == out / "a.png"
    assert got.path.read_bytes()[:8] == PNG_SIGNATURE
    assert got.size == got.path.stat().st_size
    assert got.content_type == "image/png"
    assert [p.name for p in out.iterdir()] == ["a.png"]


async def test_cut_download_is_resumed_where_it_stopped(
    client: MonetClient, emulator: Emulator, url: str, out: Path
) -> None:
    """A download that breaks off twice is resumed by byte range, and the file is whole."""
    emulator.faults.cut_downloads = 2
    got = await client.download(url, out / "a.png", max_bytes=BIG)
    async with httpx.AsyncClient() as plain:
        assert got.path.read_bytes() == (await plain.get(url)).content
    assert downloads(emulator)[:3] == [200, 206, 206]


async def test_persistent_cuts_give_up_with_a_download_error(
    client: MonetClient, emulator: Emulator, url: str, out: Path
) -> None:
    """A download that keeps breaking off ends in a DownloadError after the policy's tries; nothing is saved."""
    emulator.faults.cut_downloads = 100
    with pytest.raises(DownloadError, match="broke off"):
        await client.download(url, out / "a.png", max_bytes=BIG)
    assert len(downloads(emulator)) == FAST.attempts
    assert not (out / "a.png").exists()


async def test_a_failed_download_leaves_no_part_file(
    client: MonetClient, emulator: Emulator, url: str, out: Path
) -> None:
    """A download that gives up leaves nothing in the output folder, not even a hidden part file."""
    emulator.faults.cut_downloads = 100
    with pytest.raises(DownloadError):
        await client.download(url, out / "a.png", max_bytes=BIG)
    assert list(out.iterdir()) == []


async def test_oversized_download_is_refused(client: MonetClient, url: str, out: Path) -> None:
    """An image over the size cap is not saved, and nothing is left behind."""
    with pytest.raises(DownloadError, match="limit"):
        await client.download(url, out / "a.png", max_bytes=1000)
    assert list(out.iterdir()) == []


async def test_a_missing_file_is_not_retried(client: MonetClient, emulator: Emulator, url: str, out: Path) -> None:
    """A 404 for the image is reported at once as a DownloadError with the API's status."""
    gone = url.replace("/0.png", "/1.png")
    with pytest.raises(DownloadError, match="404"):
        await client.download(gone, out / "a.png", max_bytes=BIG)
    assert downloads(emulator) == [404]


async def test_a_file_the_check_refuses_is_not_kept(client: MonetClient, url: str, out: Path) -> None:
    """The check sees the complete file before it is renamed; when it refuses, nothing is kept."""
    seen: list[bytes] = []

    def refuse(path: Path) -> None:
        seen.append(path.read_bytes())
        raise DownloadError("not the image we wanted")

    with pytest.raises(DownloadError, match="not the image"):
        await client.download(url, out / "a.png", max_bytes=BIG, check=refuse)
    assert seen[0][:8] == PNG_SIGNATURE
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "message"),
    [("redirect_offsite", "allowlist"), ("redirect_loop", "redirected more than")],
)
async def test_bad_redirects_are_refused(
    client: MonetClient, emulator: Emulator, url: str, out: Path, kind: str, message: str
) -> None:
    """A redirect off the allowlist, or one that never ends, is refused; nothing is saved."""
    emulator.faults.hostile_kind = kind
    emulator.faults.hostile = 100
    with pytest.raises(DownloadError, match=message):
        await client.download(url, out / "a.png", max_bytes=BIG)
    assert list(out.iterdir()) == []


async def test_a_redirect_to_an_allowed_host_is_followed(
    client: MonetClient, emulator: Emulator, url: str, out: Path
) -> None:
    """A redirect that stays on an allowed host is followed and the image saved."""
    emulator.faults.hostile_kind = "redirect_loopback"
    emulator.faults.hostile = 1
    got = await client.download(url, out / "a.png", max_bytes=BIG)
    assert got.path.read_bytes()[:8] == PNG_SIGNATURE


# -- the allowlist ---------------------------------------------------------------------------------


def no_http() -> httpx.AsyncClient:
    raise AssertionError("checking a URL makes no request")


@pytest.fixture
def downloader() -> Downloader:
    """Files from monet.vision (and its subdomains) and one configured extra host."""
    return Downloader(
        no_http,
        api_host="api.monet.vision",
        extra_hosts=["cdn.example.com"],
        retry=FAST,
        timeout=5,
        max_error_bytes=1000,
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://monet.vision/a.png",
        "https://files.monet.vision/a.png",
        "https://api.monet.vision/a.png",
        "https://cdn.example.com/a.png",
    ],
)
def test_allowed_hosts_pass(downloader: Downloader, url: str) -> None:
    """Monet's hosts, the API's own host and configured hosts may be downloaded from over https."""
    downloader.check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://evil.example/a.png", "NANO_BANANA_DOWNLOAD_HOSTS"),
        ("https://monet.vision.evil.example/a.png", "allowlist"),
        ("https://evilmonet.vision/a.png", "allowlist"),
        ("https://sub.cdn.example.com/a.png", "allowlist"),
        ("http://files.monet.vision/a.png", "https"),
        ("ftp://files.monet.vision/a.png", "https"),
        ("http://127.0.0.1:8000/a.png", "allowlist"),
    ],
)
def test_other_hosts_and_schemes_are_refused(downloader: Downloader, url: str, message: str) -> None:
    """Any other host, a look-alike, or plain http off this machine is refused with what to do."""
    with pytest.raises(DownloadError, match=message):
        downloader.check_url(url)
