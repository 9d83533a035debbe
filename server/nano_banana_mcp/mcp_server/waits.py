"""The one cap on a tool call's wait: no ``wait_seconds`` outlasts the host that made the call.

Hosts cut an MCP request off after about 60 s unless told otherwise (OpenClaw: "MCP error -32001: Request timed out",
and the model gets no task id). So every ``wait_seconds`` a tool takes is advertised with ``maximum: 45`` in its
schema, and a larger value (a model that ignores the schema, a host that does not check it) is clamped here, not
refused: the call still returns the task id in time, and its text says the wait was shortened.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

__all__ = ["WAIT_CAP", "capped", "clamp_note", "wait_field"]

WAIT_CAP = 45.0
"""The longest wait a tool call makes: under the ~60 s at which hosts cut a call off, with room for uploads."""


def wait_field(description: str) -> Any:
    """The ``Field`` of a ``wait_seconds`` parameter: at least 0, at most 45 as the schema says; a larger value is
    accepted and clamped by :func:`capped` (a refused call would cost the model a turn and tell it nothing)."""
    return Field(ge=0, description=description, json_schema_extra={"maximum": int(WAIT_CAP)})


def capped(wait_seconds: float) -> tuple[float, float | None]:
    """The wait to make, and the wait asked for when it was clamped (None when it was within the cap)."""
    if wait_seconds > WAIT_CAP:
        return WAIT_CAP, wait_seconds
    return wait_seconds, None


def clamp_note(asked: float) -> str:
    """What the result says when a wait was clamped."""
    return (
        f"The wait was shortened to {WAIT_CAP:g} s (asked: {asked:g}), the most one call may take before hosts cut "
        "it off; the task keeps running either way."
    )
