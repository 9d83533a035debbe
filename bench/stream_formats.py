"""Each plausible ``/tasks/sync`` event format against the product: creates, create requests, seconds to the image.

    .venv/bin/python bench/stream_formats.py [--task-seconds 3] [--give-up 40]

The page documents no event format, so the emulator plays five (``nano_banana_mcp.emulator.STREAM_FORMATS``). For
each, one fresh process state (own data and output folders) generates one image through ``open_service`` and waits
up to ``--give-up`` seconds. Reported per format: tasks the API made, create requests sent (``/tasks/sync`` and
``/tasks/async``), other API requests, whether the image was saved, and the seconds from the call to the saved image.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
from pydantic import SecretStr

from _common import KEY, write
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import STREAM_FORMATS, Emulator, serve_in_thread
from nano_banana_mcp.runtime import open_service

CREATES = ("/api/v1/tasks/sync", "/api/v1/tasks/async")


async def one(emulator: Emulator, base_url: str, stream_format: str, give_up: float) -> dict[str, object]:
    emulator.reset()
    emulator.faults.stream_format = stream_format
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings(api_key=SecretStr(KEY), base_url=base_url, output_dir=root / "out", data_dir=root / "data")
        started = time.perf_counter()
        saved, seconds, status = False, None, "timeout"
        with anyio.move_on_after(give_up + 5):
            async with open_service(settings) as service:
                result = await service.generate(GenerateRequest(prompt=f"a {stream_format} cat"), give_up)
                status = result.status
                saved = bool(result.images and result.images[0].path and Path(result.images[0].path).is_file())
                seconds = round(time.perf_counter() - started, 2) if saved else None
    api = [r for r in emulator.requests if r.path.startswith("/api/v1/")]
    return {
        "format": stream_format,
        "status": status,
        "image_saved": saved,
        "seconds_to_image": seconds,
        "tasks_made": emulator.creates,
        "create_requests": sum(r.path in CREATES for r in api),
        "other_api_requests": sum(r.path not in CREATES for r in api),
    }


async def main(task_seconds: float, give_up: float) -> None:
    emulator = Emulator(api_key=KEY, task_seconds=task_seconds)
    with serve_in_thread(emulator) as base_url:
        rows = [await one(emulator, base_url, fmt, give_up) for fmt in STREAM_FORMATS]
    print(f"{'format':<20} {'status':<8} {'saved':<6} {'seconds':>8} {'made':>5} {'creates':>8} {'other':>6}")
    for r in rows:
        print(
            f"{r['format']:<20} {r['status']:<8} {r['image_saved']!s:<6} {r['seconds_to_image']!s:>8} "
            f"{r['tasks_made']:>5} {r['create_requests']:>8} {r['other_api_requests']:>6}"
        )
    write("stream_formats", {"task_seconds": task_seconds, "give_up": give_up, "rows": rows})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-seconds", type=float, default=3.0)
    parser.add_argument("--give-up", type=float, default=40.0)
    args = parser.parse_args()
    anyio.run(main, args.task_seconds, args.give_up)
