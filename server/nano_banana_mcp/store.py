"""TEMPORARY shim during the restructure (removed before commit): old import paths."""

from nano_banana_mcp.tasks.records import Phase, SavedImage, TaskRecord, now

__all__ = ["Phase", "SavedImage", "TaskRecord", "now"]
