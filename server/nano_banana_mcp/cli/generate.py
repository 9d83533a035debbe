"""``nano-banana-mcp generate``: one request from the command line, with a progress bar on a terminal; prints the
saved paths (or the result as JSON)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

import anyio

from nano_banana_mcp import catalog
from nano_banana_mcp.cli.arguments import Parser, seconds
from nano_banana_mcp.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_PENDING
from nano_banana_mcp.cli.settings import add_settings_flags
from nano_banana_mcp.errors import InvalidRequest
from nano_banana_mcp.terminal import printable

if TYPE_CHECKING:
    from nano_banana_mcp.catalog import GenerateRequest
    from nano_banana_mcp.config import Settings
    from nano_banana_mcp.tasks import Service, TaskResult

__all__ = ["add_parser", "run"]

_BAR_WIDTH = 30


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    """``generate``: the request's fields, ``--wait`` and ``--json``."""
    gen = sub.add_parser(
        "generate",
        help="generate images and print the saved paths",
        description="Generate images and print each saved file's path (or the whole result with --json).",
        epilog=f"models:\n{catalog.summary()}\n\n"
        "exit codes: 0 saved, 1 the task failed, 2 invalid request, 3 configuration (no key), "
        "4 API or network error, 5 still running when --wait ran out (its task id is printed)\n\n"
        'example: nano-banana-mcp generate --offline "a cute cat in a garden" --aspect-ratio 16:9',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("prompt", help="what to draw, or how to change the reference images")
    gen.add_argument(
        "--model", default=catalog.DEFAULT, choices=list(catalog.MODELS), help=f"(default {catalog.DEFAULT})"
    )
    gen.add_argument(
        "--aspect-ratio", dest="aspect_ratio", choices=list(catalog.ASPECT_RATIOS), help="each model has its own set"
    )
    gen.add_argument("--resolution", choices=list(catalog.RESOLUTIONS), help="not for nano-banana-1")
    gen.add_argument(
        "--image",
        dest="images",
        action="append",
        default=[],
        metavar="REFERENCE",
        help="reference image, repeatable: a path, an https:// URL, a data: URI or an earlier result's "
        "nano-banana://tasks/ID/images/N",
    )
    gen.add_argument(
        "--count", type=int, default=1, choices=range(1, catalog.MAX_COUNT + 1), help="images to make (default 1)"
    )
    gen.add_argument(
        "--request-id",
        dest="request_id",
        metavar="ID",
        help="your own id for this request: run again with the same id (after a crash or a cut connection), it "
        "collects the same tasks instead of paying for new ones",
    )
    gen.add_argument(
        "--output-format", dest="output_format", choices=list(catalog.OUTPUT_FORMATS), help="convert the saved files"
    )
    gen.add_argument(
        "--wait",
        type=seconds,
        default=600.0,
        help="seconds to wait before printing the task id instead (default 600)",
    )
    out = gen.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the result as JSON")
    out.add_argument(
        "--media",
        action="store_true",
        help="print a MEDIA:<absolute path> line per saved image, as OpenClaw's reply attachments read them",
    )
    add_settings_flags(gen)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Generate, print the saved paths (or the result as JSON); the exit code says saved, failed or still running."""
    from pydantic import ValidationError  # noqa: PLC0415

    from nano_banana_mcp.catalog import GenerateRequest  # noqa: PLC0415
    from nano_banana_mcp.runtime import open_service  # noqa: PLC0415

    try:
        request = GenerateRequest(
            prompt=args.prompt,
            model=args.model,
            images=tuple(args.images),
            aspect_ratio=args.aspect_ratio,
            resolution=args.resolution,
            output_format=args.output_format,
        )
    except ValidationError as err:
        raise InvalidRequest(str(err)) from err
    show_bar = not args.json and sys.stderr.isatty()
    async with open_service(settings) as service:
        if show_bar:
            result = await _with_progress_bar(service, request, args.wait, args.count, args.request_id)
        else:
            result = await service.generate(request, args.wait, count=args.count, request_id=args.request_id)
    if args.json:
        print(result.model_dump_json(indent=2))
    elif result.status == "success":
        for image in result.images:
            where = image.path or image.url or ""
            print(printable(f"MEDIA:{where}" if args.media else where))
        if result.offline:
            print("note: offline mode, these are emulator placeholders", file=sys.stderr)
    elif result.status == "failed":
        print(printable(result.summary()), file=sys.stderr)
    else:
        problem = f" Problem: {result.error}" if result.error else ""
        print(
            printable(
                f"Task {result.task_id} is still {result.status}.{problem} It is kept in the ledger and finished by "
                "the next nano-banana-mcp that runs here (never charged twice); `nano-banana-mcp tasks` lists it."
            ),
            file=sys.stderr,
        )
    if result.status == "success":
        return EXIT_OK
    return EXIT_FAILED if result.status == "failed" else EXIT_PENDING


async def _with_progress_bar(
    service: Service, request: GenerateRequest, wait: float, count: int, request_id: str | None
) -> TaskResult:
    """A one-line bar on stderr (terminals only), redrawn as the task moves and twice a second."""
    started = time.monotonic()
    done, status = 0.0, "submitting"

    def draw() -> None:
        filled = int(_BAR_WIDTH * done / 100)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        elapsed = time.monotonic() - started
        sys.stderr.write(f"\r{request.model}: {status:<10} [{bar}] {done:3.0f}% {elapsed:5.1f}s")
        sys.stderr.flush()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal done, status
        done, status = progress, (message or "").split(" ")[0]
        draw()

    async def tick() -> None:
        while True:
            draw()
            await anyio.sleep(0.5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        try:
            result = await service.generate(request, wait, on_progress, count=count, request_id=request_id)
        finally:
            tg.cancel_scope.cancel()
            sys.stderr.write("\r\x1b[2K")  # clear the bar; the result follows on stdout
            sys.stderr.flush()
    return result
