"""How the runner treats each failure of a row's step: tried again without a count (plainly transient), a few times
(``FEW_TRIES``), or never; and the lines a person reads about it."""

from __future__ import annotations

import errno
from dataclasses import dataclass
from pathlib import Path

from nano_banana_mcp.errors import DatabaseUnavailable, DownloadError, MonetError, NanoBananaError
from nano_banana_mcp.monet import is_transient
from nano_banana_mcp.storage import StorageError
from nano_banana_mcp.tasks.records import TaskRecord

__all__ = [
    "FEW_TRIES",
    "NotListedYet",
    "Work",
    "describe",
    "disk_error",
    "gave_up",
    "plainly_transient",
]

FEW_TRIES = 3
"""Tries of a row's step that failed in a way the page does not describe (or by a bug here) before the row ends."""


class NotListedYet(MonetError):
    """The task a create made is not (yet) in ``GET /tasks/list``: looked for again, until ``task_timeout``."""


def plainly_transient(err: Exception) -> bool:
    """Failures tried again without a count: the API or a file host unreachable (429, 5xx, cut), a task not listed
    yet, a bucket or the team database down, a full disk: a paid task's images wait for them to pass."""
    if isinstance(err, DownloadError) and isinstance(err.__cause__, Exception):
        return plainly_transient(err.__cause__)
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    return is_transient(err) or isinstance(err, NotListedYet | StorageError | DatabaseUnavailable)


def describe(err: Exception, out_dir: Path) -> str:
    """A failure as the one line recorded on the row."""
    if isinstance(err, TimeoutError):
        return "A step timed out"
    if isinstance(err, OSError):
        return disk_error(out_dir, err)
    if isinstance(err, NanoBananaError):
        return str(err)
    return f"Unexpected {type(err).__name__}: {err}"[:500]


def gave_up(record: TaskRecord, task_timeout: float) -> str:
    """Why a row followed for ``task_timeout`` seconds without the API finishing (or naming) its task ended."""
    minutes = f"{task_timeout / 60:g} min"
    if record.task_id is None:
        return (
            f"Gave up after {minutes}: the API never confirmed this task, and none matching it appeared in its "
            "task list, so no image was received. Check the account's task list before generating again."
        )
    return (
        f"Gave up after {minutes}: the API had not finished task {record.task_id} (its status: "
        f"{record.api_status or 'unknown'}). If it finishes later, it is in the API's task list (list_tasks)."
    )


def disk_error(out_dir: Path, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder is not writable"
    else:
        reason = err.strerror or type(err).__name__
    return (
        f"The image could not be saved in {out_dir}: {reason}. Free space or set NANO_BANANA_OUTPUT_DIR to a "
        "writable folder; the task is kept, and the download is retried automatically."
    )


@dataclass(slots=True)
class Work:
    """What this process counts of a row while it works it."""

    began: float  # anyio time when it began following the task at the API (task_timeout runs from here)
    strikes: int = 0  # failures of the FEW_TRIES kind since the last good answer
    searches: int = 0  # looks at the task list for a task no answer named
