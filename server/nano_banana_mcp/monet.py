"""Async client for the Monet AI task API: one method per endpoint, every retry in ``_send``.

The client never makes up an idempotency key: the caller owns it (the service makes one per logical
request before anything is sent) and every retry of that request carries the same key.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import DEFAULT_DOWNLOAD_HOSTS, is_loopback
from nano_banana_mcp.errors import (
    OFFLINE_HINT,
    AuthError,
    DownloadError,
    MalformedResponse,
    MonetConnectionError,
    MonetError,
    NotFound,
    RateLimited,
    ServerError,
)

__all__ = [
    "TERMINAL_STATUSES",
    "Downloaded",
    "MonetClient",
    "RetryPolicy",
    "Task",
    "TaskOutput",
    "TaskPage",
    "UploadedFile",
]

log = logging.getLogger(__name__)
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MAX_REDIRECTS = 5
_MALFORMED_RETRIES = 2
_M = TypeVar("_M", bound=BaseModel)

API_PREFIX = "/api/v1"
TERMINAL_STATUSES = frozenset({"success", "failed"})
_MAX_MESSAGE = 500


class _Lenient(BaseModel):
    """API objects: unknown fields are kept, so a newer API does not break us."""

    model_config = ConfigDict(extra="allow")


class TaskOutput(_Lenient):
    model: str | None = None
    status: str | None = None
    progress: float | None = None
    url: str | None = None
    error: Any = None


class Task(_Lenient):
    id: str
    status: str = "pending"
    type: str | None = None
    outputs: list[TaskOutput] = Field(default_factory=list)
    error: Any = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def progress(self) -> float | None:
        """Mean progress of the outputs in percent, if the API reported any."""
        values = [o.progress for o in self.outputs if o.progress is not None]
        if self.status == "success":
            return 100.0
        return sum(values) / len(values) if values else None

    @property
    def urls(self) -> list[str]:
        return [o.url for o in self.outputs if o.url]

    def error_message(self) -> str | None:
        """The failure reason, from the task or its outputs, as plain text."""
        for err in (self.error, *(o.error for o in self.outputs)):
            if text := _error_text(err):
                return text
        return None


class TaskPage(_Lenient):
    tasks: list[Task] = Field(default_factory=list)
    page: int = 1
    page_size: int = Field(default=20, alias="pageSize")
    total: int = 0


class UploadedFile(_Lenient):
    id: str | None = None
    url: str
    filename: str | None = None
    size: int | None = None
    content_type: str | None = None
    created_at: str | None = None


@dataclass(frozen=True, slots=True)
class Downloaded:
    path: Path
    size: int
    content_type: str | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based); ``None`` means do not retry.

        A server's ``Retry-After`` wins while it is within ``max_retry_after``; a longer one is
        a refusal, reported to the user rather than slept through.
        """
        if attempt >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if 0 <= retry_after <= self.max_retry_after else None
        backoff = min(self.base_delay * 2.0**attempt, self.max_delay)
        return backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not cryptography


