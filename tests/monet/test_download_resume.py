"""Resuming a cut download trusts only a 206 that starts where the part file ends.

The emulator answers byte ranges correctly; a file host (or proxy) that answers a range request with a 206 for
another range is an odd answer it does not produce, so this test swaps the transport (never the client)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from nano_banana_mcp.monet import Downloaded, Downloader, RetryPolicy

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 40  # 10,240 bytes
URL = "https://files.monet.vision/out/0.png"


class _Cut(httpx.AsyncByteStream):
    """Half the body, then a broken connection."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield BODY[: len(BODY) // 2]
        raise httpx.ReadError("connection reset")


def host(range_start: int) -> tuple[httpx.AsyncClient, list[str | None]]:
    """A file host that cuts the first answer and answers the resume with a 206 starting at ``range_start``."""
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("range"))
        if len(ranges) == 1:
            return httpx.Response(200, headers={"etag": '"v1"', "content-type": "image/png"}, stream=_Cut())
        if request.headers.get("range") is None:
            return httpx.Response(200, headers={"etag": '"v1"', "content-type": "image/png"}, content=BODY)
        part = BODY[range_start:]
        return httpx.Response(
            206,
            headers={"etag": '"v1"', "content-range": f"bytes {range_start}-{len(BODY) - 1}/{len(BODY)}"},
            content=part,
        )

    return httpx.AsyncClient(transport=httpx.MockTransport(handler)), ranges


async def fetch(http: httpx.AsyncClient, dest: Path) -> Downloaded:
    """Download URL to ``dest`` through ``http`` (tried up to 3 times, no waits), then close it."""
    downloader = Downloader(
        lambda: http,
        api_host="monet.vision",
        retry=RetryPolicy(attempts=3, wait_initial=0.0, wait_max=0.0),
        timeout=5,
        max_error_bytes=1000,
    )
    try:
        return await downloader.download(URL, dest, max_bytes=1_000_000)
    finally:
        await http.aclose()


@pytest.mark.parametrize("range_start", [0, 100], ids=["whole-file", "wrong-offset"])
async def test_a_206_for_another_range_starts_the_file_over(tmp_path: Path, range_start: int) -> None:
    """A resume answered with a range that does not start at the part file's end is never appended: the part file
    is dropped and the file downloaded again whole."""
    http, ranges = host(range_start)
    got = await fetch(http, tmp_path / "a.png")
    assert ranges == [None, f"bytes={len(BODY) // 2}-", None]
    assert got.path.read_bytes() == BODY


async def test_a_206_from_the_right_offset_is_appended(tmp_path: Path) -> None:
    """The allowed case: the resume starts where the part file ends, and the whole file results."""
    http, _ = host(len(BODY) // 2)
    got = await fetch(http, tmp_path / "a.png")
    assert got.path.read_bytes() == BODY
