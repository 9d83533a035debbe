"""A task's life: its records and state machine, the ledger, the runner (the one create path) and the service."""

from nano_banana_mcp.tasks.ledger import LEDGER_FILE, SCHEMA_VERSION, Ledger
from nano_banana_mcp.tasks.records import (
    DEFAULT_TENANT,
    STATUSES,
    Call,
    Endpoint,
    Phase,
    SavedImage,
    Status,
    TaskRecord,
    status_of,
)
from nano_banana_mcp.tasks.references import RootsProvider, UploadedReference
from nano_banana_mcp.tasks.results import (
    COLLECT_WAIT,
    OFFLINE_NOTE,
    CallState,
    TaskList,
    TaskResult,
    TaskSummary,
    combine,
)
from nano_banana_mcp.tasks.runner import Runner
from nano_banana_mcp.tasks.service import ProgressCallback, Service
from nano_banana_mcp.tasks.store import LedgerStore, RowTaken

__all__ = [
    "COLLECT_WAIT",
    "DEFAULT_TENANT",
    "LEDGER_FILE",
    "OFFLINE_NOTE",
    "SCHEMA_VERSION",
    "STATUSES",
    "Call",
    "CallState",
    "Endpoint",
    "Ledger",
    "LedgerStore",
    "Phase",
    "ProgressCallback",
    "RootsProvider",
    "RowTaken",
    "Runner",
    "SavedImage",
    "Service",
    "Status",
    "TaskList",
    "TaskRecord",
    "TaskResult",
    "TaskSummary",
    "UploadedReference",
    "combine",
    "status_of",
]
