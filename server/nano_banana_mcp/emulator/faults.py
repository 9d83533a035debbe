"""Switchable misbehaviour of the emulator: the :class:`Faults` a test sets, and the :class:`FaultInjector` that
decides when each fires (counting faults, chaos, hostile answers) and counts what fired.

The gate and the endpoints call the injector at a few points (every ``/api/v1`` request, a create, a stream, a
download, every JSON answer); with every :class:`Faults` field at its default each call lets the request be answered
normally. Nothing here fires unless a test, a benchmark or ``POST /_emulator/faults`` switched it on. What a hostile
answer sends is in :mod:`.hostile`; the control endpoints are in :mod:`.control`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import asdict, dataclass, fields
from typing import Any

import anyio
import anyio.lowlevel
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from nano_banana_mcp.emulator import hostile
from nano_banana_mcp.emulator.streams import STREAM_FORMATS
from nano_banana_mcp.emulator.wire import API_PREFIX, ApiError, ConnectionAborted, error, invalid, sse_response

__all__ = ["CHAOS_KINDS", "ECHO_KINDS", "CutResponse", "FaultInjector", "Faults"]

CHAOS_KINDS = ("rate_limit", "server_error", "lost_create", "dropped_stream", "cut_download")
"""The faults chaos mode picks from (never a failed task: that is a legitimate result, not a fault)."""
_CHAOS_SCOPE_KEY = "nano_banana.chaos"
"""Where the gate leaves a chaos fault that only the handler can apply (``lost_create``, ``dropped_stream``)."""
ECHO_KINDS = ("401", "400", "422", "403", "failed_task")
"""The values of :attr:`Faults.echo_key_kind`."""


@dataclass
class Faults:
    """Switchable misbehaviour; each counter is consumed (decremented) as it fires."""

    latency: float = 0.0
    """Seconds added before every ``/api/v1`` response."""
    rate_limit: int = 0
    """The next N ``/api/v1`` requests answer 429 with ``Retry-After``."""
    retry_after: float = 0.05
    """The ``Retry-After`` value of those 429s, in (possibly fractional) seconds."""
    server_errors: int = 0
    """The next N ``/api/v1`` requests answer 503."""
    lose_create_responses: int = 0
    """The next N create requests (async or sync, new or replayed) make the task, then break the connection."""
    drop_streams: int = 0
    """The next N SSE streams send their first event, then break the connection."""
    fail_tasks: int = 0
    """The next N newly created tasks end ``failed``."""
    fail_message: str | None = None
    """The error message of the tasks ``fail_tasks`` fails (None: the emulator's own), as an API may send any text."""
    refuse_creates: int = 0
    """The next N creates of a new task answer ``refuse_status`` although the request is valid."""
    refuse_status: int = 400
    """The status of those refusals: 400 VALIDATION_ERROR, or any 4xx the page does not describe (409, 402, 413,
    422, ...), answered with a JSON error body of that status."""
    cut_downloads: int = 0
    """The next N file downloads send half the body (or half the requested range), then break the connection."""
    chaos: float = 0.0
    """Probability (0..1) that any one request gets a random fault of a kind that applies to it (see
    :data:`CHAOS_KINDS`): any ``/api/v1`` request 429 or 503, a create also a lost response, a sync create
    also a dropped stream, a file download a cut download. Counting faults above fire first."""
    chaos_seed: int | None = None
    """Seed of the chaos dice, for a reproducible run; applied by ``Emulator.set_chaos``, by
    ``POST /_emulator/faults`` and by ``Emulator.reset``."""
    hostile: int = 0
    """The next N responses to which ``hostile_kind`` applies are hostile (see :data:`HOSTILE_KINDS`).
    The request is handled first (a create makes its task, an upload is stored) and only a successful
    answer is replaced; refusals by the gate (auth, 429, 503, chaos), errors, lost creates and ``HEAD``
    requests are left alone and consume nothing."""
    hostile_kind: str = "malformed_json"
    """Which hostile answer :attr:`hostile` sends; one of :data:`HOSTILE_KINDS`."""
    echo_key: int = 0
    """The next N answers echo the request's ``Authorization`` header back, as a careless API or proxy might,
    in the shape :attr:`echo_key_kind` names (see :data:`ECHO_KINDS`)."""
    echo_key_kind: str = "400"
    """``401``, ``400``, ``422`` (nested), ``403`` (text/plain) refuse an ``/api/v1`` request with the header in
    the message; ``failed_task`` makes the next created task fail with it in the task's error."""
    stream_format: str = "task"
    """How ``/tasks/sync`` events look (the page documents none): one of :data:`STREAM_FORMATS`. Not a fault as such:
    each is a plausible reading of the page, and the product must end in the image under every one."""
    output_bytes: bytes | None = None
    """While set, every output download serves these bytes (as ``image/png``, whatever they are) instead of
    the rendered placeholder: how a test hands the client an EPS, a BMP or a decompression bomb. Set from
    Python only (tests and benchmarks); ``POST /_emulator/faults`` cannot carry bytes."""

    def reset(self) -> None:
        """Switch every fault off."""
        for f in fields(self):
            setattr(self, f.name, f.default)


class CutResponse(Response):
    """Announces the full body, sends half of it, then breaks the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: len(self.body) // 2], "more_body": True})
        raise ConnectionAborted


class FaultInjector:
    """Applies :attr:`faults` where the contract asks, and counts what fired."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self.chaos_fired: Counter[str] = Counter()
        """Chaos faults that fired, by kind (see :data:`CHAOS_KINDS`)."""
        self.hostile_fired: Counter[str] = Counter()
        """Hostile answers sent, by kind (see :data:`HOSTILE_KINDS`)."""
        self.hostile_streams = 0
        """Hostile bodies being streamed right now (a live gauge: :meth:`reset` leaves it alone)."""
        self._rng = random.Random(faults.chaos_seed)  # noqa: S311 - fault dice, not secrets

    def reset(self) -> None:
        """Switch every fault off, forget what fired and reseed the chaos dice."""
        self.faults.reset()
        self.chaos_fired = Counter()
        self.hostile_fired = Counter()
        self._rng.seed(self.faults.chaos_seed)

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Check every change, then apply them all; setting ``chaos_seed`` reseeds the chaos dice.

        Raises ValueError naming the first bad field, and then changes nothing.
        """
        known = {f.name for f in fields(Faults)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"Unknown fault field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        checked = {name: _check_fault(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self.faults, name, value)
        if "chaos_seed" in checked:
            self._rng.seed(self.faults.chaos_seed)

    # --- the gate: every /api/v1 request -------------------------------------------------------

    async def delay(self) -> None:
        """Wait out the latency fault."""
        if self.faults.latency > 0:
            await anyio.sleep(self.faults.latency)

    def echo(self, scope: Scope) -> Response | None:
        """An error answer that repeats the request's ``Authorization`` header (the ``echo_key`` fault), or None."""
        kind = self.faults.echo_key_kind
        if kind == "failed_task" or not self._take("echo_key"):
            return None
        header = Headers(scope=scope).get("authorization", "")
        if kind == "401":
            return error(401, "unauthorized", f"Invalid API key: {header.partition(' ')[2]}")
        if kind == "422":
            detail = {"detail": [{"loc": ["header", "authorization"], "msg": f"rejected {header}", "input": header}]}
            return JSONResponse({"error": {"code": "unprocessable", "message": detail}}, status_code=422)
        if kind == "403":
            return Response(f"Forbidden for {header}", status_code=403, media_type="text/plain")
        return error(400, "VALIDATION_ERROR", f"Request with {header} was not valid")

    def echo_in_task(self, scope: Scope) -> str | None:
        """The error a task gets when the ``echo_key`` fault of kind ``failed_task`` fires, or None."""
        if self.faults.echo_key_kind != "failed_task" or not self._take("echo_key"):
            return None
        return f"Generation failed for the account of {Headers(scope=scope).get('authorization', '')}"

    def refusal(self, scope: Scope) -> Response | None:
        """A 429 or 503 for an authorised ``/api/v1`` request, or None; leaves other chaos to the handler."""
        if self._take("rate_limit"):
            return self._rate_limited()
        if self._take("server_errors"):
            return self._unavailable()
        kind = self._roll_chaos(_chaos_kinds(scope["method"], scope["path"]))
        if kind == "rate_limit":
            self.chaos_fired[kind] += 1
            return self._rate_limited()
        if kind == "server_error":
            self.chaos_fired[kind] += 1
            return self._unavailable()
        if kind is not None:  # applied, and counted, only if the handler gets that far
            scope[_CHAOS_SCOPE_KEY] = kind
        return None

    def _rate_limited(self) -> Response:
        wait = f"{self.faults.retry_after:f}".rstrip("0").rstrip(".")  # "0.05", "2": never "5e-05"
        return error(
            429,
            "rate_limited",
            f"Too many requests (emulated); retry after {wait} seconds.",
            headers={"Retry-After": wait},
        )

    @staticmethod
    def _unavailable() -> Response:
        return error(503, "unavailable", "The service is temporarily unavailable (emulated); try again.")

    # --- creates ---------------------------------------------------------------------------------

    def refuse_create(self) -> None:
        """Raise the emulated 400 of the ``refuse_creates`` fault, if it fires."""
        if self._take("refuse_creates"):
            status = self.faults.refuse_status
            if status == 400:
                raise invalid("The API refused this request although it is valid (emulated refusal).")
            raise ApiError(status, f"emulated_{status}", f"The API answered {status} to this create (emulated).")

    def fail_task(self) -> bool:
        """Whether the task being created is to end ``failed``."""
        return self._take("fail_tasks")

    def lose_create(self, request: Request) -> bool:
        """Whether the answer to this create (new or replayed) is to be lost after the task exists."""
        return self._take("lose_create_responses") or self._chaos_hit(request, "lost_create")

    @staticmethod
    def lost_answer(body: bytes) -> Response:
        """A create answer that breaks halfway."""
        return CutResponse(body, media_type="application/json")

    @staticmethod
    def lost_stream() -> Response:
        """A create stream that breaks before its first event."""
        return sse_response(_lost_stream())

    # --- answers ---------------------------------------------------------------------------------

    def api_answer(self, request: Request, shape: str, body: dict[str, Any]) -> Response:
        """``body`` as JSON, unless a hostile fault replaces it (``shape``: task, list or upload)."""
        kind = self._take_hostile(request, hostile.HOSTILE_API)
        if kind is None:
            return JSONResponse(body)
        return hostile.api_answer(kind, shape, self._streaming)

    def hostile_create(self, request: Request) -> Response | None:
        """A hostile answer to a create whose task is already made (see ``HOSTILE_CREATE``), or None."""
        kind = self._take_hostile(request, hostile.HOSTILE_CREATE)
        return None if kind is None else hostile.create_answer(kind)

    def sync_stream(
        self,
        request: Request,
        events: AsyncGenerator[bytes, None],
        *,
        task_id: str,
        model: str,
        created_at: str,
        interval: float,
    ) -> Response:
        """The SSE answer of a sync create: ``events``, dropped after the first one, or a hostile stream."""
        kind = self._take_hostile(request, hostile.HOSTILE_STREAM)
        if kind is not None:
            return hostile.stream_answer(
                kind, task_id=task_id, model=model, created_at=created_at, interval=interval, streaming=self._streaming
            )
        if self._take("drop_streams") or self._chaos_hit(request, "dropped_stream"):
            return sse_response(_first_only(events))
        return sse_response(events)

    def hostile_download(self, request: Request, base: str) -> Response | None:
        """A hostile answer to an output download (``base``: this emulator's URL), or None."""
        kind = self._take_hostile(request, hostile.HOSTILE_DOWNLOAD)
        return None if kind is None else hostile.download_answer(kind, request, base, self._streaming)

    def output_file(self) -> bytes | None:
        """The bytes to serve for an output instead of its rendered image (:attr:`Faults.output_bytes`), or None."""
        return self.faults.output_bytes

    def cut_download(self, body: bytes, status: int, headers: Mapping[str, str], media_type: str) -> Response | None:
        """A file answer that breaks halfway, if the ``cut_downloads`` fault or chaos fires; else None."""
        if self._take("cut_downloads") or self._fire_chaos("cut_download"):
            return CutResponse(body, status_code=status, headers=headers, media_type=media_type)
        return None

    # --- state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What fired and the current faults, for ``GET /_emulator/state``."""
        faults = asdict(self.faults)
        if faults["output_bytes"] is not None:  # JSON has no bytes: say how many are served
            faults["output_bytes"] = f"{len(faults['output_bytes'])} bytes"
        return {
            "chaos_fired": dict(self.chaos_fired),
            "hostile_fired": dict(self.hostile_fired),
            "faults": faults,
        }

    # --- machinery -------------------------------------------------------------------------------

    def _take(self, fault: str) -> bool:
        """Consume one unit of a counting fault; True when it fires."""
        left: int = getattr(self.faults, fault)
        if left <= 0:
            return False
        setattr(self.faults, fault, left - 1)
        return True

    def _roll_chaos(self, kinds: tuple[str, ...]) -> str | None:
        """With probability ``faults.chaos``, one of ``kinds`` picked uniformly; else None."""
        rate = self.faults.chaos
        if rate <= 0 or not kinds or self._rng.random() >= rate:
            return None
        return self._rng.choice(kinds)

    def _chaos_hit(self, request: Request, kind: str) -> bool:
        """True (and counted) when the gate chose chaos fault ``kind`` for this request."""
        if request.scope.get(_CHAOS_SCOPE_KEY) != kind:
            return False
        del request.scope[_CHAOS_SCOPE_KEY]
        self.chaos_fired[kind] += 1
        return True

    def _fire_chaos(self, kind: str) -> bool:
        """Roll the chaos dice for a request to which only ``kind`` applies; True (and counted) if it fires."""
        if self._roll_chaos((kind,)) is None:
            return False
        self.chaos_fired[kind] += 1
        return True

    def _take_hostile(self, request: Request, applicable: tuple[str, ...]) -> str | None:
        """The hostile kind to answer ``request`` with (consumed and counted), or None to answer normally."""
        kind = self.faults.hostile_kind
        if request.method == "HEAD" or kind not in applicable or not self._take("hostile"):
            return None
        self.hostile_fired[kind] += 1
        return kind

    async def _streaming(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``chunks``, counted in :attr:`hostile_streams` while they flow; each chunk is a checkpoint.

        The checkpoint lets the event loop serve other requests and lets Starlette cancel the stream
        the moment the client disconnects (uvicorn silently drops writes to a closed connection).
        """
        self.hostile_streams += 1
        try:
            async for chunk in chunks:
                yield chunk
                await anyio.lowlevel.checkpoint()
        finally:
            self.hostile_streams -= 1


def _chaos_kinds(method: str, path: str) -> tuple[str, ...]:
    """The chaos faults that apply to an ``/api/v1`` request."""
    if method == "POST" and path == f"{API_PREFIX}/tasks/async":
        return ("rate_limit", "server_error", "lost_create")
    if method == "POST" and path == f"{API_PREFIX}/tasks/sync":
        return ("rate_limit", "server_error", "lost_create", "dropped_stream")
    return ("rate_limit", "server_error")


_CHOICES: dict[str, tuple[str, ...]] = {
    "hostile_kind": hostile.HOSTILE_KINDS,
    "echo_key_kind": ECHO_KINDS,
    "stream_format": STREAM_FORMATS,
}


_NULLABLE: dict[str, tuple[type, str]] = {
    "output_bytes": (bytes, "output_bytes is set from Python only (bytes or None); JSON cannot carry the bytes."),
    "fail_message": (str, "fail_message must be a string or null."),
}
"""Faults that are None or a value of one type, and what to say about any other value."""


def _check_fault(name: str, value: Any) -> Any:
    """``value`` if it is a valid setting of fault ``name``; else ValueError saying why."""
    choices = _CHOICES.get(name)
    if choices is not None:
        if isinstance(value, str) and value in choices:
            return value
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    if name == "refuse_status":
        if isinstance(value, int) and not isinstance(value, bool) and 400 <= value < 500:
            return value
        raise ValueError(f"refuse_status must be a 4xx status, got {value!r}.")
    if name in _NULLABLE:
        if value is None or isinstance(value, _NULLABLE[name][0]):
            return value
        raise ValueError(_NULLABLE[name][1])
    if name == "chaos_seed":
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        raise ValueError(f"chaos_seed must be an integer or null, got {value!r}.")
    if isinstance(Faults.__dataclass_fields__[name].default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
        if name == "chaos" and value > 1:
            raise ValueError(f"chaos is a probability from 0 to 1, got {value!r}.")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}.")
    return value


# --- broken streams --------------------------------------------------------------------------------


async def _lost_stream() -> AsyncIterator[bytes]:
    """A stream that breaks before its first event."""
    raise ConnectionAborted
    yield b""  # pragma: no cover - makes this an async generator


async def _first_only(events: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """The first chunk of ``events``, then a broken connection."""
    async with aclosing(events):
        async for chunk in events:
            yield chunk
            raise ConnectionAborted
