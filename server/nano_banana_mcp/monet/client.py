"""Async client for the Monet AI task API: one method per endpoint, retries by the one policy.

The client never makes up an idempotency key: the caller owns it (the ledger records one per logical
request before anything is sent) and every retry of that request carries the same key, to the same
endpoint, with the same body. That is all the API documents about idempotency, so it is all we rely on.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

# httpcore imports sniffio on every request (httpcore/_synchronization.py, 1.0); when it is not installed (anyio no
# longer needs it), each failed import searches sys.path anew, which stalled the event loop and cost the runner
# ~40% of its CPU following 1,000 tasks (bench/tasks_poll.py). None in sys.modules fails the import at once (the
# documented meaning of None there), so httpcore takes asyncio as before, only without the search.
if importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import MalformedResponse, MonetConnectionError, MonetError
from nano_banana_mcp.monet.download import Downloaded, Downloader
from nano_banana_mcp.monet.events import StreamEvent, read_event
from nano_banana_mcp.monet.models import API_PREFIX, Task, TaskPage, UploadedFile, create_body
from nano_banana_mcp.monet.responses import Redactor, buffered, status_error
from nano_banana_mcp.monet.retry import RetryPolicy
from nano_banana_mcp.monet.sse import sse_data

__all__ = ["CreateStream", "CreateWindow", "MonetClient"]

log = logging.getLogger(__name__)
_M = TypeVar("_M", bound=BaseModel)


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
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self._redact = Redactor(api_key.get_secret_value())
        self.retry = retry or RetryPolicy()
        self._timeout = timeout
        self._max_response = max_response_bytes
        self._stall = stream_stall
        self.downloads = Downloader(
            self._http,
            api_host=(httpx.URL(self.base_url).host or "").lower(),
            extra_hosts=download_hosts,
            retry=self.retry,
            redact=self._redact,
            timeout=timeout,
            max_error_bytes=max_response_bytes,
        )

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
        return f"MonetClient(base_url={self.base_url!r})"

    # -- endpoints ---------------------------------------------------------------------------

    async def create_async(self, request: GenerateRequest, idempotency_key: str) -> Task:
        """``POST /tasks/async``: create the task (once, whatever the retries) and return its handle.

        An unreadable answer is asked again with the same key, which returns the task rather than a new one.
        """
        body = create_body(request, idempotency_key)
        return await self.retry.run(self._request, Task, "POST", "/tasks/async", json=body)

    @asynccontextmanager
    async def create_stream(self, request: GenerateRequest, idempotency_key: str) -> AsyncIterator[CreateStream]:
        """``POST /tasks/sync``: create the task and follow its progress events (one try, no retry here).

        Yields a :class:`CreateStream` once the API has answered with a stream (so it took the create): when the task
        was made (the create window) and its events, each read as leniently as possible
        (:func:`~nano_banana_mcp.monet.events.read_event`). The events end after a terminal one, named or not; they
        raise ``MonetError`` (``MonetConnectionError`` when the stream breaks, ends early, or reports no change for
        ``stream_stall`` seconds). Sending this same request again with the same key is the documented retry: it
        creates nothing new.
        """
        timeout = httpx.Timeout(self._timeout, read=self._stall)
        headers = self._headers() | {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        sent = dt.datetime.now(dt.UTC)
        try:
            async with self._http().stream(
                "POST",
                self._url("/tasks/sync"),
                json=create_body(request, idempotency_key),
                headers=headers,
                timeout=timeout,
            ) as response:
                if not response.is_success:
                    raise status_error(await buffered(response, self._max_response, self._redact), self.base_url)
                window = _create_window(sent, dt.datetime.now(dt.UTC), response.headers.get("date"))
                kind = response.headers.get("content-type", "").partition(";")[0].strip()
                if kind == "application/json":  # an API that answers the create at once: one task, no events
                    task = self._parse(Task, await buffered(response, self._max_response, self._redact))
                    yield CreateStream(window, _single(StreamEvent(task=task)))
                    return
                if kind != "text/event-stream":
                    raise MalformedResponse(
                        f"The Monet API answered the create with {kind or 'no content type'}, not an event stream."
                    )
                events = self._events(response)
                async with aclosing(events):
                    yield CreateStream(window, events)
        except httpx.HTTPError as err:
            raise _transport_error(err, "The progress stream from Monet broke", self.base_url) from err

    async def get_task(self, task_id: str) -> Task:
        """``GET /tasks/{id}``."""
        return await self.retry.run(self._request, Task, "GET", f"/tasks/{quote(task_id, safe='')}")

    async def list_tasks(self, page: int = 1, page_size: int = 20) -> TaskPage:
        """``GET /tasks/list``, newest first."""
        params = {"page": page, "pageSize": page_size}
        return await self.retry.run(self._request, TaskPage, "GET", "/tasks/list", params=params)

    async def upload_file(self, data: bytes, filename: str, content_type: str) -> UploadedFile:
        """``POST /files``: upload bytes, get the URL that goes into ``images`` (kept 24 hours)."""
        files = {"file": (filename, data, content_type)}
        return await self.retry.run(self._request, UploadedFile, "POST", "/files", files=files)

    async def download(
        self, url: str, dest: Path, *, max_bytes: int, check: Callable[[Path], Path | None] | None = None
    ) -> Downloaded:
        """Save an output image to ``dest`` (see :meth:`Downloader.download`)."""
        return await self.downloads.download(url, dest, max_bytes=max_bytes, check=check)

    # -- internals ---------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}{API_PREFIX}{path}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key.get_secret_value()}", "Accept": "application/json"}

    async def _request(
        self,
        model: type[_M],
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        files: dict[str, Any] | None = None,
    ) -> _M:
        """One try of one request: the answer read (size-capped) and parsed, or the error it amounts to."""
        try:
            async with self._http().stream(
                method,
                self._url(path),
                json=json,
                params=params,
                files=files,
                headers=self._headers(),
                timeout=self._timeout,
            ) as streamed:
                response = await buffered(streamed, self._max_response, self._redact)
        except httpx.HTTPError as err:
            raise _transport_error(err, f"{method} {path} failed", self.base_url) from err
        if not response.is_success:
            raise status_error(response, self.base_url)
        return self._parse(model, response)

    @staticmethod
    def _parse(model: type[_M], response: httpx.Response) -> _M:
        try:
            return model.model_validate_json(response.content)
        except (ValidationError, RecursionError) as err:
            raise MalformedResponse(
                f"The Monet API sent an answer this client does not understand "
                f"(HTTP {response.status_code}, {len(response.content)} bytes, not a {model.__name__}).",
                status_code=response.status_code,
            ) from err

    async def _events(self, response: httpx.Response) -> AsyncGenerator[StreamEvent, None]:
        """The stream's events, until a terminal one; MonetError if it ends early or stalls."""
        last: Task | None = None
        seen: tuple[object, ...] | None = None
        changed_at = time.monotonic()
        try:
            async for data in sse_data(response, self._max_response):
                event = read_event(self._redact.text(data), last)
                if event is None:
                    continue
                if event.signature != seen:
                    seen, changed_at = event.signature, time.monotonic()
                elif time.monotonic() - changed_at > self._stall:
                    raise MonetConnectionError(f"The progress stream reported no change for {self._stall:g}s.")
                last = event.task or last
                yield event
                if event.finished:
                    return
        except httpx.HTTPError as err:
            raise _transport_error(err, "The progress stream from Monet broke", self.base_url) from err
        raise MonetConnectionError("The progress stream from Monet ended before the task finished.")


