"""``list_tasks``: the tenant's ledger rows and the API's list, merged into one order, newest first.

Page N is the N-th slice of that order: both lists are read from their start to the end of the page (SQL for ours,
``GET /tasks/list`` pages for the API's, those of ours left out), so walking every page shows every task exactly
once. Beyond :data:`MAX_MERGED` tasks deep, the API's list is not read (``api_error`` says so) and a page shows
this machine's tasks only. With tenants, the API's list is never read: it holds every tenant's tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from nano_banana_mcp.errors import MonetError
from nano_banana_mcp.monet import MonetClient, Task
from nano_banana_mcp.tasks.records import Status, TaskRecord
from nano_banana_mcp.tasks.results import TaskList, TaskResult, TaskSummary
from nano_banana_mcp.tasks.store import LedgerStore

__all__ = ["MAX_EXTRA_PAGES", "MAX_MERGED", "Listing"]

MAX_MERGED = 1000
"""How deep (page x page_size) list_tasks merges the API's list with ours."""
MAX_EXTRA_PAGES = 5
"""API list pages read beyond the page depth, to make up for tasks of ours (or of another status) left out."""


def _newest_first(result: TaskResult) -> tuple[float, str]:
    when = result.created_at.timestamp() if result.created_at is not None else float("-inf")
    return (-when, result.task_id)


@dataclass(frozen=True)
class Listing:
    """One page of a tenant's tasks. ``client``: the API's list is merged in (None: this machine's tasks only);
    ``shown``: a row as a summary shows it; ``foreign``: a task made elsewhere, as a result."""

    ledger: LedgerStore
    client: MonetClient | None
    shown: Callable[[TaskRecord], TaskResult]
    foreign: Callable[[Task], TaskResult]

    async def page(self, page: int, page_size: int, status: Status | None, tenant: str) -> TaskList:
        depth = page * page_size
        merged = depth <= MAX_MERGED and self.client is not None
        records = await self.ledger.recent(
            depth if merged else page_size, 0 if merged else depth - page_size, status, tenant=tenant
        )
        results = [self.shown(r) for r in records]
        total_local = await self.ledger.count(status, tenant=tenant)
        total_api, api_error = None, None
        if merged:
            foreign, total_api, api_error = await self._api_tasks(depth, page_size, status, tenant)
            results = sorted(results + foreign, key=_newest_first)[depth - page_size : depth]
        elif self.client is not None:
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
                    foreign = self.foreign(task)
                    if status is None or foreign.status == status:
                        found.append(foreign)
            if len(found) >= depth or len(tasks) < page_size or api_page * page_size >= total:
                return found, total, None
        return found, total, "The API's task list was read only part of the way; some of its tasks may be missing."
