"""submit / wait / get / list / upload: the operations behind every tool and CLI command.

The service never sends a create itself: it writes the row and hands it to the :class:`Runner`, which
owns the one create path. So a call that is cancelled, times out or fails leaves nothing behind: the
row is followed, its images saved, and the agent collects them with the id it was given.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from nano_banana_mcp import catalog
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import InvalidRequest, NanoBananaError, NotFound, TaskNotFound
from nano_banana_mcp.monet import MonetClient, MonetClients
from nano_banana_mcp.spend import Spend, UsageReport, made_by, usage_report, with_made
from nano_banana_mcp.storage import ImageStore
from nano_banana_mcp.tasks.calls import CallsMixin
from nano_banana_mcp.tasks.listing import Listing
from nano_banana_mcp.tasks.previews import PREVIEWS_KEPT, Previews
from nano_banana_mcp.tasks.records import DEFAULT_TENANT, Status, TaskRecord
from nano_banana_mcp.tasks.references import References, RootsProvider, UploadedReference
from nano_banana_mcp.tasks.request_ids import check_same, row_keys
from nano_banana_mcp.tasks.results import (
    TaskList,
    TaskResult,
    foreign_result,
    outcome,
    result_of,
)
from nano_banana_mcp.tasks.runner import Runner
from nano_banana_mcp.tasks.saving import read_saved
from nano_banana_mcp.tasks.sets import ReferenceSets
from nano_banana_mcp.tasks.store import LedgerStore

__all__ = ["ProgressCallback", "Service"]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
_LEDGER_POLL = 0.25  # how often a wait re-reads the ledger for a task another process is working on


@dataclass
class Service(CallsMixin):
    """The operations behind every tool and CLI command."""

    settings: Settings
    ledger: LedgerStore
    clients: MonetClients
    """The client for each tenant's calls: its own key's (a tokens file's third field), else the server's."""
    runner: Runner | None
    store: ImageStore
    """Where saved images are kept: the output folder, or a bucket (``storage.image_store``)."""
    offline: bool = False
    spend: Spend = field(default_factory=Spend)  # prices and daily limits: open_service gives Spend.of(settings)
    # Decoding a full image for a preview takes tens of MB; a few at a time is as fast on few cores.
    image_work: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    previews: Previews = field(default_factory=lambda: Previews(PREVIEWS_KEPT), init=False, repr=False)

    references: References = field(init=False, repr=False)
    sets: ReferenceSets = field(init=False, repr=False)  # the tenants' named reference sets (nano-banana://sets/...)

    def __post_init__(self) -> None:
        self.references = References(self.settings, self.ledger, self.clients, self.tenants, self.store)
        self.sets = self.references.sets

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
        request = await self.sets.expand(request, tenant)  # nano-banana://sets/{name}: its images, within the limit
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
        keys = row_keys(tenant, request_id, count)
        made = {key: row for key in keys if request_id is not None and (row := await self.ledger.get(key)) is not None}
        for row in made.values():
            check_same(row, request, request_id)
        await self.spend.limits.check(self.ledger, tenant, count - len(made))  # before anything is uploaded or paid
        ready = request
        if len(made) < count:  # the references are resolved (and uploaded) only for rows still to be written
            urls = await self.references.resolve(request.images, client_roots, tenant)
            ready = request.model_copy(update={"images": urls})
        records: list[TaskRecord] = []
        # Each row (with its idempotency key) exists before its create is sent, and the runner has it before this
        # call can be cancelled: whatever happens next, each task is made once, followed and saved.
        with anyio.CancelScope(shield=True):
            async with self.spend.limits.turn(self.ledger, tenant, count - len(made)):  # no other call passes now
                for key in keys:
                    record = made.get(key)
                    if record is None:
                        record = TaskRecord(key=key, request=ready, offline=self.offline, tenant=tenant)
                        if not await self.ledger.add(record):  # a call with the same request_id wrote it meanwhile
                            record = await self.ledger.get(key)
                            assert record is not None  # rows are never deleted
                            check_same(record, request, request_id)
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
        if all(r.status == "failed" for r in results):  # maybe refused: the rows as they stand say how
            records = [await self._current(r.key) or r for r in records]
        return with_made(outcome, records, results, self.spend.prices)

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

    @property
    def where(self) -> str:
        """Where saved images go (a folder, or a bucket and prefix), as results name it."""
        return self.store.where

    async def knows(self, handle: str, *, tenant: str = DEFAULT_TENANT) -> bool:
        """Whether the tenant has this task (by the API's id or the request's own) among its rows."""
        return await self.ledger.find(handle, tenant=tenant) is not None

    async def request_of(self, handle: str, *, tenant: str = DEFAULT_TENANT) -> GenerateRequest | None:
        """The request behind one of the tenant's tasks; None for a task made elsewhere or unknown."""
        record = await self.ledger.find(handle, tenant=tenant)
        return record.request if record is not None else None

    async def health(self) -> dict[str, str]:
        """Whether the ledger answers and the image store is writable: ``ok``, or a word for what is wrong (the
        reason is logged, never told)."""
        checks = {"ledger": "ok", "storage": "ok"}
        try:
            await self.ledger.ping()
        except NanoBananaError:
            checks["ledger"] = "unreachable"
        problem = await self.store.check()
        if problem is not None:
            log.warning("health: %s", problem)
            checks["storage"] = self.store.failure
        return checks

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
        return foreign_result(task, self.store, offline=self.offline)

    async def list_tasks(
        self, page: int = 1, page_size: int = 20, status: Status | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> TaskList:
        """Tasks newest first: the tenant's ledger rows (filtered in SQL), merged with the API's list (not with
        tenants: it holds every tenant's tasks). See :mod:`~nano_banana_mcp.tasks.listing`."""
        listing = Listing(
            self.ledger,
            None if self.tenants else self.client,
            shown=lambda record: self.result(self._fresh(record), links=False),  # a summary shows no links
            foreign=lambda task: foreign_result(task, self.store, offline=self.offline),
        )
        return await listing.page(page, page_size, status, tenant)

    async def usage(self, *, tenant: str | None) -> UsageReport:
        """Today's and this month's usage of one tenant (None: of every tenant, for the operator), from the ledger."""
        return await usage_report(self.ledger, self.spend.prices, self.spend.limits, tenant=tenant)

    async def upload(
        self,
        path: str,
        client_roots: RootsProvider | None = None,
        *,
        tenant: str = DEFAULT_TENANT,
        into: str | None = None,
    ) -> UploadedReference:
        """Upload a reference once (checked first); with ``into``, keep it in that named set too (see References)."""
        return await self.references.upload(path, client_roots, tenant, into=into)

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
        return await read_saved(self.store, handle, index, result.images, self.settings.max_download_bytes)

    # -- helpers -------------------------------------------------------------------------------

    def result(self, record: TaskRecord, *, links: bool = True) -> TaskResult:
        """What an agent is told of a task of ours (see :func:`~nano_banana_mcp.tasks.results.result_of`)."""
        result = result_of(record, self.store, links=links)
        return result.model_copy(update={"made": made_by([record], self.spend.prices).line()})

    def _fresh(self, record: TaskRecord, *, deep: bool = True) -> TaskRecord:
        """A row just read from the ledger, with the runner's fresher working copy when this process works on it
        (``deep=False``: a shallow copy, for a reader that changes nothing)."""
        live = self.runner.live(record.key, deep=deep) if self.runner is not None else None
        return live or record

    async def _current(self, key: str) -> TaskRecord | None:
        """The freshest state of a row: the runner's working copy when this process works on it, else the ledger's."""
        live = self.runner.live(key) if self.runner is not None else None
        return live or await self.ledger.get(key)

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
