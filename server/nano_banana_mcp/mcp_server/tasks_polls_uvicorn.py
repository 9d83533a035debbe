"""The plain ``tasks/get`` answered by uvicorn's HTTP protocol itself, as the request's last byte is parsed.

Under :class:`~nano_banana_mcp.mcp_server.tasks_polls_http.PollsFront`, a poll still cost uvicorn's ASGI cycle: a
task per request, the scope, the ``receive``/``send`` messages, and the status line and headers written apart from
the body (two writes, two packets): on this machine, uvicorn answering a trivial ASGI app cost about three times the
CPU of a bare asyncio protocol with the same parser. So where uvicorn serves the app with httptools (``serve --http``),
its protocol is this subclass: a request the gate would look at (:meth:`~PollsGate.candidate`) is held until its
body is in, then answered at once (:meth:`~PollsGate.answer_now`: the same checks, a verifier and a ledger that do
not wait) in one write, with the headers uvicorn writes (``date``, ``server``, ``content-length``, ``content-type``),
and the connection goes on as after any response (keep-alive, the next pipelined request). Anything else, and any
request the gate does not answer at once (PostgreSQL, an identity provider's tokens, SQLite busy, an error to give),
starts uvicorn's ASGI cycle as it would have, with the body already read: the app, the front, then the SDK answer it.

It relies on uvicorn's ``HttpToolsProtocol`` (0.55): ``_start_asgi_task(cycle, app)``, where a request's cycle is
started, and the cycle's ``body``, ``more_body``, ``keep_alive``, ``default_headers`` and response flags. Should a
uvicorn lack them, :func:`protocol_for` gives None and uvicorn's own protocol serves, with the front.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nano_banana_mcp.mcp_server.tasks_polls_http import PollsGate, gate_of

__all__ = ["protocol_for"]

log = logging.getLogger(__name__)

_NEEDED = ("_start_asgi_task", "on_message_complete", "on_response_complete")


def protocol_for(app: Any) -> type[asyncio.Protocol] | None:
    """uvicorn's httptools protocol answering the plain ``tasks/get`` of ``app`` (made by ``http_app``); None when
    httptools is not installed, uvicorn is not as expected, or ``app`` has no shortcut."""
    gate = gate_of(app)
    try:
        from uvicorn.protocols.http.httptools_impl import (  # noqa: PLC0415 - only with httptools installed
            STATUS_LINE,
            HttpToolsProtocol,
            RequestResponseCycle,
        )
        from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string  # noqa: PLC0415
    except ImportError:
        return None
    if gate is None or not all(hasattr(HttpToolsProtocol, name) for name in _NEEDED):
        return None
    found: PollsGate = gate
    status = STATUS_LINE[200]

    class PollsProtocol(HttpToolsProtocol):
        """uvicorn's protocol, with the plain ``tasks/get`` answered as soon as its body is in."""

        _gate: PollsGate = found
        _held: tuple[RequestResponseCycle, Any] | None = None

        def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
            waiting = getattr(cycle, "waiting_for_100_continue", True)  # (an older uvicorn: none answered here)
            if app is self.app and not waiting and self._gate.candidate(cycle.scope):
                if cycle.more_body:  # its body is still coming: answered (or started) once it is in
                    self._held = (cycle, app)
                    return
                if self._answered(cycle):
                    return
            super()._start_asgi_task(cycle, app)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            held, self._held = self._held, None
            if held is not None and not self._answered(held[0]):
                super()._start_asgi_task(*held)

        def _answered(self, cycle: RequestResponseCycle) -> bool:
            """Whether the gate answered the request of ``cycle`` (written, and the connection moved on)."""
            if cycle.disconnected or self.transport.is_closing():
                return False
            try:
                answer = self._gate.answer_now(cycle.scope, bytes(cycle.body))
                if answer is None:
                    return False
                head = [status]
                for name, value in cycle.default_headers:
                    head += [name, b": ", value, b"\r\n"]
                head += [b"content-length: ", str(len(answer)).encode(), b"\r\ncontent-type: application/json\r\n"]
                if not cycle.keep_alive:
                    head.append(b"connection: close\r\n")
                head += [b"\r\n", answer]
            except Exception:  # a bug here must not cost the request: the app answers it
                log.exception("tasks/get shortcut failed; the SDK's handler answers")
                return False
            if cycle.access_log and cycle.access_logger.isEnabledFor(logging.INFO):
                cycle.access_logger.info(
                    '%s - "%s %s HTTP/%s" %d',
                    get_client_addr(cycle.scope),
                    cycle.scope["method"],
                    get_path_with_query_string(cycle.scope),
                    cycle.scope["http_version"],
                    200,
                )
            log.debug("tasks/get answered by the HTTP protocol")
            self.transport.write(b"".join(head))
            cycle.response_started = cycle.response_complete = True
            cycle.message_event.set()
            if not cycle.keep_alive:
                self.transport.close()
            self.on_response_complete()
            return True

    return PollsProtocol
