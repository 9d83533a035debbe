"""submit / wait / get / list / upload: the one path that both the MCP server and the CLI use."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import anyio
import httpx
from pydantic import BaseModel, Field, SecretStr

from nano_banana_mcp import catalog
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import OFFLINE_API_KEY, Settings
from nano_banana_mcp.errors import TRANSIENT_ERRORS, InvalidRequest, MonetError, NotFound, TaskNotFound
from nano_banana_mcp.images import ReferenceFile, check_reference, thumbnail
from nano_banana_mcp.ledger import Ledger
from nano_banana_mcp.monet import MonetClient, RetryPolicy, Task
from nano_banana_mcp.store import Phase, SavedImage, TaskRecord, now
from nano_banana_mcp.watcher import Watcher

__all__ = [
    "ProgressCallback",
    "Service",
    "Status",
    "TaskList",
    "TaskResult",
    "TaskSummary",
    "UploadedReference",
    "open_service",
]

log = logging.getLogger(__name__)

Status = Literal["pending", "running", "success", "failed"]
ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
RootsProvider = Callable[[], Awaitable[list[Path]]]
"""Folders the MCP client declared as its roots; asked only when a local file is to be read."""

LEDGER_FILE = "ledger.sqlite3"
WORKER_THREADS = 4
UPLOAD_LIFETIME = timedelta(hours=24)
UPLOAD_REUSE_MARGIN = timedelta(hours=1)
OFFLINE_NOTE = "Offline mode: these are placeholder images from the built-in emulator, not generated images."


class TaskResult(BaseModel):
    task_id: str
    status: Status = Field(description="success: saved; pending/running: see next_step")
    model: str
    prompt: str
    progress: float | None = Field(default=None, description="Percent")
    images: list[SavedImage] = Field(default_factory=list)
    error: str | None = None
    output_dir: str
    offline: bool = Field(default=False, description="Emulator placeholders, not generated images")
    created_at: datetime | None = None
    next_step: str | None = None

    def summary(self) -> str:
        """One line for the agent to read."""
        if self.status == "success" and all(i.path for i in self.images):
            files = "; ".join(f"{i.path} ({i.width}x{i.height}, {_size(i.size_bytes)})" for i in self.images if i.path)
            count = len(self.images)
            line = f"Saved {count} image{'s' * (count != 1)} from {self.model} (task {self.task_id}): {files}"
            return f"{line}. {OFFLINE_NOTE}" if self.offline else line
        if self.status == "failed":
            return f"Task {self.task_id} failed: {self.error}"
        done = f" ({self.progress:.0f}%)" if self.progress is not None else ""
        problem = f" Problem: {self.error}" if self.error else ""
        return f"Task {self.task_id} is {self.status}{done}.{problem} {self.next_step or ''}".strip()


class TaskSummary(BaseModel):
    """One line of list_tasks; get_task has the rest."""

    task_id: str
    status: Status
    model: str
    prompt: str  # the first 120 characters
    created_at: datetime | None = None
    paths: list[str] = Field(default_factory=list)
    error: str | None = None

    @classmethod
    def of(cls, result: TaskResult) -> TaskSummary:
        return cls(
            task_id=result.task_id,
            status=result.status,
            model=result.model,
            prompt=result.prompt[:120],
            created_at=result.created_at,
            paths=[i.path for i in result.images if i.path],
            error=result.error,
        )


class TaskList(BaseModel):
    tasks: list[TaskSummary]
    page: int
    page_size: int
    total_local: int = Field(description="In this machine's ledger")
    total_api: int | None = Field(default=None, description="At the API")
    api_error: str | None = None


class UploadedReference(BaseModel):
    url: str
    expires_at: datetime
    sha256: str
    mime_type: str
    size_bytes: int


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def status_of(record: TaskRecord) -> Status:
    if record.phase == "downloaded":
        return "success"
    if record.phase == "failed":
        return "failed"
    if record.phase == "succeeded":
        return "running"  # finished at the API, not saved yet (``error`` says why, if it is stuck)
    if record.api_status in (None, "pending"):
        return "pending"
    return "running"


_LEDGER_POLL = 0.25  # how often a wait re-reads the ledger for a task another process is following
_STATUS_PHASES: dict[str, tuple[Phase, ...]] = {
    "success": ("downloaded",),
    "failed": ("failed",),
    "pending": ("submitting", "created"),
    "running": ("created", "succeeded"),
}


@dataclass
class Service:
    """The operations behind every tool and CLI command."""

    settings: Settings
    ledger: Ledger
    client: MonetClient | None
    watcher: Watcher | None
    offline: bool = False
    # Decoding a full image for a preview takes tens of MB; a few at a time is as fast on few cores.
    image_work: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))

    # -- generate ------------------------------------------------------------------------------

    async def submit(self, request: GenerateRequest, client_roots: RootsProvider | None = None) -> TaskRecord:
        """Check, upload references, record, then create the task once. Returns as soon as it exists."""
        catalog.check(
            request.model,
            prompt=request.prompt,
            image_count=len(request.images),
            aspect_ratio=request.aspect_ratio,
            resolution=request.resolution,
        )
        client, watcher = self._require_client()
        local = await self._check_references(request.images, client_roots)
        urls = [await self._upload_cached(local[i]) if i in local else ref for i, ref in enumerate(request.images)]
        request = request.model_copy(update={"images": tuple(urls)})

        # The row (with its idempotency key) exists before the create is sent: whatever happens next,
        # the task is found, resumed and charged once.
        record = TaskRecord(key=str(uuid.uuid4()), request=request, offline=self.offline)
        await self.ledger.add(record)
        try:
            task = await client.create_task(request, record.key)
        except TRANSIENT_ERRORS as err:
            watcher.follow(record.key)  # keeps sending it, with the same key, in the background
            raise type(err)(
                f"{err} The request is saved and is sent again automatically with the same idempotency key, so it "
                "is never charged twice; list_tasks shows it once the API has it.",
                status_code=err.status_code,
                code=err.code,
            ) from err
        except MonetError as err:
            record.phase, record.error = "failed", str(err)
            await self.ledger.save(record)
            await self.ledger.release(record.key)
            raise
        record.task_id, record.api_status, record.phase = task.id, task.status, "created"
        await self.ledger.save(record)
        watcher.follow(record.key)
        return record

    async def wait(self, task_id: str, wait_seconds: float, on_progress: ProgressCallback | None = None) -> TaskResult:
        """Wait up to ``wait_seconds`` for the task to finish (images saved), reporting progress."""
        record = await self.ledger.by_task_id(task_id)
        if record is None:
            return await self.get(task_id)
        self._resume(record)
        last: tuple[str, float | None] | None = None
        with anyio.move_on_after(wait_seconds):
            while True:
                local = self.watcher is not None and self.watcher.is_following(record.key)
                changed = self.watcher.change_event(record.key) if self.watcher and local else None
                record = await self.ledger.by_task_id(task_id)
                assert record is not None
                status = status_of(record)
                progress = self._progress(record)
                if on_progress is not None and (status, progress) != last:
                    last = (status, progress)
                    await on_progress(progress or 0.0, 100.0, f"{status} {progress or 0:.0f}%")
                if status in ("success", "failed"):
                    break
                if record.error and self.watcher is not None and not local:
                    break  # stuck (e.g. no disk space) and nobody here is working on it: say why now
                if changed is not None:
                    await changed.wait()
                else:
                    await anyio.sleep(_LEDGER_POLL)  # another process is on it; its writes reach the ledger
        return self.result(await self.ledger.by_task_id(task_id) or record)

    async def generate(
        self,
        request: GenerateRequest,
        wait_seconds: float,
        on_progress: ProgressCallback | None = None,
        client_roots: RootsProvider | None = None,
    ) -> TaskResult:
        record = await self.submit(request, client_roots)
        assert record.task_id is not None
        return await self.wait(record.task_id, wait_seconds, on_progress)

    # -- look-ups ------------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskResult:
        """A task by id: from the ledger when known, else from the API (tasks made elsewhere)."""
        record = await self.ledger.by_task_id(task_id)
        if record is not None:
            self._resume(record)
            return self.result(record)
        client, _ = self._require_client()
        try:
            task = await client.get_task(task_id)
        except NotFound as err:
            raise TaskNotFound(
                f"No task {task_id!r} is known here or at the API. Use list_tasks to see recent tasks."
            ) from err
        return self._foreign_result(task)

    async def list(self, page: int = 1, page_size: int = 20, status: Status | None = None) -> TaskList:
        """Tasks newest first: this data dir's ledger merged with the API's own list."""
        phases = _STATUS_PHASES[status] if status else None
        offset = (page - 1) * page_size
        records = await self.ledger.recent(page_size, offset, phases)
        results = [self.result(r) for r in records]
        total_local = await self.ledger.count(phases)
        total_api, api_error = None, None
        if self.client is not None:
            try:
                api_page = await self.client.list_tasks(page, page_size)
            except MonetError as err:
                api_error = f"The API's task list is unavailable ({err}); showing this machine's tasks only."
            else:
                total_api = api_page.total
                known = {r.task_id for r in records}
                for task in api_page.tasks:
                    if task.id in known or await self.ledger.by_task_id(task.id) is not None:
                        continue
                    results.append(self._foreign_result(task))
        if status:
            results = [r for r in results if r.status == status]
        results.sort(key=lambda r: r.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return TaskList(
            tasks=[TaskSummary.of(r) for r in results[:page_size]],
            page=page,
            page_size=page_size,
            total_local=total_local,
            total_api=total_api,
            api_error=api_error,
        )

    async def upload(self, path: str, client_roots: RootsProvider | None = None) -> UploadedReference:
        """Upload one local reference image (checked first); reuse a still-valid earlier upload."""
        self._require_client()
        roots = await self._roots(client_roots)
        ref = await anyio.to_thread.run_sync(self._check_one, path, roots)
        url = await self._upload_cached(ref)
        cached = await self.ledger.cached_upload(ref.sha256)
        assert cached is not None
        return UploadedReference(
            url=url, expires_at=cached[1], sha256=ref.sha256, mime_type=ref.mime_type, size_bytes=len(ref.data)
        )

    async def thumbnail(self, path: Path) -> tuple[bytes, str]:
        """A small JPEG preview of a saved image (see ``images.thumbnail``), made off the event loop."""
        return await anyio.to_thread.run_sync(thumbnail, path, limiter=self.image_work)

    # -- helpers -------------------------------------------------------------------------------

    def result(self, record: TaskRecord) -> TaskResult:
        status = status_of(record)
        next_step = None
        if status in ("pending", "running"):
            handle = f'task_id="{record.task_id}"' if record.task_id else "it (list_tasks shows it once created)"
            next_step = (
                f"It keeps running in the background and its images will be saved to {self.settings.output_dir}. "
                f"Call get_task({handle}, wait_seconds=60) to collect it."
            )
        return TaskResult(
            task_id=record.task_id or "",
            status=status,
            model=record.request.model,
            prompt=record.request.prompt,
            progress=self._progress(record),
            images=record.images,
            error=record.error,
            output_dir=str(self.settings.output_dir),
            offline=record.offline,
            created_at=record.created_at,
            next_step=next_step,
        )

    def _progress(self, record: TaskRecord) -> float | None:
        """Fresh progress from this process's watcher when it follows the task, else the ledger's."""
        return (self.watcher.progress(record.key) if self.watcher else None) or record.progress

    def _foreign_result(self, task: Task) -> TaskResult:
        status: Status = task.status if task.status in ("pending", "success", "failed") else "running"  # type: ignore[assignment]
        model = next((o.model for o in task.outputs if o.model), None) or "unknown"
        created = None
        if task.created_at:
            with contextlib.suppress(ValueError):
                created = datetime.fromisoformat(task.created_at)
        return TaskResult(
            task_id=task.id,
            status=status,
            model=model,
            prompt="",
            progress=task.progress,
            images=[SavedImage(path=None, url=u) for u in task.urls],
            error=task.error_message() if status == "failed" else None,
            output_dir=str(self.settings.output_dir),
            offline=self.offline,
            created_at=created,
            next_step="Not created from this machine, so its images are not saved here; use the URLs.",
        )

    def _resume(self, record: TaskRecord) -> None:
        """Make sure an unfinished task of ours is being carried on (e.g. after a failed download)."""
        if not record.finished and self.watcher is not None:
            self.watcher.follow(record.key)

    def _require_client(self) -> tuple[MonetClient, Watcher]:
        if self.client is None or self.watcher is None:
            self.settings.require_key()  # raises ConfigError naming MONET_API_KEY
            raise AssertionError("a key is set but no client was built")
        return self.client, self.watcher

    def _check_one(self, path: str, roots: Sequence[Path]) -> ReferenceFile:
        return check_reference(path, max_bytes=self.settings.max_reference_bytes, roots=roots)

    async def _roots(self, client_roots: RootsProvider | None) -> list[Path]:
        extra = await client_roots() if client_roots is not None else []
        return [*self.settings.reference_roots(), *extra]

    async def _check_references(
        self, images: Sequence[str], client_roots: RootsProvider | None
    ) -> dict[int, ReferenceFile]:
        """Check every reference before uploading any: local paths are read, URLs must be https."""
        local: dict[int, ReferenceFile] = {}
        roots: list[Path] | None = None
        for index, ref in enumerate(images):
            if ref.startswith("https://") or self._is_own_upload(ref):
                continue
            if "://" in ref or ref.startswith(("data:", "file:")):
                raise InvalidRequest(
                    f"images[{index}] {ref[:80]!r} is not usable: pass an https:// URL, a URL from "
                    "upload_reference, or a local file path."
                )
            if roots is None:
                roots = await self._roots(client_roots)
            local[index] = await anyio.to_thread.run_sync(self._check_one, ref, roots)
        return local

    def _is_own_upload(self, ref: str) -> bool:
        # The offline emulator serves plain http on loopback; its upload URLs are fine to pass back.
        return self.client is not None and ref.startswith(self.client.base_url + "/")

    async def _upload_cached(self, ref: ReferenceFile) -> str:
        cached = await self.ledger.cached_upload(ref.sha256)
        if cached is not None and cached[1] - UPLOAD_REUSE_MARGIN > now():
            return cached[0]
        client, _ = self._require_client()
        uploaded = await client.upload_file(ref.data, ref.upload_name, ref.mime_type)
        await self.ledger.remember_upload(ref.sha256, uploaded.url, now() + UPLOAD_LIFETIME)
        return uploaded.url


@asynccontextmanager
async def open_service(
    settings: Settings, *, on_finished: Callable[[TaskRecord], Awaitable[None]] | None = None
) -> AsyncIterator[Service]:
    """Everything a running server needs: the ledger, one HTTP client, and the watcher's task group.

    In offline mode the built-in emulator is started on a free loopback port first. Unfinished tasks
    in the ledger are resumed at once.
    """
    # Every worker thread that allocates gets a malloc arena of its own that keeps its freed memory. A few
    # threads do our blocking work (file writes, image checks) as fast as forty on a laptop's cores and hold
    # far less (bench/concurrency.py, 200 generations at once: peak RSS 183 MB with anyio's default 40
    # threads, 170 MB with 8, 140 MB with 4, the same wall time).
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    async with AsyncExitStack() as stack:
        base_url, key, api = settings.base_url, settings.api_key, settings.base_url
        if settings.offline:
            from nano_banana_mcp.emulator import Emulator, serve_in_thread  # noqa: PLC0415

            emulator = Emulator(api_key=OFFLINE_API_KEY, task_seconds=settings.emulator_task_seconds)
            base_url = stack.enter_context(serve_in_thread(emulator))
            key, api = SecretStr(OFFLINE_API_KEY), "offline"
            log.info("offline mode: built-in emulator at %s", base_url)
        ledger = Ledger(
            settings.data_dir / LEDGER_FILE,
            owner=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
            api=api,
            upload_scope=base_url,
            lease_seconds=settings.lease_seconds,
        )
        await ledger.open()
        stack.push_async_callback(ledger.close)

        def http() -> httpx.AsyncClient:  # built on first use: one client for the whole process
            return httpx.AsyncClient(
                timeout=settings.request_timeout,
                limits=httpx.Limits(max_connections=settings.max_streams + 100, max_keepalive_connections=50),
                headers={"User-Agent": "nano-banana-mcp"},
            )

        client = None
        if key is not None and key.get_secret_value().strip():
            client = MonetClient(
                http,
                base_url=base_url,
                api_key=key,
                timeout=settings.request_timeout,
                download_hosts=settings.download_hosts,
                max_response_bytes=settings.max_response_bytes,
                stream_stall=settings.stream_stall_seconds,
                retry=RetryPolicy(
                    max_retries=settings.max_retries,
                    base_delay=settings.retry_base_delay,
                    max_delay=settings.retry_max_delay,
                    max_retry_after=settings.max_retry_after,
                ),
            )
            stack.push_async_callback(client.aclose)
        try:
            async with anyio.create_task_group() as tg:
                watcher = None
                if client is not None:
                    watcher = Watcher(client, ledger, settings, tg, on_finished=on_finished)
                    watcher.start()
                yield Service(
                    settings=settings, ledger=ledger, client=client, watcher=watcher, offline=settings.offline
                )
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The task group wraps what the caller's own code raised; hand a lone error back as itself.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
