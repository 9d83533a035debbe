"""What lets an operator see inside: Prometheus metrics (:mod:`.metrics`), OpenTelemetry traces (:mod:`.traces`) and
structured logs (:mod:`.logs`). :func:`task` is the runner's one hook around a task's work."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nano_banana_mcp.tasks.records import TaskRecord

__all__ = ["task"]


@contextmanager
def task(record: TaskRecord) -> Iterator[None]:
    """Around one task's work in this process: its span (in the tool call's trace when the call made the row), its
    task id and tenant on every log line, and once it is finished, its count by model and status."""
    # imported here, not with the package: the CLI's commands import `observability.logs` alone, without the
    # metrics' and traces' libraries (~60 ms of every start)
    from nano_banana_mcp.observability import logs, metrics, traces  # noqa: PLC0415

    with traces.task_span(record), logs.bound(record):
        yield
    if record.finished:
        metrics.task_finished(record)
