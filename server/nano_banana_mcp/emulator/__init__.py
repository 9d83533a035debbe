"""A Monet-compatible API server for offline use and for every test.

It serves the contract of ``shared/monet-api.md`` on 127.0.0.1 (:mod:`.app` assembles it): tasks whose status
advances with time, idempotent creates (a key scoped to its endpoint by default), an SSE stream, pagination
(:mod:`.tasks`), uploads that expire and byte ranges (:mod:`.files`), creates checked against the emulator's own
model table (:mod:`.validation`), and real PNG placeholders of the requested size (:mod:`.render`, kept by
:mod:`.render_cache`) that say, in their pixels and metadata, that they are offline placeholders. :mod:`.gate`
records and authorises each request, and :mod:`.state` holds what a reset forgets. :mod:`.serve` runs it with
uvicorn; :mod:`.faults` holds the switchable misbehaviour tests and benchmarks turn on (:mod:`.hostile` the hostile
answers, :mod:`.control` the endpoints that steer it from another process), and :mod:`.streams` the event formats
``/tasks/sync`` may plausibly have (the page documents none).
"""

from nano_banana_mcp.emulator.app import Emulator
from nano_banana_mcp.emulator.control import CONTROL_PREFIX
from nano_banana_mcp.emulator.faults import CHAOS_KINDS, Faults
from nano_banana_mcp.emulator.files import MAX_UPLOAD_BYTES
from nano_banana_mcp.emulator.hostile import HOSTILE_KINDS
from nano_banana_mcp.emulator.render import PLACEHOLDER_DESCRIPTION, PLACEHOLDER_TITLE, output_size
from nano_banana_mcp.emulator.serve import serve, serve_in_thread
from nano_banana_mcp.emulator.state import RequestRecord
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
