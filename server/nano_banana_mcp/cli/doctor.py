"""``nano-banana-mcp doctor``: check the setup without paying for anything, as a table or JSON."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from nano_banana_mcp.cli.arguments import Parser
from nano_banana_mcp.cli.exits import EXIT_FAILED, EXIT_OK
from nano_banana_mcp.cli.settings import add_settings_flags
from nano_banana_mcp.install import DEFAULT_NAME

if TYPE_CHECKING:
    from nano_banana_mcp.config import Settings

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    """``doctor``: JSON or a table, the name to look for in the hosts, and the tokens file to check."""
    doctor = sub.add_parser(
        "doctor",
        help="check the setup (key, API, folders, ledger, host entries, team settings); pays for nothing",
        description="Check this setup without paying for anything: the key (with one read of the task list, which "
        "creates nothing), the API's round-trip time, the data and output folders, the ledger, the create path in use, "
        "the entries `install` wrote in each host's config, and when set the bucket, the database and the tokens file. "
        "It never creates a task, and never shows a key, password or token.",
        epilog="exit codes: 0 no check failed (warnings allowed), 1 a check failed, 3 a setting is invalid\n\n"
        "example: nano-banana-mcp doctor --offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--json", action="store_true", help="print a JSON list of {check, status, detail}")
    doctor.add_argument("--name", default=DEFAULT_NAME, help=f"the server's name in the hosts (default {DEFAULT_NAME})")
    doctor.add_argument(
        "--auth-tokens-file",
        dest="http_tokens_file",
        type=Path,
        metavar="PATH",
        help="the tokens file `serve --http` is given, to check [NANO_BANANA_HTTP_TOKENS_FILE]",
    )
    add_settings_flags(doctor)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run every check and print them; a failed check fails the command."""
    from nano_banana_mcp import doctor  # noqa: PLC0415

    checks = await doctor.run_checks(settings, name=args.name)
    print(doctor.as_json(checks) if args.json else doctor.table(checks))
    return EXIT_FAILED if doctor.failed(checks) else EXIT_OK