def _error_text(err: Any) -> str | None:
    if err is None or err == "":
        return None
    if isinstance(err, str):
        return err[:_MAX_MESSAGE]
    if isinstance(err, dict):
        message = err.get("message") or err.get("detail") or err.get("error")
        code = err.get("code")
        if isinstance(message, dict | list):
            message = _error_text(message)
        if message and code:
            return f"{code}: {message}"[:_MAX_MESSAGE]
        if message or code:
            return str(message or code)[:_MAX_MESSAGE]
    return json.dumps(err, default=str)[:_MAX_MESSAGE]


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import datetime as dt  # noqa: PLC0415

        when = parsedate_to_datetime(value)
        return max(0.0, (when - dt.datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None


def _body(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("text/html"):
        return "an HTML error page (from a proxy or gateway, not the API)"
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:_MAX_MESSAGE] if response.text else None


def _code_and_message(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            code, message = inner.get("code"), inner.get("message")
        else:
            code, message = body.get("code"), body.get("message") or body.get("detail") or inner
        return (str(code) if code else None, _error_text(message))
    if isinstance(body, str) and body.strip():
        return None, body.strip()[:_MAX_MESSAGE]
    return None, None


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _origin(url: httpx.URL) -> str:
    """Scheme and host only: query strings of signed URLs are not repeated in messages."""
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


async def _read_capped(response: httpx.Response, limit: int) -> bytes:
    """The whole body, or MonetError once it passes ``limit`` bytes (nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MalformedResponse(
                f"The Monet API sent an answer over {limit / 1e6:.0f} MB (HTTP {response.status_code}); "
                "it was not read.",
                status_code=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def _sse_data(response: httpx.Response, limit: int) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event, refusing any line or event over ``limit`` characters."""
    pending = ""
    data: list[str] = []
    size = 0
    async for text in response.aiter_text():
        pending += text
        *lines, pending = _LINE_BREAK.split(pending)
        if len(pending) > limit:
            raise MonetError(f"The Monet API sent a stream event over {limit / 1e6:.0f} MB; it was not read.")
        for line in lines:
            if not line:
                if data:
                    yield "\n".join(data)
                data, size = [], 0
            elif line.startswith("data:"):
                value = line[6:] if line.startswith("data: ") else line[5:]
                size += len(value)
                if size > limit:
                    raise MonetError(f"The Monet API sent a stream event over {limit / 1e6:.0f} MB.")
                data.append(value)
    if data:
        yield "\n".join(data)


def _range_start(response: httpx.Response) -> int | None:
    """The first byte of a 206 answer, from ``Content-Range: bytes START-END/TOTAL``."""
    unit, _, spec = response.headers.get("content-range", "").partition(" ")
    start = spec.partition("-")[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _should_retry(status: int) -> bool:
    return status in (408, 409, 425, 429) or status >= 500


class MonetClient:
    """The Monet API over one shared ``httpx.AsyncClient``."""

    def __init__(
        self,
        http: httpx.AsyncClient | Callable[[], httpx.AsyncClient],
        *,
        base_url: str,
        api_key: SecretStr,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        download_hosts: Sequence[str] = (),
        max_response_bytes: int = 8 * 1024 * 1024,
        stream_stall: float = 120.0,
    ) -> None:
        # A factory defers building the client (its TLS context costs ~30 ms) to the first request,
        # keeping it off the server's start-up path.
        self._client = http if isinstance(http, httpx.AsyncClient) else None
        self._factory = None if isinstance(http, httpx.AsyncClient) else http
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        api_host = (httpx.URL(self._base).host or "").lower()
        allowed = [api_host, *DEFAULT_DOWNLOAD_HOSTS, *download_hosts]
        self._download_hosts = tuple(dict.fromkeys(h.lower() for h in allowed))
        self._max_response = max_response_bytes
        self._stall = stream_stall

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            assert self._factory is not None
            self._client = self._factory()
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if one was built (a client passed in belongs to its owner)."""
        if self._factory is not None and self._client is not None:
            await self._client.aclose()

    def __repr__(self) -> str:
        return f"MonetClient(base_url={self._base!r})"

    @property
    def base_url(self) -> str:
        return self._base

    # -- endpoints ---------------------------------------------------------------------------

    async def create_task(self, request: GenerateRequest, idempotency_key: str) -> Task:
        """``POST /tasks/async``: create the task (once, whatever the retries) and return its handle."""
        body = _create_body(request, idempotency_key)
        for attempt in range(_MALFORMED_RETRIES + 1):
            try:
                return self._parse(Task, await self._send("POST", "/tasks/async", json=body))
            except MalformedResponse as err:
                # The task may exist now; asking again with the same key returns it rather than a new one.
                if attempt == _MALFORMED_RETRIES:
                    raise
                log.info("unreadable create answer (%s); asking again with the same key", err)
        raise AssertionError("unreachable")

    async def follow_stream(
        self,
        request: GenerateRequest,
        idempotency_key: str,
        on_update: Callable[[Task], Awaitable[None]],
    ) -> Task:
        """``POST /tasks/sync`` with the task's own key: stream its progress until it ends.

        The same key makes the API attach to the task it already created rather than make a new
        one. Returns the final task; raises ``MonetError`` if the stream fails, ends early, sends an
        oversized event, or reports no change for ``stream_stall`` seconds; the caller then polls.
        """
        last: Task | None = None
        changed_at = time.monotonic()
        timeout = httpx.Timeout(self._timeout, read=self._stall)
        headers = self._headers() | {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        body = _create_body(request, idempotency_key)
        try:
            async with self._http.stream(
                "POST", self._url("/tasks/sync"), json=body, headers=headers, timeout=timeout
            ) as response:
                if not response.is_success:
                    raise self._status_error(await self._buffered(response))
                kind = response.headers.get("content-type", "").partition(";")[0].strip()
                if kind != "text/event-stream":
                    raise MonetError(f"The Monet API answered the stream request with {kind or 'no content type'}.")
                events = _sse_data(response, self._max_response)
                async with aclosing(events):
                    async for data in events:
                        task = self._event_task(data, last)
                        if task is None:
                            continue
                        if last is None or (task.status, task.progress) != (last.status, last.progress):
                            changed_at = time.monotonic()
                        elif time.monotonic() - changed_at > self._stall:
                            raise MonetConnectionError(f"The progress stream reported no change for {self._stall:g}s.")
                        last = task
                        await on_update(task)
                        if task.is_terminal:
                            return task
        except httpx.HTTPError as err:
            raise MonetConnectionError(f"The progress stream from Monet broke ({type(err).__name__}).") from err
        raise MonetConnectionError("The progress stream from Monet ended before the task finished.")

    async def get_task(self, task_id: str) -> Task:
        """``GET /tasks/{id}``."""
        response = await self._send("GET", f"/tasks/{_path_segment(task_id)}")
        return self._parse(Task, response)

    async def list_tasks(self, page: int = 1, page_size: int = 20) -> TaskPage:
        """``GET /tasks/list``, newest first."""
        response = await self._send("GET", "/tasks/list", params={"page": page, "pageSize": page_size})
        return self._parse(TaskPage, response)

    async def upload_file(self, data: bytes, filename: str, content_type: str) -> UploadedFile:
        """``POST /files``: upload bytes, get the URL that goes into ``images`` (kept 24 hours)."""
        response = await self._send("POST", "/files", files={"file": (filename, data, content_type)})
        return self._parse(UploadedFile, response)

    async def download(
        self, url: str, dest: Path, *, max_bytes: int, check: Callable[[Path], None] | None = None
    ) -> Downloaded:
        """Stream ``url`` into ``dest`` atomically: a ``.part`` file beside it, checked, then renamed.

        A download that breaks off is resumed where it stopped (HTTP Range) when the server allows it,
        and started over otherwise; ``check`` (run in a thread) vets the complete file before the rename.
        Downloads go to file hosts, so they never carry the API key.
        """
        tmp = dest.with_name(f".{dest.name}.part")
        await anyio.Path(tmp).unlink(missing_ok=True)  # a part file of unknown origin is never resumed
        attempt = 0
        validator: dict[str, str] = {}  # the first answer's ETag: a resume must be of the same file
        while True:
            try:
                size, content_type = await self._download_once(url, tmp, max_bytes, validator)
                break
            except (MonetConnectionError, ServerError, RateLimited) as err:
                retry_after = err.retry_after if isinstance(err, RateLimited) else None
                delay = self._retry.delay(attempt, retry_after)
                if delay is None:
                    raise DownloadError(
                        f"Could not download the finished image after {attempt + 1} attempts: {err}"
                    ) from err
                log.info("download failed (%s); resuming in %.2fs", err, delay)
                await anyio.sleep(delay)
                attempt += 1
            except DownloadError:
                await anyio.Path(tmp).unlink(missing_ok=True)
                raise
        try:
            if check is not None:
                await anyio.to_thread.run_sync(check, tmp)
            await anyio.Path(tmp).replace(dest)
        finally:
            await anyio.Path(tmp).unlink(missing_ok=True)
        return Downloaded(path=dest, size=size, content_type=content_type)

    # -- internals ---------------------------------------------------------------------------

    async def _download_once(
        self, url: str, tmp: Path, max_bytes: int, validator: dict[str, str]
    ) -> tuple[int, str | None]:
        """One attempt, appending to what an earlier attempt left in ``tmp``. Returns (size, content type).

        A resume asks for the rest only ``If-Range`` the file is unchanged (same ETag); otherwise the
        server sends it whole and the part file is started over.
        """
        have = (await anyio.Path(tmp).stat()).st_size if await anyio.Path(tmp).exists() else 0
        headers = {"Range": f"bytes={have}-", "If-Range": validator["etag"]} if have and "etag" in validator else {}
        try:
            async with self._open_download(url, headers) as response:
                if "etag" not in validator and (etag := response.headers.get("etag")):
                    validator["etag"] = etag
                if response.status_code == 416 and have:
                    await anyio.Path(tmp).unlink(missing_ok=True)  # stale part file: start over next time
                    raise MonetConnectionError("The partial download no longer matches; starting over.")
                if not response.is_success:
                    raise self._status_error(await self._buffered(response))
                resumed = bool(headers) and response.status_code == 206 and _range_start(response) == have
                size = have if resumed else 0
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and size + int(declared) > max_bytes:
                    raise DownloadError(
                        f"The image is {size + int(declared):,} bytes, over the {max_bytes:,} byte limit."
                    )
                async with await anyio.open_file(tmp, "ab" if resumed else "wb") as out:
                    async for chunk in response.aiter_bytes():  # as it arrives, so a cut keeps what came
                        size += len(chunk)
                        if size > max_bytes:
                            raise DownloadError(f"The image is larger than the {max_bytes:,} byte limit.")
                        await out.write(chunk)
        except httpx.HTTPError as err:
            raise MonetConnectionError(f"The download broke off ({type(err).__name__}).") from err
        return size, response.headers.get("content-type")

    @asynccontextmanager
    async def _open_download(self, url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
        """GET a file, following at most a few redirects, each checked against the download rules."""
        for _ in range(_MAX_REDIRECTS + 1):
            self._check_download_url(url)
            async with self._http.stream(
                "GET", url, headers=headers, timeout=self._timeout, follow_redirects=False
            ) as response:
                location = response.headers.get("location")
                if not (response.is_redirect and location):
                    yield response
                    return
                url = str(response.url.join(location))
        raise DownloadError(f"The image URL redirected more than {_MAX_REDIRECTS} times; not followed further.")

    async def _buffered(self, streamed: httpx.Response) -> httpx.Response:
        """A streamed response read into memory, at most ``max_response_bytes`` of it."""
        content = await _read_capped(streamed, self._max_response)
        return httpx.Response(streamed.status_code, headers=streamed.headers, content=content, request=streamed.request)

    def _check_download_url(self, url: str) -> None:
        """Images come only from allowed hosts over https (plain http only on this machine's loopback)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as err:
            raise DownloadError(f"The API gave an image URL that is not a valid URL ({err}).") from err
        host = (parsed.host or "").lower()
        loopback = is_loopback(host)
        if parsed.scheme != "https" and not (parsed.scheme == "http" and loopback):
            raise DownloadError(
                f"Refused to download from {_origin(parsed)}: images are fetched only over https "
                "(plain http only from this machine)."
            )
        if not any(_host_matches(host, pattern) for pattern in self._download_hosts):
            raise DownloadError(
                f"Refused to download from {_origin(parsed)}: the host is not on the download allowlist "
                f"({', '.join(self._download_hosts)}). Add it to NANO_BANANA_DOWNLOAD_HOSTS if you trust it."
            )

    def _url(self, path: str) -> str:
        return f"{self._base}{API_PREFIX}{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.get_secret_value()}", "Accept": "application/json"}

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """Send one logical request, retrying transient failures with capped, jittered backoff."""
        attempt = 0
        while True:
            retry_after: float | None = None
            try:
                async with self._http.stream(
                    method,
                    self._url(path),
                    json=json,
                    params=params,
                    files=files,
                    headers=self._headers(),
                    timeout=self._timeout,
                ) as streamed:
                    response = await self._buffered(streamed)
            except httpx.TimeoutException as err:
                error: MonetError = MonetConnectionError(
                    f"The Monet API at {self._base} did not answer within {self._timeout:g}s."
                )
                error.__cause__ = err
            except httpx.TransportError as err:
                error = MonetConnectionError(
                    f"Could not reach the Monet API at {self._base} ({type(err).__name__}). "
                    "Check the network connection and MONET_BASE_URL."
                )
                error.__cause__ = err
            else:
                if response.is_success:
                    return response
                error = self._status_error(response)
                if not _should_retry(response.status_code):
                    raise error
                if isinstance(error, RateLimited):
                    retry_after = error.retry_after
            delay = self._retry.delay(attempt, retry_after)
            if delay is None:
                if attempt:
                    error.args = (f"{error} (gave up after {attempt + 1} attempts)",)
                raise error
            log.info("%s %s failed (%s); retry %d in %.2fs", method, path, error, attempt + 1, delay)
            await anyio.sleep(delay)
            attempt += 1

    def _status_error(self, response: httpx.Response) -> MonetError:
        status = response.status_code
        body = _body(response)
        code, message = _code_and_message(body)
        detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
        kwargs: dict[str, Any] = {"status_code": status, "code": code, "body": body}
        if status in (401, 403):
            return AuthError(
                f"The Monet API refused the API key ({detail}). Check MONET_API_KEY or set a new key "
                f"from https://monet.vision. {OFFLINE_HINT}",
                **kwargs,
            )
        if status == 404:
            return NotFound(f"Not found on the Monet API ({detail}).", **kwargs)
        if status == 429:
            retry_after = _parse_retry_after(response.headers.get("retry-after"))
            wait = f" It asked to wait {retry_after:g}s." if retry_after is not None else ""
            return RateLimited(
                f"The Monet API is rate-limiting requests ({detail}).{wait} Wait a little and try again.",
                retry_after=retry_after,
                **kwargs,
            )
        if status >= 500:
            return ServerError(f"The Monet API failed on its side ({detail}). Try again in a minute.", **kwargs)
        return MonetError(f"The Monet API refused the request ({detail}).", **kwargs)

    def _parse(self, model: type[_M], response: httpx.Response) -> _M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as err:
            raise MalformedResponse(
                f"The Monet API sent an answer this client does not understand "
                f"(HTTP {response.status_code}, {len(response.content)} bytes, "
                f"{err.error_count()} problem(s) reading it as {model.__name__}).",
                status_code=response.status_code,
            ) from err

    @staticmethod
    def _event_task(data: str, last: Task | None) -> Task | None:
        """A stream event as a task; partial events are merged onto the previous one."""
        if not data.strip():
            return None
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            log.debug("ignoring a non-JSON stream event")
            return None
        if not isinstance(payload, dict):
            return None
        if last is not None:
            payload = last.model_dump(by_alias=True) | payload
        try:
            return Task.model_validate(payload)
        except ValidationError:
            log.debug("ignoring a stream event that is not a task")
            return None


def _create_body(request: GenerateRequest, idempotency_key: str) -> dict[str, Any]:
    return {"type": "image", "input": request.api_input(), "idempotency_key": idempotency_key}


def _path_segment(value: str) -> str:
    from urllib.parse import quote  # noqa: PLC0415

    return quote(value, safe="")
