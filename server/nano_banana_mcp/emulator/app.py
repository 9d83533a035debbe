"""The emulator as one object: the Monet API contract of ``shared/monet-api.md`` as an ASGI app, its settings, and
what tests and the control endpoint read of it.

The app is assembled here from its parts: the :mod:`.gate` every request passes, the :mod:`.tasks` and :mod:`.files`
endpoints, and the :mod:`.control` endpoints when asked for. What it holds is one :class:`~.state.State`; misbehaviour
is delegated to :class:`~nano_banana_mcp.emulator.faults.FaultInjector`, which with no fault switched on changes
nothing.

Nothing here writes to stdout: in offline mode stdout is the MCP stdio transport.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware

from nano_banana_mcp.emulator.control import control_routes
from nano_banana_mcp.emulator.faults import FaultInjector, Faults
from nano_banana_mcp.emulator.files import FileEndpoints
from nano_banana_mcp.emulator.gate import Gate
from nano_banana_mcp.emulator.state import Endpoint, RequestRecord, State
from nano_banana_mcp.emulator.tasks import TaskEndpoints
from nano_banana_mcp.emulator.wire import EXCEPTION_HANDLERS

__all__ = ["Emulator"]


class Emulator:
    """The Monet API in one object: an ASGI :attr:`app` plus the state and faults tests inspect.

    ``strict_idempotency`` (the default) scopes an idempotency key to the create endpoint it was first
    sent to, as the API documents no more: the same key on the other endpoint creates a new task. With
    ``strict_idempotency=False`` one key spans ``/tasks/async`` and ``/tasks/sync``.

    With ``control=True`` it also serves ``GET /_emulator/state`` and ``POST /_emulator/faults`` (no
    auth, no faults, not recorded) so that another process can steer and read it.

    ``extra_keys`` (or :meth:`add_key`) are further keys it accepts, as other accounts' keys would be;
    :attr:`creates_by_key` and :attr:`uploads_by_key` tell which key each create and upload came with.
    """

    def __init__(
        self,
        *,
        api_key: str = "monet_offline",
        extra_keys: Iterable[str] = (),
        task_seconds: float = 3.0,
        stream_interval: float = 0.25,
        upload_ttl: float = 86_400.0,
        faults: Faults | None = None,
        control: bool = False,
        strict_idempotency: bool = True,
    ) -> None:
        self.api_key = api_key
        self.extra_keys: list[str] = list(extra_keys)
        """Keys accepted besides ``api_key``."""
        self.control = control
        self._defaults = (task_seconds, stream_interval, upload_ttl, strict_idempotency)
        self.task_seconds = task_seconds
        self.stream_interval = stream_interval
        self.upload_ttl = upload_ttl
        self.strict_idempotency = strict_idempotency
        self.base_url: str | None = None
        self._faults = FaultInjector(faults if faults is not None else Faults())
        self._state = State()
        self.app: Starlette = self._build_app()

    @property
    def state(self) -> State:
        """The tasks, uploads, keys, counters and requests held now (a :meth:`reset` replaces them as a whole)."""
        return self._state

    @property
    def creates(self) -> int:
        """Tasks created, on either endpoint."""
        return self._state.creates

    @property
    def creates_by_endpoint(self) -> Counter[Endpoint]:
        """Tasks created, by the endpoint that created them (``async`` or ``sync``)."""
        return self._state.creates_by_endpoint

    @property
    def creates_by_key(self) -> Counter[str]:
        """Tasks created, by the API key of the request that created them."""
        return self._state.creates_by_key

    @property
    def uploads(self) -> int:
        """Files uploaded."""
        return self._state.upload_count

    @property
    def uploads_by_key(self) -> Counter[str]:
        """Files uploaded, by the API key of the request."""
        return self._state.uploads_by_key

    @property
    def downloads(self) -> int:
        """Output downloads answered whole and uncut (a 200, or a 206 running to the last byte)."""
        return self._state.downloads

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request answered, in order (not the control endpoints')."""
        return self._state.requests

    @property
    def faults(self) -> Faults:
        """The switchable faults; set their fields to make the next requests misbehave."""
        return self._faults.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults.faults = faults

    @property
    def chaos_fired(self) -> Counter[str]:
        """Chaos faults that fired, by kind (see ``CHAOS_KINDS``)."""
        return self._faults.chaos_fired

    @property
    def hostile_fired(self) -> Counter[str]:
        """Hostile answers sent, by kind (see ``HOSTILE_KINDS``)."""
        return self._faults.hostile_fired

    @property
    def hostile_streams(self) -> int:
        """Hostile bodies being streamed right now (a live gauge that :meth:`reset` leaves alone)."""
        return self._faults.hostile_streams

    def reset(self) -> None:
        """Forget all tasks, uploads, requests and counters; switch faults off; restore the settings."""
        self._state = State()
        self.task_seconds, self.stream_interval, self.upload_ttl, self.strict_idempotency = self._defaults
        self._faults.reset()

    def expire_uploads(self) -> int:
        """Let every upload expire now, as 24 hours would: its URL is no longer served, and a create naming it is
        refused. How many there were."""
        moment = time.monotonic()
        for upload in self._state.uploads.values():
            upload.expires = min(upload.expires, moment)
        return len(self._state.uploads)

    def finish_tasks(self) -> int:
        """Let every task still running finish now, as its time would (a success, or the failure a fault chose): a
        test that needs a task to outlast a moment, then to end, says when. How many there were."""
        moment = time.monotonic()
        running = [task for task in self._state.tasks.values() if task.finishes > moment]
        for task in running:
            task.duration = moment - task.started
        return len(running)

    def add_key(self, key: str) -> None:
        """Accept ``key`` too (another account's key); it stays accepted after :meth:`reset`."""
        if key != self.api_key and key not in self.extra_keys:
            self.extra_keys.append(key)

    def set_chaos(self, rate: float, seed: int | None = None) -> None:
        """Give each request probability ``rate`` of a random fault; reseed the dice with ``seed``.

        Raises ValueError unless ``0 <= rate <= 1``.
        """
        self._faults.configure({"chaos": rate, "chaos_seed": seed})

    def keys_on_two_endpoints(self) -> set[str]:
        """Idempotency keys sent to both ``/tasks/async`` and ``/tasks/sync`` (whatever the answers were)."""
        return {key for key, endpoints in self._state.key_endpoints.items() if len(endpoints) > 1}

    def task_inputs(self) -> list[dict[str, Any]]:
        """The ``input`` of every task created, oldest first (to count tasks per logical request)."""
        return [dict(t.input) for t in sorted(self._state.tasks.values(), key=lambda t: t.seq)]

    def snapshot(self) -> dict[str, Any]:
        """Counters, idempotency, faults fired and current faults, as ``GET /_emulator/state`` answers them."""
        state = self._state
        return {
            "creates": state.creates,
            "creates_by_endpoint": dict(state.creates_by_endpoint),
            "keys_on_two_endpoints": sorted(self.keys_on_two_endpoints()),
            "strict_idempotency": self.strict_idempotency,
            "uploads": state.upload_count,
            "tasks": len(state.tasks),
            "downloads": state.downloads,
            "requests": len(state.requests),
            **self._faults.state(),
        }

    def finished_at(self, task_id: str) -> float | None:
        """``time.monotonic()`` when the task reached its terminal status; None if unknown or unfinished."""
        task = self._state.tasks.get(task_id)
        if task is None or time.monotonic() < task.finishes:
            return None
        return task.finishes

    def _build_app(self) -> Starlette:
        routes = TaskEndpoints(self, self._faults).routes() + FileEndpoints(self, self._faults).routes()
        if self.control:
            routes += control_routes(self._faults, self.snapshot)
        return Starlette(
            routes=routes,
            middleware=[Middleware(Gate, emulator=self, faults=self._faults)],
            exception_handlers=EXCEPTION_HANDLERS,
        )
