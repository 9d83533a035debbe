"""TEMPORARY shim during the restructure (removed before commit): old import paths."""

from nano_banana_mcp.runtime import open_service
from nano_banana_mcp.tasks import Service, Status, TaskList, TaskResult, TaskSummary, UploadedReference

Service.list = Service.list_tasks  # type: ignore[attr-defined]

__all__ = ["Service", "Status", "TaskList", "TaskResult", "TaskSummary", "UploadedReference", "open_service"]
