"""CPU time the SSE reader spends on a hostile stream: one 9 MiB line in 64 KiB chunks, refused at the 8 MiB limit.

    .venv/bin/python bench/sse_long_line.py [--runs 5]

Prints the median seconds to refuse it (the reader must scan each chunk once, not the whole line again per chunk).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import AsyncIterator

import anyio
import httpx

from _common import write
from nano_banana_mcp.errors import MalformedResponse
from nano_banana_mcp.monet.sse import sse_data

LIMIT = 8 * 1024 * 1024
BODY = b"event: progress\ndata: " + b"x" * (9 * 1024 * 1024)


async def once() -> float:
    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(BODY), 65536):
            yield BODY[start : start + 65536]

    response = httpx.Response(200, content=chunks())
    started = time.perf_counter()
    try:
        async for _ in sse_data(response, LIMIT):
            pass
    except MalformedResponse:
        pass
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times = [anyio.run(once) for _ in range(args.runs)]
    write("sse_long_line", {"runs": args.runs, "median_s": round(statistics.median(times), 4)})


if __name__ == "__main__":
    main()