@dataclass(frozen=True, slots=True)
class CreateWindow:
    """When the API made a task, on the API's own clock where its ``Date`` header tells it (else on ours, wider)."""

    earliest: dt.datetime
    latest: dt.datetime


@dataclass(frozen=True, slots=True)
class CreateStream:
    """A create the API took: when it was made, and the events of its progress stream."""

    window: CreateWindow
    events: AsyncIterator[StreamEvent]


CLOCK_SLACK = dt.timedelta(seconds=2)
"""Around an API ``Date`` (whole seconds) when a create window is read from it."""
UNKNOWN_CLOCK_SLACK = dt.timedelta(minutes=5)
"""Around our own clock when the API sends no ``Date``: the two clocks may differ that much."""


def _create_window(sent: dt.datetime, answered: dt.datetime, date: str | None) -> CreateWindow:
    """The create happened between sending and the answer; an HTTP ``Date`` puts that on the API's clock."""
    try:
        api_now = parsedate_to_datetime(date) if date else None
    except (TypeError, ValueError):
        api_now = None
    if api_now is None or api_now.tzinfo is None:
        return CreateWindow(sent - UNKNOWN_CLOCK_SLACK, answered + UNKNOWN_CLOCK_SLACK)
    return CreateWindow(api_now - (answered - sent) - CLOCK_SLACK, api_now + CLOCK_SLACK)


async def _single(event: StreamEvent) -> AsyncIterator[StreamEvent]:
    yield event


def _transport_error(err: httpx.HTTPError, what: str, api: str) -> MonetError:
    """A failed exchange as a retryable error: unreadable bytes are a malformed answer, the rest a lost one."""
    if isinstance(err, httpx.DecodingError):
        return MalformedResponse(f"{what}: the answer could not be decoded ({type(err).__name__}).")
    if isinstance(err, httpx.ConnectError):
        return MonetConnectionError(
            f"Could not reach the Monet API at {api} ({type(err).__name__}). "
            "Check the network connection and MONET_BASE_URL."
        )
    if isinstance(err, httpx.TimeoutException):
        return MonetConnectionError(f"{what}: the Monet API at {api} did not answer in time.")
    return MonetConnectionError(f"{what} ({type(err).__name__}).")
