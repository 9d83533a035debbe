"""A caller's ``request_id``: the rows' keys it gives (so the same request sent again finds its rows, and nothing is
created or charged twice), and the check that a request sent again under it is the same request."""

from __future__ import annotations

import uuid

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import InvalidRequest
from nano_banana_mcp.tasks.records import TaskRecord

__all__ = ["check_same", "row_keys"]

_REQUEST_IDS = uuid.UUID("5d0c4d53-1f0e-4f67-9a43-6b0a8e2c9b11")
"""The namespace of the row keys made from a caller's ``request_id`` (tenant and id without NUL)."""
_REQUEST_IDS_WITH_NUL = uuid.UUID("05cefcfa-6eec-43fc-8328-8d7d4d798074")
"""The namespace of those whose tenant or id holds a NUL (parts length-prefixed)."""


def row_keys(tenant: str, request_id: str | None, count: int) -> list[str]:
    """The rows' keys (their idempotency keys at the API): random, or derived from the tenant's ``request_id``.

    No two (tenant, request_id, index) share a key. Without a NUL in the tenant or the id, the parts are joined
    with NUL, as every earlier version did (so a request sent again after an upgrade finds its rows): the first
    NUL ends the tenant, the last starts the index. With one, the NUL join could make ``bob\\0x`` + ``r`` equal
    ``bob`` + ``x\\0r``, so each part is length-prefixed instead, under a namespace of its own.
    """
    if request_id is None:
        return [str(uuid.uuid4()) for _ in range(count)]
    if "\x00" not in tenant and "\x00" not in request_id:
        return [str(uuid.uuid5(_REQUEST_IDS, f"{tenant}\x00{request_id}\x00{index}")) for index in range(count)]
    parts = f"{len(tenant)}:{tenant}{len(request_id)}:{request_id}"
    return [str(uuid.uuid5(_REQUEST_IDS_WITH_NUL, f"{parts}{index}")) for index in range(count)]


def check_same(record: TaskRecord, request: GenerateRequest, request_id: str | None) -> None:
    """A row found under a ``request_id`` must be of the same request (what can be compared once the references are
    uploaded: everything but the references themselves, and their number)."""
    before = record.request
    fields = ("prompt", "model", "aspect_ratio", "resolution", "output_format")
    if all(getattr(before, f) == getattr(request, f) for f in fields) and len(before.images) == len(request.images):
        return
    raise InvalidRequest(
        f"request_id {request_id!r} was already used for another request (task {record.handle}: "
        f"{before.prompt[:60]!r}, {before.model}). Send the same arguments to collect its tasks, or use a new "
        "request_id for a new request."
    )
