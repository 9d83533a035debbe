"""submit / wait / get / list / upload: the operations behind every tool and CLI command.

The service never sends a create itself: it writes the row and hands it to the :class:`Runner`, which
owns the one create path. So a call that is cancelled, times out or fails leaves nothing behind: the
row is followed, its images saved, and the agent collects them with the id it was given.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import anyio.to_thread
from pydantic import BaseModel, Field

from nano_banana_mcp import catalog
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import InvalidRequest, MonetError, NotFound, TaskNotFound
from nano_banana_mcp.images.decoding import thumbnail
from nano_banana_mcp.monet import MonetClient, MonetClients, Task
from nano_banana_mcp.storage import ImageStore, StorageError
from nano_banana_mcp.tasks.records import (
    CALL_ID_BYTES,
    DEFAULT_TENANT,
    Call,
    SavedImage,
    Status,
    TaskRecord,
    now,
    status_at_api,
)
from nano_banana_mcp.tasks.references import References, RootsProvider, UploadedReference
from nano_banana_mcp.tasks.runner import Runner
from nano_banana_mcp.tasks.store import LedgerStore
from nano_banana_mcp.uris import image_uri

__all__ = [
    "COLLECT_WAIT",
    "OFFLINE_NOTE",
    "CallState",
    "ProgressCallback",
    "Service",
    "TaskList",
    "TaskResult",
    "TaskSummary",
    "combine",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
COLLECT_WAIT = 30
"""The ``wait_seconds`` our advice names: well under the ~60 s at which hosts cut a call off."""
OFFLINE_NOTE = "Offline mode: these are placeholder images from the built-in emulator, not generated images."
_LEDGER_POLL = 0.25  # how often a wait re-reads the ledger for a task another process is working on
_PREVIEWS_KEPT = 64  # previews are at most THUMBNAIL_MAX_BYTES (80 KB): ~5 MB in all


class TaskResult(BaseModel):
    task_id: str  # this request's own id (the idempotency key) until the API names the task
    task_ids: list[str] = Field(default_factory=list)  # every task of the call (count > 1), task_id first
    status: Status = Field(description="success: saved; else next_step")
    model: str
    prompt: str
    progress: float | None = Field(default=None, description="Percent")
    images: list[SavedImage] = Field(default_factory=list)
    error: str | None = None
    output_dir: str
    offline: bool = False  # emulator placeholders, not generated images (the summary line says so)
    created_at: datetime | None = None
    next_step: str | None = None

    def summary(self) -> str:
        """One line for the agent to read."""
        if self.status == "success" and all(i.path for i in self.images):
            files = "; ".join(f"{i.path} ({i.width}x{i.height}, {_size(i.size_bytes)})" for i in self.images if i.path)
            count = len(self.images)
            tasks = f"tasks {', '.join(self.task_ids)}" if len(self.task_ids) > 1 else f"task {self.task_id}"
            line = f"Saved {count} image{'s' * (count != 1)} from {self.model} ({tasks}): {files}"
            if self.error:  # a batch where some tasks failed
                line = f"{line}. {self.error}"
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


def combine(results: Sequence[TaskResult]) -> TaskResult:
    """One result for the tasks of one call: every image, every id; a failed task named with its error."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    statuses = {r.status for r in results}
    failed = [r for r in results if r.status == "failed"]
    if statuses <= {"success", "failed"}:
        status: Status = "failed" if statuses == {"failed"} else "success"
    else:
        status = "pending" if statuses <= {"pending", "failed"} else "running"
    problems = [f"{r.task_id}: {r.error}" for r in results if r.error]
    error = None
    if failed and status != "failed":
        error = f"{len(failed)} of {len(results)} tasks failed. " + " ".join(problems)
    elif problems:
        error = " ".join(problems)
    progress = [r.progress or 0.0 for r in results]
    next_step = None
    if status in ("pending", "running"):
        ids = ", ".join(f'"{r.task_id}"' for r in results if r.status in ("pending", "running"))
        next_step = (
            f"They keep running in the background; collect each with get_task(task_id=..., "
            f"wait_seconds={COLLECT_WAIT}) for {ids}. Do not generate again."
        )
    return first.model_copy(
        update={
            "task_ids": [r.task_id for r in results],
            "status": status,
            "progress": sum(progress) / len(progress),
            "images": [image for r in results for image in r.images],
            "error": error,
            "next_step": next_step,
        }
    )


