"""The bounded SSE reader: events as the spec splits them, and never a line or event over the limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import anyio
import anyio.lowlevel
import httpx
import pytest

from nano_banana_mcp.errors import MalformedResponse
from nano_banana_mcp.monet.sse import sse_data

pytestmark = pytest.mark.anyio


def streamed(chunks: Iterable[bytes]) -> httpx.Response:
    """A response whose body arrives in these chunks."""

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            await anyio.lowlevel.checkpoint()  # lets fail_after stop a reader that never stops by itself
            yield chunk

    return httpx.Response(200, content=body())


async def events(chunks: Iterable[bytes], limit: int = 1000) -> list[str]:
    with anyio.fail_after(5):
        return [data async for data in sse_data(streamed(chunks), limit)]


async def test_each_blank_line_ends_an_event() -> None:
    """Every event's data is yielded, in order, with one leading space stripped."""
    stream = b'event: progress\ndata: {"id": "t"}\n\nevent: done\ndata:{"id": "t"}\n\n'
    assert await events([stream]) == ['{"id": "t"}', '{"id": "t"}']


async def test_multi_line_data_is_joined_with_newlines() -> None:
    """Several data lines of one event make one value, joined by a newline."""
    assert await events([b"data: first\ndata: second\ndata:  indented\n\n"]) == ["first\nsecond\n indented"]


async def test_comments_and_other_fields_are_skipped() -> None:
    """Comments, event names, ids, retry hints and events without data yield nothing."""
    stream = b": keep-alive\n\nevent: ping\nid: 7\nretry: 1000\n\ndata: x\n\n"
    assert await events([stream]) == ["x"]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
async def test_every_line_ending_is_understood(newline: bytes) -> None:
    """LF, CRLF and a lone CR all end lines."""
    stream = newline.join([b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert await events([stream]) == ["a\nb", "c"]


async def test_lines_split_across_chunks_are_joined() -> None:
    """An event that arrives a few bytes at a time is read whole."""
    stream = b'data: {"id": "task_1", "status": "processing"}\n\n'
    assert await events([stream[i : i + 3] for i in range(0, len(stream), 3)]) == [
        '{"id": "task_1", "status": "processing"}'
    ]


async def test_a_crlf_split_across_chunks_is_one_line_ending() -> None:
    """A CRLF whose CR and LF arrive in different chunks ends one line, not the event."""
    assert await events([b"data: a\r", b"\ndata: b\r\n\r\n"]) == ["a\nb"]


async def test_a_line_over_the_limit_is_refused_without_reading_on() -> None:
    """A line that never ends is refused once it passes the limit, not buffered forever."""

    def endless() -> Iterable[bytes]:
        yield b"data: "
        while True:
            yield b"x" * 100

    with pytest.raises(MalformedResponse, match="line"):
        await events(endless(), limit=1000)


async def test_an_event_over_the_limit_is_refused_without_reading_on() -> None:
    """An event of many short data lines is refused once its data passes the limit."""

    def endless() -> Iterable[bytes]:
        while True:
            yield b"data: xxxxxxxxxx\n"

    with pytest.raises(MalformedResponse, match="event"):
        await events(endless(), limit=1000)


async def test_an_event_at_the_limit_is_read() -> None:
    """The limit is inclusive: an event of exactly `limit` characters of data is yielded."""
    assert await events([b"data: " + b"x" * 1000 + b"\n\n"], limit=1000) == ["x" * 1000]
