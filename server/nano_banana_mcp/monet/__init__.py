"""The Monet AI task API: the client, its wire models, the SSE reader, downloads and the one retry policy."""

from nano_banana_mcp.monet.client import MonetClient
from nano_banana_mcp.monet.clients import MonetClients
from nano_banana_mcp.monet.download import Downloaded, Downloader
from nano_banana_mcp.monet.models import API_PREFIX, TERMINAL_STATUSES, Task, TaskOutput, TaskPage, UploadedFile
from nano_banana_mcp.monet.retry import RetryPolicy, is_transient

__all__ = [
    "API_PREFIX",
    "TERMINAL_STATUSES",
    "Downloaded",
    "Downloader",
    "MonetClient",
    "MonetClients",
    "RetryPolicy",
    "Task",
    "TaskOutput",
    "TaskPage",
    "UploadedFile",
    "is_transient",
]
