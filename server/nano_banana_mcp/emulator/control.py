"""The control endpoints of ``Emulator(control=True)``: ``GET /_emulator/state`` reads an emulator and
``POST /_emulator/faults`` steers it, so that another process (a benchmark, a browser test) can. They need no auth,
meet no faults and are not recorded (:mod:`.gate` lets them through)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nano_banana_mcp.emulator.wire import invalid

if TYPE_CHECKING:
    from nano_banana_mcp.emulator.faults import FaultInjector

__all__ = ["CONTROL_PREFIX", "control_routes"]

CONTROL_PREFIX = "/_emulator"
"""Path prefix of the control endpoints (served only by ``Emulator(control=True)``)."""


def control_routes(faults: FaultInjector, snapshot: Callable[[], dict[str, Any]]) -> list[Route]:
    """``GET /_emulator/state`` (answers ``snapshot()``) and ``POST /_emulator/faults`` (sets ``faults``)."""

    async def state(_request: Request) -> Response:
        return JSONResponse(snapshot())

    async def set_faults(request: Request) -> Response:
        try:
            changes = await request.json()
        except ValueError:
            raise invalid("The request body must be a JSON object of Faults fields.") from None
        if not isinstance(changes, dict):
            raise invalid("The request body must be a JSON object of Faults fields.")
        try:
            faults.configure(changes)
        except ValueError as e:
            raise invalid(str(e)) from None
        return JSONResponse(snapshot())

    return [
        Route(f"{CONTROL_PREFIX}/state", state, methods=["GET"]),
        Route(f"{CONTROL_PREFIX}/faults", set_faults, methods=["POST"]),
    ]
