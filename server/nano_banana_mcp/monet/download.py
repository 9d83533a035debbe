"""Downloading finished images: only from allowed hosts, streamed to a part file, resumed, checked, renamed."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread
import httpx

from nano_banana_mcp.config import DEFAULT_DOWNLOAD_HOSTS, is_loopback
from nano_banana_mcp.errors import DownloadError, HostNotAllowed, MonetConnectionError, MonetError, UnsavableImage
from nano_banana_mcp.monet.responses import Redactor, buffered, origin, status_error
from nano_banana_mcp.monet.retry import RetryPolicy

__all__ = ["Downloaded", "Downloader"]

log = logging.getLogger(__name__)

_MAX_REDIRECTS = 5


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    size: int
    content_type: str | None


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    unit, _, spec = response.headers.get("content-range", "").partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


class Downloader:
    """Fetches output files. Downloads go to file hosts, so they never carry the API key."""

    def __init__(
        self,
        http: Callable[[], httpx.AsyncClient],
        *,
        api_host: str,
        extra_hosts: Sequence[str] = (),
        retry: RetryPolicy,
        timeout: float,
        max_error_bytes: int,
        redact: Redactor | None = None,
    ) -> None:
        self._http = http
        allowed = [api_host, *DEFAULT_DOWNLOAD_HOSTS, *extra_hosts]
        self.allowed_hosts = tuple(dict.fromkeys(h.lower() for h in allowed if h))
        self._retry = retry.with_(retry_on=lambda err: isinstance(err, MonetConnectionError) or retry.retry_on(err))
        self._timeout = timeout
        self._max_error = max_error_bytes
        self._redact = redact or Redactor()

    def check_url(self, url: str) -> None:
        """Images come only from allowed hosts over https (plain http only on this machine's loopback)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as err:
            raise UnsavableImage(f"The API gave an image URL that is not a valid URL ({err}).") from err
        host = (parsed.host or "").lower()
        if parsed.scheme != "https" and not (parsed.scheme == "http" and is_loopback(host)):
            raise UnsavableImage(
                f"Refused to download from {origin(parsed)}: images are fetched only over https "
                "(plain http only from this machine)."
            )
        if not any(_host_matches(host, pattern) for pattern in self.allowed_hosts):
            raise HostNotAllowed(
                f"Refused to download from {origin(parsed)}: the host is not on the download allowlist "
                f"({', '.join(self.allowed_hosts)}). Add it to NANO_BANANA_DOWNLOAD_HOSTS if you trust it, and "
                "restart: the task and its URL are kept, and the image is saved then."
            )

    async def download(
        self, url: str, dest: Path, *, max_bytes: int, check: Callable[[Path], Path | None] | None = None
    ) -> Downloaded:
        """Stream ``url`` into ``dest`` atomically: a ``.part`` file beside it, checked, then renamed once.

        A download that breaks off is resumed where it stopped (HTTP Range, only while the ETag still
        matches) and started over otherwise; ``check`` (run in a thread) vets the complete file before
        the rename, and may finish it in place: the path it returns (in ``dest``'s folder) is the name the
        file is renamed to instead of ``dest``.
        """
        tmp = dest.with_name(f".{dest.name}.part")
        await anyio.Path(tmp).unlink(missing_ok=True)  # a part file of unknown origin is never resumed
        validator: dict[str, str] = {}  # the first answer's ETag: a resume must be of the same file
        try:
            size, content_type = await self._retry.run(self._attempt, url, tmp, max_bytes, validator)
        except DownloadError:
            await anyio.Path(tmp).unlink(missing_ok=True)
            raise
        except MonetError as err:
            await anyio.Path(tmp).unlink(missing_ok=True)
            raise DownloadError(f"Could not download the finished image: {err}") from err
        try:
            if check is not None:
                named = await anyio.to_thread.run_sync(check, tmp)
                dest = named or dest
            await anyio.Path(tmp).replace(dest)
        finally:
            await anyio.Path(tmp).unlink(missing_ok=True)
        return Downloaded(path=dest, size=size, content_type=content_type)

    async def _attempt(self, url: str, tmp: Path, max_bytes: int, validator: dict[str, str]) -> tuple[int, str | None]:
        """One try, appending to what an earlier try left in ``tmp``. Returns (size, content type)."""
        have = (await anyio.Path(tmp).stat()).st_size if await anyio.Path(tmp).exists() else 0
        headers = {"Range": f"bytes={have}-", "If-Range": validator["etag"]} if have and "etag" in validator else {}
        try:
            async with self._open(url, headers) as response:
                if "etag" not in validator and (etag := response.headers.get("etag")):
                    validator["etag"] = etag
                if response.status_code == 416 and have:
                    await anyio.Path(tmp).unlink(missing_ok=True)  # stale part file: start over next time
                    raise MonetConnectionError("The partial download no longer matches; starting over.")
                if not response.is_success:
                    raise status_error(await buffered(response, self._max_error, self._redact), origin(response.url))
                if response.status_code == 206 and (not headers or _range_start(response) != have):
                    await anyio.Path(tmp).unlink(missing_ok=True)  # a range we did not ask for: start over
                    raise MonetConnectionError("The file host answered with another part of the file; starting over.")
                resumed = bool(headers) and response.status_code == 206
                size = have if resumed else 0
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and size + int(declared) > max_bytes:
                    raise UnsavableImage(
                        f"The image is {size + int(declared):,} bytes, over the {max_bytes:,} byte limit."
                    )
                async with await anyio.open_file(tmp, "ab" if resumed else "wb") as out:
                    async for chunk in response.aiter_bytes():  # as it arrives, so a cut keeps what came
                        size += len(chunk)
                        if size > max_bytes:
                            raise UnsavableImage(f"The image is larger than the {max_bytes:,} byte limit.")
                        await out.write(chunk)
                return size, response.headers.get("content-type")
        except httpx.HTTPError as err:
            raise MonetConnectionError(f"The download broke off ({type(err).__name__}).") from err
        except httpx.InvalidURL as err:  # httpx builds the next request of a redirect even when it follows none
            raise UnsavableImage(_not_followed(err)) from err

    @asynccontextmanager
    async def _open(self, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        """GET a file, following at most a few redirects, each checked against the download rules."""
        for _ in range(_MAX_REDIRECTS + 1):
            self.check_url(url)
            async with self._http().stream(
                "GET", url, headers=headers, timeout=self._timeout, follow_redirects=False
            ) as response:
                location = response.headers.get("location")
                if not (response.is_redirect and location):
                    yield response
                    return
                try:
                    url = str(response.url.join(location))
                except httpx.InvalidURL as err:
                    raise UnsavableImage(_not_followed(err)) from err
        raise UnsavableImage(f"The image URL redirected more than {_MAX_REDIRECTS} times; not followed further.")


def _not_followed(err: httpx.InvalidURL) -> str:
    """Why a redirect to something that is no downloadable URL (a ``data:`` URL, say) ends the download for good."""
    log.debug("a redirect not followed: %s", err)
    return (
        "The image URL redirected to a data: URL or another address that is not an http(s) URL; such a redirect "
        "is never followed, so the image cannot be saved here (its URL is kept in the task)."
    )
