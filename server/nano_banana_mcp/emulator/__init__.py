"""A Monet-compatible API server for offline use and for every test.

It serves the contract of ``shared/monet-api.md`` on 127.0.0.1 (:mod:`.contract`): tasks whose status
advances with time, idempotent creates (a key scoped to its endpoint by default), an SSE stream,
pagination, uploads that expire, and real PNG placeholders of the requested size (:mod:`.render`) that
say, in their pixels and metadata, that they are offline placeholders. :mod:`.serve` runs it with
uvicorn; :mod:`.faults` holds the switchable misbehaviour tests and benchmarks turn on, and :mod:`.streams` the
event formats ``/tasks/sync`` may plausibly have (the page documents none).
"""

from nano_banana_mcp.emulator.contract import MAX_UPLOAD_BYTES, Emulator, RequestRecord
from nano_banana_mcp.emulator.faults import CHAOS_KINDS, CONTROL_PREFIX, HOSTILE_KINDS, Faults
from nano_banana_mcp.emulator.render import PLACEHOLDER_DESCRIPTION, PLACEHOLDER_TITLE, output_size
from nano_banana_mcp.emulator.serve import serve, serve_in_thread
from nano_banana_mcp.emulator.streams import STREAM_FORMATS

__all__ = [
    "CHAOS_KINDS",
    "CONTROL_PREFIX",
    "HOSTILE_KINDS",
    "MAX_UPLOAD_BYTES",
    "PLACEHOLDER_DESCRIPTION",
    "PLACEHOLDER_TITLE",
    "STREAM_FORMATS",
    "Emulator",
    "Faults",
    "RequestRecord",
    "output_size",
    "serve",
    "serve_in_thread",
]
