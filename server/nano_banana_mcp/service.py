"""submit / wait / get / list / upload: the one path that both the MCP server and the CLI use."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import anyio
import httpx
from pydantic import BaseModel, Field, SecretStr

from nano_banana_mcp import catalog
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import OFFLINE_API_KEY, Settings
from nano_banana_mcp.errors import InvalidRequest, MonetConnectionError, MonetError, TaskNotFound
from nano_banana_mcp.images import ReferenceFile, check_reference
from nano_banana_mcp.monet import MonetClient, RetryPolicy, Task
from nano_banana_mcp.store import MemoryStore, SavedImage, TaskRecord, TaskStore, now
from nano_banana_mcp.watcher import Watcher

__all__ = [
    "ProgressCallback",
    "Service",
    "Status",
    "TaskList",
    "TaskResult",
    "UploadedReference",
    "open_service",
]

log = logging.getLogger(__name__)

Status = Literal["pending", "running", "success", "failed"]
ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]

UPLOAD_LIFETIME = timedelta(hours=24)
UPLOAD_REUSE_MARGIN = timedelta(hours=1)
OFFLINE_NOTE = "Offline mode: these are placeholder images from the built-in emulator, not generated images."


class TaskResult(BaseModel):
    """A task as the agent sees it."""

    task_id: str = Field(description="The Monet task id; pass it to get_task.")
    status: Status = Field(
        description="pending or running: not finished yet; success: images saved; failed: see error."
    )
    model: str
    prompt: str
    progress: float | None = Field(default=None, description="Percent done, when the API reports it.")
    images: list[SavedImage] = Field(default_factory=list)
    error: str | None = None
    output_dir: str = Field(description="Folder where this task's images are saved.")
    offline: bool = Field(default=False, description="True when the images are emulator placeholders.")
    created_at: datetime | None = None
    next_step: str | None = Field(default=None, description="What to do to collect the result, if anything.")

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


class TaskList(BaseModel):
    tasks: list[TaskResult]
    page: int
    page_size: int
    total: int


class UploadedReference(BaseModel):
    url: str = Field(description="Pass this URL in generate_image's images list.")
    expires_at: datetime = Field(description="The API deletes uploads after 24 hours.")
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
        # Finished at the API; reported as success once saved, or with the reason it could not be.
        return "success" if record.error else "running"
    if record.api_status in (None, "pending"):
        return "pending"
    return "running"


@dataclass
class _Upload:
    url: str
    expires_at: datetime


@dataclass
class Service:
    """The operations behind every tool and CLI command."""

    settings: Settings
    client: MonetClient | None
    store: TaskStore
    watcher: Watcher | None
    offline: bool = False
    _uploads: dict[str, _Upload] = field(default_factory=dict)

    # -- generate ------------------------------------------------------------------------------

    async def submit(self, request: GenerateRequest) -> TaskRecord:
        """Check, upload references, record, then create the task once. Returns as soon as it exists."""
        catalog.check(
            request.model,
            prompt=request.prompt,
            image_count=len(request.images),
            aspect_ratio=request.aspect_ratio,
            resolution=request.resolution,
        )
        client, watcher = self._require_client()
        local = await self._check_references(request.images)
        urls = [await self._upload_cached(local[i]) if i in local else ref for i, ref in enumerate(request.images)]
        request = request.model_copy(update={"images": tuple(urls)})

        record = TaskRecord(key=str(uuid.uuid4()), request=request, offline=self.offline)
        await self.store.add(record)
        try:
            task = await client.create_task(request, record.key)
        except MonetConnectionError as err:
            record.error = f"Creating the task was not confirmed: {err}"
            await self.store.save(record)
            raise MonetConnectionError(
                f"{err} The request was not confirmed. Calling generate_image again is safe only after checking "
                "list_tasks: the API may have created the task."
            ) from err
        except MonetError as err:
            record.phase, record.error = "failed", str(err)
            await self.store.save(record)
            raise
        record.task_id, record.api_status, record.phase = task.id, task.status, "created"
        await self.store.save(record)
        watcher.follow(record.key)
        return record

    async def wait(self, task_id: str, wait_seconds: float, on_progress: ProgressCallback | None = None) -> TaskResult:
        """Wait up to ``wait_seconds`` for the task to finish (images saved), reporting progress."""
        record = await self._record(task_id)
        if record is None:
            return await self.get(task_id)
        watcher = self.watcher
        last: tuple[str, float | None] | None = None
        with anyio.move_on_after(wait_seconds):
            while True:
                changed = watcher.change_event(record.key) if watcher else None
                record = await self._record(task_id)
                assert record is not None
                status = status_of(record)
                if on_progress is not None and (status, record.progress) != last:
                    last = (status, record.progress)
                    await on_progress(record.progress or 0.0, 100.0, f"{status} {record.progress or 0:.0f}%")
                if status in ("success", "failed") or changed is None or not watcher.is_following(record.key):
                    break
                await changed.wait()
        return self.result(await self._record(task_id) or record)

    async def generate(
        self, request: GenerateRequest, wait_seconds: float, on_progress: ProgressCallback | None = None
    ) -> TaskResult:
        record = await self.submit(request)
        assert record.task_id is not None
        return await self.wait(record.task_id, wait_seconds, on_progress)

    # -- look-ups ------------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskResult:
        """A task by id: ours from the store, any other from the API."""
        record = await self._record(task_id)
        if record is not None:
            if record.phase in ("created", "succeeded") and self.watcher and not self.watcher.is_following(record.key):
                self.watcher.follow(record.key)  # e.g. a download that failed for lack of disk space
            return self.result(record)
        client, _ = self._require_client()
        try:
            task = await client.get_task(task_id)
        except MonetError as err:
            if err.status_code == 404:
                raise TaskNotFound(
                    f"No task {task_id!r} is known here or at the API. Use list_tasks to see recent tasks."
                ) from err
            raise
        return self._foreign_result(task)

    async def list(self, page: int = 1, page_size: int = 20) -> TaskList:
        """Tasks created by this server, newest first."""
        offset = (page - 1) * page_size
        records = await self.store.recent(page_size, offset)
        return TaskList(
            tasks=[self.result(r) for r in records if r.task_id],
            page=page,
            page_size=page_size,
            total=await self.store.count(),
        )

    async def upload(self, path: str) -> UploadedReference:
        """Upload one local reference image (checked first); reuse a still-valid earlier upload."""
        self._require_client()
        ref = await anyio.to_thread.run_sync(self._check_one, path)
        url = await self._upload_cached(ref)
        return UploadedReference(
            url=url,
            expires_at=self._uploads[ref.sha256].expires_at,
            sha256=ref.sha256,
            mime_type=ref.mime_type,
            size_bytes=len(ref.data),
        )

    # -- helpers -------------------------------------------------------------------------------

    def result(self, record: TaskRecord) -> TaskResult:
        status = status_of(record)
        next_step = None
        if status in ("pending", "running"):
            next_step = (
                f"It keeps running in the background and its images will be saved to {self.settings.output_dir}. "
                f'Call get_task(task_id="{record.task_id}", wait_seconds=60) to collect it.'
            )
        return TaskResult(
            task_id=record.task_id or "",
            status=status,
            model=record.request.model,
            prompt=record.request.prompt,
            progress=record.progress,
            images=record.images,
            error=record.error,
            output_dir=str(self.settings.output_dir),
            offline=record.offline,
            created_at=record.created_at,
            next_step=next_step,
        )

    def _foreign_result(self, task: Task) -> TaskResult:
        status: Status = task.status if task.status in ("pending", "success", "failed") else "running"  # type: ignore[assignment]
        model = next((o.model for o in task.outputs if o.model), None) or "unknown"
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
            next_step="This task was not created by this server, so its images are not saved here; use the URLs.",
        )

    async def _record(self, task_id: str) -> TaskRecord | None:
        return await self.store.by_task_id(task_id)

    def _require_client(self) -> tuple[MonetClient, Watcher]:
        if self.client is None or self.watcher is None:
            self.settings.require_key()  # raises ConfigError naming MONET_API_KEY
            raise AssertionError("a key is set but no client was built")
        return self.client, self.watcher

    def _check_one(self, path: str) -> ReferenceFile:
        return check_reference(path, max_bytes=self.settings.max_reference_bytes)

    async def _check_references(self, images: Sequence[str]) -> dict[int, ReferenceFile]:
        """Check every reference before uploading any: local paths are read, URLs must be https."""
        local: dict[int, ReferenceFile] = {}
        for index, ref in enumerate(images):
            if ref.startswith("https://") or self._is_own_upload(ref):
                continue
            if "://" in ref or ref.startswith(("data:", "file:")):
                raise InvalidRequest(
                    f"images[{index}] {ref[:80]!r} is not usable: pass an https:// URL, a URL from "
                    "upload_reference, or a local file path."
                )
            local[index] = await anyio.to_thread.run_sync(self._check_one, ref)
        return local

    def _is_own_upload(self, ref: str) -> bool:
        # The offline emulator serves plain http on loopback; its upload URLs are fine to pass back.
        return self.client is not None and ref.startswith(self.client.base_url + "/")

    async def _upload_cached(self, ref: ReferenceFile) -> str:
        cached = self._uploads.get(ref.sha256)
        if cached is not None and cached.expires_at - UPLOAD_REUSE_MARGIN > now():
            return cached.url
        client, _ = self._require_client()
        uploaded = await client.upload_file(ref.data, ref.upload_name, ref.mime_type)
        self._uploads[ref.sha256] = _Upload(url=uploaded.url, expires_at=now() + UPLOAD_LIFETIME)
        return uploaded.url


@asynccontextmanager
async def open_service(
    settings: Settings, *, on_finished: Callable[[TaskRecord], Awaitable[None]] | None = None
) -> AsyncIterator[Service]:
    """Everything a running server needs: one HTTP client, the store, and the watcher's task group.

    In offline mode the built-in emulator is started on a free loopback port first.
    """
    async with AsyncExitStack() as stack:
        base_url, key = settings.base_url, settings.api_key
        if settings.offline:
            from nano_banana_mcp.emulator import Emulator, serve_in_thread  # noqa: PLC0415

            emulator = Emulator(api_key=OFFLINE_API_KEY, task_seconds=settings.emulator_task_seconds)
            base_url = stack.enter_context(serve_in_thread(emulator))
            key = SecretStr(OFFLINE_API_KEY)
            log.info("offline mode: built-in emulator at %s", base_url)
        http = await stack.enter_async_context(
            httpx.AsyncClient(
                timeout=settings.request_timeout,
                limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
                headers={"User-Agent": "nano-banana-mcp"},
            )
        )
        store = MemoryStore()
        has_key = key is not None and bool(key.get_secret_value().strip())
        client = None
        if has_key:
            assert key is not None
            client = MonetClient(
                http,
                base_url=base_url,
                api_key=key,
                timeout=settings.request_timeout,
                retry=RetryPolicy(
                    max_retries=settings.max_retries,
                    base_delay=settings.retry_base_delay,
                    max_delay=settings.retry_max_delay,
                    max_retry_after=settings.max_retry_after,
                ),
            )
        try:
            async with anyio.create_task_group() as tg:
                watcher = Watcher(client, store, settings, tg, on_finished=on_finished) if client else None
                yield Service(settings=settings, client=client, store=store, watcher=watcher, offline=settings.offline)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The task group wraps what the caller's own code raised; hand a lone error back as itself.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