MAX_MERGED = 1000
"""How deep (page x page_size) list_tasks merges the API's list with ours."""
MAX_EXTRA_PAGES = 5
"""API list pages read beyond the page depth, to make up for tasks of ours (or of another status) left out."""


def _newest_first(result: TaskResult) -> tuple[float, str]:
    when = result.created_at.timestamp() if result.created_at is not None else float("-inf")
    return (-when, result.task_id)


_REQUEST_IDS = uuid.UUID("5d0c4d53-1f0e-4f67-9a43-6b0a8e2c9b11")
"""The namespace of the row keys made from a caller's ``request_id`` (tenant and id without NUL)."""
_REQUEST_IDS_WITH_NUL = uuid.UUID("05cefcfa-6eec-43fc-8328-8d7d4d798074")
"""The namespace of those whose tenant or id holds a NUL (parts length-prefixed)."""


def _row_keys(tenant: str, request_id: str | None, count: int) -> list[str]:
    """The rows' keys (their idempotency keys at the API): random, or derived from the tenant's ``request_id``.

    No two (tenant, request_id, index) share a key. Without a NUL in the tenant or the id, the parts are joined
    with NUL, as every earlier version did (so a request sent again after an upgrade finds its rows): the first
    NUL ends the tenant, the last starts the index. With one, the NUL join could make ``bob\\0x`` + ``r`` equal
    ``bob`` + ``x\\0r``, so each part is length-prefixed instead, under a namespace of its own.
    """
    if request_id is None:
        return [str(uuid.uuid4()) for _ in range(count)]
    if "\x00" not in tenant and "\x00" not in request_id:
        return [str(uuid.uuid5(_REQUEST_IDS, f"{tenant}\x00{request_id}\x00{index}")) for index in range(count)]
    parts = f"{len(tenant)}:{tenant}{len(request_id)}:{request_id}"
    return [str(uuid.uuid5(_REQUEST_IDS_WITH_NUL, f"{parts}{index}")) for index in range(count)]


def _check_same(record: TaskRecord, request: GenerateRequest, request_id: str | None) -> None:
    """A row found under a ``request_id`` must be of the same request (what can be compared once the references are
    uploaded: everything but the references themselves, and their number)."""
    before = record.request
    fields = ("prompt", "model", "aspect_ratio", "resolution", "output_format")
    if all(getattr(before, f) == getattr(request, f) for f in fields) and len(before.images) == len(request.images):
        return
    raise InvalidRequest(
        f"request_id {request_id!r} was already used for another request (task {record.handle}: "
        f"{before.prompt[:60]!r}, {before.model}). Send the same arguments to collect its tasks, or use a new "
        "request_id for a new request."
    )


def _outcome(records: Sequence[TaskRecord], results: Sequence[TaskResult]) -> TaskResult:
    """The one result of a call's rows; ``MonetError`` when the API refused every create (nothing was made)."""
    pairs = zip(results, records, strict=True)
    refused = [r for r, record in pairs if r.status == "failed" and r.task_id == record.key]
    if len(refused) == len(results):
        raise MonetError(refused[0].error or "The Monet API refused the request.")
    return combine(results)


@dataclass(frozen=True)
class CallState:
    """A call answered with a task (its :class:`Call`) and its rows as they stand: this process's working copies for
    the rows it works on (progress included), the ledger's for the others."""

    call: Call
    records: list[TaskRecord]

    @property
    def finished(self) -> bool:
        """Every row is finished: its images saved, or failed for good."""
        return all(r.finished for r in self.records)

    @property
    def updated_at(self) -> datetime:
        """When the call or one of its rows last changed."""
        moments = [self.call.created_at, *(r.updated_at for r in self.records)]
        if self.call.cancelled_at is not None:
            moments.append(self.call.cancelled_at)
        return max(moments)


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


_PreviewKey = Hashable


