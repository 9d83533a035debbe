"""A bounded reader of server-sent events: the ``data`` of each event, never a line or event over a limit."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx

from nano_banana_mcp.errors import MalformedResponse

__all__ = ["sse_data"]

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


async def sse_data(response: httpx.Response, limit: int) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event, refusing any line or event over ``limit`` characters.

    httpx-sse buffers a line without limit, so a hostile stream could exhaust memory; this does not. Each chunk is
    searched for line breaks once: a long line arriving in many chunks costs time in proportion to its length, not to
    its square.
    """
    pieces: list[str] = []  # the line not ended yet, in the chunks it came in
    pending = 0  # their length
    held = ""  # a CR at the end of a chunk may be the first half of a CRLF: kept until the next chunk says
    data: list[str] = []
    size = 0
    async for chunk in response.aiter_text():
        text, held = held + chunk, ""
        if text.endswith("\r"):
            text, held = text[:-1], "\r"
        if not _LINE_BREAK.search(text):
            pieces.append(text)
            pending += len(text)
            if pending > limit:
                raise MalformedResponse(f"The Monet API sent a stream line over {limit / 1e6:.0f} MB; it was not read.")
            continue
        first, *lines = _LINE_BREAK.split(text)
        rest = lines.pop()
        lines.insert(0, "".join(pieces) + first)
        pieces, pending = [rest], len(rest)
        if pending > limit:
            raise MalformedResponse(f"The Monet API sent a stream line over {limit / 1e6:.0f} MB; it was not read.")
        for line in lines:
            if not line:
                if data:
                    yield "\n".join(data)
                data, size = [], 0
            elif line.startswith("data:"):
                value = line[6:] if line.startswith("data: ") else line[5:]
                size += len(value)
                if size > limit:
                    raise MalformedResponse(f"The Monet API sent a stream event over {limit / 1e6:.0f} MB.")
                data.append(value)
    if data:
        yield "\n".join(data)
