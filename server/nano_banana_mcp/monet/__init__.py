"""The Monet AI task API: the client, its wire models, the SSE reader, downloads and the one retry policy."""

from nano_banana_mcp.monet.client import CreateStream, CreateWindow, MonetClient
from nano_banana_mcp.monet.clients import MonetClients
from nano_banana_mcp.monet.download import Downloaded, Downloader
from nano_banana_mcp.monet.events import StreamEvent
from nano_banana_mcp.monet.models import API_PREFIX, TERMINAL_STATUSES, Task, TaskOutput, TaskPage, UploadedFile
from nano_banana_mcp.monet.retry import RetryPolicy, is_transient, worth_a_few_tries

__all__ = [
    "API_PREFIX",
    "TERMINAL_STATUSES",
    "CreateStream",
    "CreateWindow",
    "Downloaded",
    "Downloader",
    "MonetClient",
    "MonetClients",
    "RetryPolicy",
    "StreamEvent",
    "Task",
    "TaskOutput",
    "TaskPage",
    "UploadedFile",
    "is_transient",
    "worth_a_few_tries",
]
