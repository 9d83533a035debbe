"""Finding, in ``GET /tasks/list``, the task a create made when no answer named it (the page documents no stream
format): by its creation window and model (and prompt, where the list shows one). The runner binds the nearest one no
other row has (``LedgerStore.bind_task``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from nano_banana_mcp.monet import CreateWindow, MonetClient, Task
from nano_banana_mcp.monet.client import UNKNOWN_CLOCK_SLACK
from nano_banana_mcp.tasks.records import TaskRecord, now

__all__ = ["LIST_PAGES", "LIST_PAGE_SIZE", "candidates", "local_window"]

LIST_PAGES = 5
"""``GET /tasks/list`` pages read (newest first) when looking for a task no answer named."""
LIST_PAGE_SIZE = 20
"""The page's own example size."""


async def candidates(client: MonetClient, record: TaskRecord, *, wide: bool) -> list[Task]:
    """The listed tasks that may be the row's, nearest to when its create was answered first. ``wide``: the window
    widened by ``UNKNOWN_CLOCK_SLACK`` (an earlier look missed: the API's ``Date`` and its task times may disagree)."""
    log_ = record.create_log
    if log_.earliest is None or log_.latest is None:  # rows from before the log: no window, look at the last hour
        window = local_window(3600)
        log_.earliest, log_.latest = window.earliest, window.latest
    slack = UNKNOWN_CLOCK_SLACK if wide else timedelta(0)
    earliest, latest = log_.earliest - slack, log_.latest + slack
    middle = log_.earliest + (log_.latest - log_.earliest) / 2
    found: list[tuple[timedelta, Task]] = []
    for page in range(1, LIST_PAGES + 1):
        listed = await client.list_tasks(page, LIST_PAGE_SIZE)
        older = False
        for task in listed.tasks[:LIST_PAGE_SIZE]:
            made = _when(task.created_at)
            if made is None or made > latest:
                continue
            if made < earliest:
                older = True
                break
            if _may_be(task, record):
                found.append((abs(made - middle), task))
        if older or len(listed.tasks) < LIST_PAGE_SIZE:
            break
    return [task for _, task in sorted(found, key=lambda c: c[0])]


def local_window(seconds: float = UNKNOWN_CLOCK_SLACK.total_seconds()) -> CreateWindow:
    """A create window on this machine's clock, wide enough for the API's clock to differ."""
    moment = now()
    return CreateWindow(moment - timedelta(seconds=seconds), moment + timedelta(seconds=seconds))


def _when(value: str | None) -> datetime | None:
    """An API time (ISO 8601, ``Z`` or an offset) as an aware datetime; None if absent or unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _may_be(task: Task, record: TaskRecord) -> bool:
    """Whether a listed task may be the row's: the same model, and the same prompt where the API lists one."""
    models = {o.model for o in task.outputs if o.model}
    listed_input = (task.model_extra or {}).get("input")
    if isinstance(listed_input, dict):
        if isinstance(listed_input.get("model"), str):
            models.add(listed_input["model"])
        prompt = listed_input.get("prompt")
        if isinstance(prompt, str) and prompt != record.request.prompt:
            return False
    return not models or record.request.model in models
