"""``nano-banana-mcp tasks`` and ``models``: the recent tasks (this machine's ledger and the API's list) and the model
catalogue, as a table or JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from nano_banana_mcp import catalog
from nano_banana_mcp.cli.arguments import Parser, positive
from nano_banana_mcp.cli.exits import EXIT_OK
from nano_banana_mcp.cli.settings import add_settings_flags
from nano_banana_mcp.terminal import printable

if TYPE_CHECKING:
    from nano_banana_mcp.config import Settings

__all__ = ["add_models_parser", "add_tasks_parser", "run_models", "run_tasks"]


def add_tasks_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    """``tasks``: a page of the list, optionally of one status."""
    tasks = sub.add_parser("tasks", help="list recent tasks (this machine's ledger and the API's list)")
    tasks.add_argument("--page", type=positive, default=1)
    tasks.add_argument("--page-size", dest="page_size", type=positive, default=20)
    tasks.add_argument("--status", choices=["pending", "running", "success", "failed"], help="only these")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    add_settings_flags(tasks)


def add_models_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    """``models``: takes no settings (it reads nothing but the catalogue)."""
    models = sub.add_parser("models", help="print the model catalogue")
    models.add_argument("--json", action="store_true", help="print JSON")


async def run_tasks(settings: Settings, args: argparse.Namespace) -> int:
    """Print a page of recent tasks, one line each (or JSON); a note when the API's list could not be read."""
    from nano_banana_mcp.runtime import open_service  # noqa: PLC0415

    async with open_service(settings) as service:
        listing = await service.list_tasks(args.page, args.page_size, args.status)
    if args.json:
        print(listing.model_dump_json(indent=2))
        return EXIT_OK
    if listing.api_error:
        print(printable(f"note: {listing.api_error}"), file=sys.stderr)
    if not listing.tasks:
        print('No tasks yet. Try: nano-banana-mcp generate --offline "a cute cat"', file=sys.stderr)
        return EXIT_OK
    for task in listing.tasks:
        when = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M") if task.created_at else "-"
        where = " ".join(task.paths) or (task.error or task.prompt)
        print(printable(f"{task.task_id:<22} {task.status:<8} {when}  {task.model:<18} {where}"))
    return EXIT_OK


def run_models(*, json_out: bool) -> int:
    """Print the catalogue as a table (or JSON)."""
    if json_out:
        print(json.dumps([m.model_dump() for m in catalog.model_info()], indent=2))
    else:
        print("\n".join(printable(row) for row in catalog.markdown_table().splitlines()))
    return EXIT_OK