class _Previews:
    """Previews made once per version of an image and kept in memory (the newest ``size``), by the key its store
    gives that version (a file's path, inode, size and modification time: a file replaced or edited gets a new
    preview; an object's location). One caller makes it while the others wait.

    Memory rather than files in the data dir: nothing to prune or to trust on the way back, and a restart only
    costs one (capped) decode per image shown again. A file that cannot be previewed keeps its reason, so it is
    not decoded again either.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        # key -> (the preview, or None and the reason it cannot be made)
        self._kept: OrderedDict[_PreviewKey, tuple[tuple[bytes, str] | None, str]] = OrderedDict()
        self._making: dict[_PreviewKey, anyio.Event] = {}

    async def get(self, store: ImageStore, location: str, limiter: anyio.CapacityLimiter) -> tuple[bytes, str]:
        key = await store.version(location)  # a kept preview costs no read of the image
        while (kept := self._kept.get(key)) is None:
            making = self._making.get(key)
            if making is not None:
                await making.wait()  # another call is making this very preview; then look again
                continue
            self._making[key] = done = anyio.Event()
            try:
                try:
                    source = await store.source(location)
                    self._kept[key] = (await anyio.to_thread.run_sync(thumbnail, source, limiter=limiter), "")
                except ValueError as err:
                    self._kept[key] = (None, str(err))
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
            finally:  # made, failed or cancelled: the next waiter finds it kept, or makes it
                del self._making[key]
                done.set()
        self._kept.move_to_end(key)
        preview, reason = kept
        if preview is None:
            raise ValueError(reason)
        return preview


@dataclass
class Service:
    """The operations behind every tool and CLI command."""

    settings: Settings
    ledger: LedgerStore
    clients: MonetClients
    """The client for each tenant's calls: its own key's (a tokens file's third field), else the server's."""
    runner: Runner | None
    store: ImageStore
    """Where saved images are kept: the output folder, or a bucket (``storage.image_store``)."""
    offline: bool = False
    # Decoding a full image for a preview takes tens of MB; a few at a time is as fast on few cores.
    image_work: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    previews: _Previews = field(default_factory=lambda: _Previews(_PREVIEWS_KEPT), init=False, repr=False)

    references: References = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.references = References(
            self.settings, self.ledger, self.clients, self.tenants, find_row=self._found, read_image=self._image
        )

    # -- generate ------------------------------------------------------------------------------

    async def submit(
        self,
        request: GenerateRequest,
        client_roots: RootsProvider | None = None,
        count: int = 1,
        *,
        tenant: str = DEFAULT_TENANT,
        request_id: str | None = None,
    ) -> list[TaskRecord]:
        """Check, resolve and upload the references once, write ``count`` rows (each its own task, key and charge)
        and hand them to the runner, which sends the creates.

        With ``request_id`` (the caller's own id for this request), the rows' keys derive from it and the tenant: the
        same request sent again (after a cut connection, a timeout, a dead replica) finds the rows the first one
        wrote and returns them, so nothing is created or charged twice. Another request under the same id is refused.

        Returns at once: the rows exist and are being worked on, whatever happens to this call next.
        """
        if not 1 <= count <= catalog.MAX_COUNT:
            raise InvalidRequest(
                f"count must be from 1 to {catalog.MAX_COUNT} (each image is its own task), got {count}."
            )
        catalog.check(
            request.model,
            prompt=request.prompt,
            image_count=len(request.images),
            aspect_ratio=request.aspect_ratio,
            resolution=request.resolution,
        )
        if request_id is not None and not 1 <= len(request_id) <= 200:
            raise InvalidRequest(f"request_id must be 1 to 200 characters, got {len(request_id)}.")
        self._require_client(tenant)
        keys = _row_keys(tenant, request_id, count)
        made = {key: row for key in keys if request_id is not None and (row := await self.ledger.get(key)) is not None}
        for row in made.values():
            _check_same(row, request, request_id)
        ready = request
        if len(made) < count:  # the references are resolved (and uploaded) only for rows still to be written
            urls = await self.references.resolve(request.images, client_roots, tenant)
            ready = request.model_copy(update={"images": urls})
        records: list[TaskRecord] = []
        # Each row (with its idempotency key) exists before its create is sent, and the runner has it before this
        # call can be cancelled: whatever happens next, each task is made once, followed and saved.
        with anyio.CancelScope(shield=True):
            for key in keys:
                record = made.get(key)
                if record is None:
                    record = TaskRecord(key=key, request=ready, offline=self.offline, tenant=tenant)
                    if not await self.ledger.add(record):  # a call with the same request_id wrote it meanwhile
                        record = await self.ledger.get(key)
                        assert record is not None  # rows are never deleted
                        _check_same(record, request, request_id)
                records.append(record)
                self._resume(record)
        return records

    async def generate(
        self,
        request: GenerateRequest,
        wait_seconds: float,
        on_progress: ProgressCallback | None = None,
        client_roots: RootsProvider | None = None,
        count: int = 1,
        *,
        tenant: str = DEFAULT_TENANT,
        request_id: str | None = None,
    ) -> TaskResult:
        """Submit (see :meth:`submit` for ``request_id``), then wait for every task (see :meth:`collect`)."""
        records = await self.submit(request, client_roots, count, tenant=tenant, request_id=request_id)
        return await self.collect(records, wait_seconds, on_progress, tenant=tenant)

    async def collect(
        self,
        records: Sequence[TaskRecord],
        wait_seconds: float,
        on_progress: ProgressCallback | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> TaskResult:
        """Wait up to ``wait_seconds`` for the rows one call wrote, then their one result. A create the API refused for
        good (nothing made, in every task of the call) is raised as ``MonetError``."""
        results = await self._wait_all([r.key for r in records], wait_seconds, on_progress, tenant)
        return _outcome(records, results)

    async def _wait_all(
        self, keys: Sequence[str], wait_seconds: float, on_progress: ProgressCallback | None, tenant: str
    ) -> list[TaskResult]:
        """Wait for several tasks at once, one deadline for all; progress is their mean."""
        if len(keys) == 1:
            return [await self.wait(keys[0], wait_seconds, on_progress, tenant=tenant)]
        done: dict[int, float] = {}
        results: dict[int, TaskResult] = {}

        async def one(index: int, key: str) -> None:
            async def progress(value: float, total: float | None, message: str | None) -> None:
                done[index] = value
                if on_progress is not None:
                    mean = sum(done.values()) / len(keys)
                    await on_progress(mean, 100.0, f"{len(keys)} tasks {mean:.0f}%")

            results[index] = await self.wait(key, wait_seconds, progress, tenant=tenant)

        async with anyio.create_task_group() as tg:
            for index, key in enumerate(keys):
                tg.start_soon(one, index, key)
        return [results[i] for i in range(len(keys))]

    async def wait(
        self,
        handle: str,
        wait_seconds: float,
        on_progress: ProgressCallback | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
    ) -> TaskResult:
        """Wait up to ``wait_seconds`` for the tenant's task to finish (images saved), reporting progress."""
        record = await self.ledger.find(handle, tenant=tenant)
        if record is None:
            return await self.get(handle, tenant=tenant)
        key = record.key
        self._resume(record)
        last: tuple[str, float | None] | None = None
        with anyio.move_on_after(wait_seconds):
            while True:
                following = self.runner is not None and self.runner.is_following(key)
                changed = self.runner.changed(key) if self.runner is not None and following else None
                record = await self._current(key) or record
                if on_progress is not None and (record.status, record.progress) != last:
                    last = (record.status, record.progress)
                    await on_progress(record.progress or 0.0, 100.0, f"{record.status} {record.progress or 0:.0f}%")
                if record.finished:
                    break
                if record.error and self.runner is not None and not following:
                    break  # stuck (e.g. no disk space) and nobody here is working on it: say why now
                if changed is not None:
                    await changed.wait()
                else:
                    await anyio.sleep(_LEDGER_POLL)  # another process works on it; its writes reach the ledger
        return self.result(await self._current(key) or record)

    # -- calls answered with a task ----------------------------------------------------------------

    async def open_call(self, records: Sequence[TaskRecord], *, tenant: str = DEFAULT_TENANT) -> CallState:
        """Give the rows one call wrote an id of their own (an MCP task), bound to the tenant, and write it: once this
        returns, :meth:`call` finds it on any process that shares the ledger. The id is random (192 bits), never the
        API's nor a row's key."""
        call = Call(id=secrets.token_urlsafe(CALL_ID_BYTES), keys=[r.key for r in records], tenant=tenant)
        with anyio.CancelScope(shield=True):  # written whole or not at all before the id is handed out
            await self.ledger.add_call(call)
        return CallState(call, [await self._current(r.key) or r for r in records])

    async def call(self, call_id: str, *, tenant: str = DEFAULT_TENANT) -> CallState | None:
        """The tenant's call and its rows, fresh; None for an id that is unknown or another tenant's (alike).

        One ledger read, and no resume: the sweep carries on rows nobody works (a call polled every second must not
        claim rows every second), and :meth:`wait` or :meth:`get` resumes a row asked for by its own id.
        """
        found = await self.ledger.find_call(call_id, tenant=tenant)
        if found is None:
            return None
        call, records = found
        return CallState(call, [self._fresh(r, deep=False) for r in records])

    async def cancel_call(self, call_id: str, *, tenant: str = DEFAULT_TENANT) -> CallState | None:
        """Cancel the tenant's call, as far as anything can be: the API has no cancel, so its rows go on, and their
        images (paid for) are saved and listed as any others. A call already finished stays as it was. None for an
        unknown id."""
        state = await self.call(call_id, tenant=tenant)
        if state is None or state.finished or state.call.cancelled_at is not None:
            return state
        await self.ledger.cancel_call(call_id, now(), tenant=tenant)
        return await self.call(call_id, tenant=tenant)

    def call_result(self, state: CallState) -> TaskResult:
        """What ``generate`` would have returned for the call's rows as they stand (``MonetError`` if every create was
        refused)."""
        return _outcome(state.records, [self.result(r) for r in state.records])

    async def next_change(self, keys: Sequence[str]) -> None:
        """Return at the next change (progress included) of one of these rows that this process works on; never, if it
        works on none of them (a row another process works on is not seen to change here: bound the wait)."""
        runner = self.runner
        events = [runner.changed(k) for k in keys if runner is not None and runner.is_following(k)]
        if not events:
            await anyio.sleep_forever()
        async with anyio.create_task_group() as tg:

            async def first(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            for event in events:
                tg.start_soon(first, event)

    # -- look-ups ------------------------------------------------------------------------------

    @property
    def client(self) -> MonetClient | None:
        """The client on the server's own key (``MONET_API_KEY``, or the offline emulator's); None without one."""
        return self.clients.default

    @property
    def tenants(self) -> bool:
        """Several tenants share this server (a tokens file, or an identity provider's subjects): each sees its own
        rows only, never the API's lists, which hold every tenant's tasks (the API account is shared)."""
        return self.settings.http_tokens_file is not None or bool((self.settings.oauth_issuer or "").strip())

    async def get(self, handle: str, *, tenant: str = DEFAULT_TENANT) -> TaskResult:
        """A task by id: from the tenant's ledger rows when known, else from the API (tasks made elsewhere).

        With tenants, a task not in the tenant's rows is unknown, without asking the API: another tenant's task
        answers exactly like one that does not exist.
        """
        record = await self.ledger.find(handle, tenant=tenant)
        if record is not None:
            self._resume(record)
            return self.result(self._fresh(record))
        unknown = f"No task {handle!r} is known here or at the API. Use list_tasks to see recent tasks."
        if self.tenants:
            raise TaskNotFound(unknown)
        client, _ = self._require_client(tenant)
        try:
            task = await client.get_task(handle)
        except NotFound as err:
            raise TaskNotFound(unknown) from err
        return self._foreign_result(task)

    async def list_tasks(
        self, page: int = 1, page_size: int = 20, status: Status | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> TaskList:
        """Tasks newest first: the tenant's ledger rows (filtered in SQL), and the API's list (not with tenants).

        The two are merged into one order, and page N is the N-th slice of that order: both lists are read from
        their start to the end of the page (SQL for ours, ``GET /tasks/list`` pages for the API's, those of ours
        left out), so walking every page shows every task exactly once. Beyond ``MAX_MERGED`` tasks deep, the API's
        list is not read (``api_error`` says so) and a page shows this machine's tasks only.
        """
        depth = page * page_size
        merged = depth <= MAX_MERGED and self.client is not None and not self.tenants
        records = await self.ledger.recent(
            depth if merged else page_size, 0 if merged else depth - page_size, status, tenant=tenant
        )
        results = [self.result(self._fresh(r), links=False) for r in records]  # a summary shows no links
        total_local = await self.ledger.count(status, tenant=tenant)
        total_api, api_error = None, None
        if merged:
            foreign, total_api, api_error = await self._api_tasks(depth, page_size, status, tenant)
            results = sorted(results + foreign, key=_newest_first)[depth - page_size : depth]
        elif self.client is not None and not self.tenants:
            api_error = (
                f"Pages past the first {MAX_MERGED:,} tasks show this machine's tasks only; the API's older tasks "
                "are not read."
            )
        return TaskList(
            tasks=[TaskSummary.of(r) for r in results],
            page=page,
            page_size=page_size,
            total_local=total_local,
            total_api=total_api,
            api_error=api_error,
        )

    async def _api_tasks(
        self, depth: int, page_size: int, status: Status | None, tenant: str
    ) -> tuple[list[TaskResult], int | None, str | None]:
        """The first ``depth`` tasks of the API's list that are not ours (of ``status``), its total, and a problem."""
        assert self.client is not None
        found: list[TaskResult] = []
        total: int | None = None
        for api_page in range(1, depth // page_size + MAX_EXTRA_PAGES + 1):
            try:
                listed = await self.client.list_tasks(api_page, page_size)
            except MonetError as err:
                return found, total, f"The API's task list is unavailable ({err}); showing this machine's tasks only."
            total = listed.total
            tasks = listed.tasks[:page_size]  # an API that sends more than asked for gets no more read
            ours = await self.ledger.known_task_ids([t.id for t in tasks], tenant=tenant)
            for task in tasks:
                if task.id not in ours:
                    foreign = self._foreign_result(task)
                    if status is None or foreign.status == status:
                        found.append(foreign)
            if len(found) >= depth or len(tasks) < page_size or api_page * page_size >= total:
                return found, total, None
        return found, total, "The API's task list was read only part of the way; some of its tasks may be missing."

    async def upload(
        self, path: str, client_roots: RootsProvider | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> UploadedReference:
        """Upload one local reference image (checked first); reuse a still-valid earlier upload of this tenant."""
        return await self.references.upload(path, client_roots, tenant)

    async def thumbnail(self, location: str) -> tuple[bytes, str]:
        """A small JPEG preview of a saved image (see ``images.thumbnail``), made off the event loop once per version
        of the image and kept (see :class:`_Previews`).

        ValueError (saying why) when the image cannot be previewed; OSError or StorageError when it cannot be read.
        """
        return await self.previews.get(self.store, location, self.image_work)

    async def image_bytes(self, handle: str, index: int, *, tenant: str = DEFAULT_TENANT) -> bytes:
        """The saved image of one of the tenant's outputs, read only from inside the store (the output folder, or
        the bucket and prefix): the ledger is not trusted."""
        result = await self.get(handle, tenant=tenant)
        return await self._saved_image(handle, index, result.images)

    async def _saved_image(self, handle: str, index: int, images: Sequence[SavedImage]) -> bytes:
        """Image ``index`` of these, read from the store (only from inside it)."""
        if not 0 <= index < len(images):
            raise TaskNotFound(f"Task {handle} has no image {index}.")
        location = images[index].path
        if location is None:
            raise TaskNotFound(f"Image {index} of task {handle} is not saved yet; try get_task first.")
        try:
            return await self.store.read(location, self.settings.max_download_bytes)
        except StorageError as err:
            raise TaskNotFound(f"Image {index} of task {handle} cannot be served: {err}") from err

    # -- helpers -------------------------------------------------------------------------------

    async def _found(self, handle: str, tenant: str) -> TaskRecord | None:
        record = await self.ledger.find(handle, tenant=tenant)
        return self._fresh(record) if record is not None else None

    async def _image(self, record: TaskRecord, index: int) -> bytes:
        return await self._saved_image(record.handle, index, record.images)

    def result(self, record: TaskRecord, *, links: bool = True) -> TaskResult:
        """What an agent is told of a task; ``links``: with a presigned link per image stored in a bucket."""
        status = record.status
        next_step = None
        if record.phase == "submitting":
            next_step = (
                f'The request is saved as "{record.key}" and is sent again with the same idempotency key until the '
                "API confirms it, so it is never charged twice. Do not generate again: call "
                f'get_task(task_id="{record.key}", wait_seconds={COLLECT_WAIT}) to collect it.'
            )
        elif status in ("pending", "running"):
            next_step = (
                f"It keeps running in the background and its images will be saved to {self.store.where}. "
                f'Call get_task(task_id="{record.handle}", wait_seconds={COLLECT_WAIT}) to collect it.'
            )
        images = [
            self._shown(image, image_uri(record.handle, index), links=links)
            for index, image in enumerate(record.images)
        ]
        return TaskResult(
            task_id=record.handle,
            task_ids=[record.handle],
            status=status,
            model=record.request.model,
            prompt=record.request.prompt,
            progress=100.0 if status == "success" else record.progress,
            images=images,
            error=record.error,
            output_dir=self.store.where,
            offline=record.offline,
            created_at=record.created_at,
            next_step=next_step,
        )

    def _shown(self, image: SavedImage, uri: str, *, links: bool) -> SavedImage:
        """An image as a result shows it: its ``nano-banana://`` URI and, from a bucket, a fresh presigned link
        (signing one costs ~0.2 ms: not done for what is not shown)."""
        update: dict[str, object] = {"uri": uri}
        link = self.store.link(image.path) if links and image.path is not None else None
        if link is not None:
            update["url"], update["url_expires_at"] = link
        return image.model_copy(update=update)

    def _fresh(self, record: TaskRecord, *, deep: bool = True) -> TaskRecord:
        """A row just read from the ledger, with the runner's fresher working copy when this process works on it
        (``deep=False``: a shallow copy, for a reader that changes nothing)."""
        live = self.runner.live(record.key, deep=deep) if self.runner is not None else None
        return live or record

    async def _current(self, key: str) -> TaskRecord | None:
        """The freshest state of a row: the runner's working copy when this process works on it, else the ledger's."""
        live = self.runner.live(key) if self.runner is not None else None
        return live or await self.ledger.get(key)

    def _foreign_result(self, task: Task) -> TaskResult:
        status = status_at_api(task.status)
        model = next((o.model for o in task.outputs if o.model), None) or "unknown"
        created = None
        if task.created_at:
            with contextlib.suppress(ValueError):
                created = datetime.fromisoformat(task.created_at)
                created = created if created.tzinfo is not None else created.replace(tzinfo=UTC)
        return TaskResult(
            task_id=task.id,
            status=status,
            model=model,
            prompt="",
            progress=task.progress,
            images=[SavedImage(path=None, url=u) for u in task.urls],
            error=task.error_message() if status == "failed" else None,
            output_dir=self.store.where,
            offline=self.offline,
            created_at=created,
            next_step="Not created from this machine, so its images are not saved here; use the URLs.",
        )

    def _resume(self, record: TaskRecord) -> None:
        """Make sure an unfinished task of ours is being carried on (e.g. after a failed download), even one waiting
        for a setting: being asked for is the cue to try it again."""
        if not record.finished and self.runner is not None:
            self.runner.follow(record.key, again=True)

    def _require_client(self, tenant: str = DEFAULT_TENANT) -> tuple[MonetClient, Runner]:
        """The client for the tenant's calls (its own key's, else the server's) and the runner; without a key for the
        tenant, the ConfigError that names MONET_API_KEY."""
        client = self.clients.require(tenant)  # raises the ConfigError naming the setting
        if self.runner is None:
            raise AssertionError("a client was built but no runner")
        return client, self.runner
