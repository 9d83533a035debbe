"""Python's cyclic garbage collector around a process's start-up.

Start-up (imports: the MCP SDK's and pydantic's types and schemas, the catalogue) makes objects that live as long as
the process. While a command starts, the collector is off (:func:`starting`, called by ``cli.main``): its passes over
those objects were ~12% of a server's start-up CPU (0.66 → 0.58 s for ``import mcp``, the median of 6 runs each). Once
the command runs (:func:`started`: the service is open, or the emulator serves), what start-up made is frozen, never
traversed again (full collections over it stalled the event loop up to 0.5 s on a busy machine: bench/tasks_poll.py),
and the collector runs as usual for everything made after.
"""

from __future__ import annotations

import gc

__all__ = ["started", "starting"]

_frozen = False


def starting() -> None:
    """A command starts: no collection until :func:`started`."""
    gc.disable()


def started() -> None:
    """Start-up is over: its objects are frozen, and the collector runs from now on. Only the first call freezes: a
    later one (a service opened again in the same process) would also freeze whatever garbage is waiting by then,
    which the collector could then never free."""
    global _frozen  # noqa: PLW0603 - once per process, as start-up is
    if not _frozen:
        gc.freeze()
        _frozen = True
    gc.enable()
