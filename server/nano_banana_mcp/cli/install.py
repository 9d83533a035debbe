"""``nano-banana-mcp install`` and ``uninstall``: this installation's entry in an MCP host's config file, and what the
user does next (the key, the reload)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from nano_banana_mcp.cli.arguments import Parser
from nano_banana_mcp.cli.exits import EXIT_CONFIG, EXIT_OK
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.install import DEFAULT_NAME, HOSTS, KEY_VAR
from nano_banana_mcp.terminal import printable

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[Parser], command: str) -> None:
    """``install`` or ``uninstall`` (``command``): the host, the server's name, a dry run; how the key gets there."""
    if command == "uninstall":
        _add_uninstall(sub)
        return
    hosts = ", ".join(HOSTS)
    install = sub.add_parser(
        "install",
        help="register this installation's server with an MCP host",
        description=f"Register this installation's server ({hosts}) in the host's user-wide config file, by the "
        "absolute path of its console script: no PATH lookup, nothing fetched. The file is merged (other servers "
        "and keys stay), backed up as <file>.bak and written atomically; a file that is not valid JSON is refused.",
        epilog="The API key is written only with --key-from-env; otherwise the command says how the host gets it.\n\n"
        "example: nano-banana-mcp install claude-desktop --offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install.add_argument("host", choices=HOSTS, help="the MCP host")
    install.add_argument("--name", default=DEFAULT_NAME, help=f"the server's name in the host (default {DEFAULT_NAME})")
    install.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")
    key = install.add_mutually_exclusive_group()
    key.add_argument("--offline", action="store_true", help="register the server in offline mode: no key needed")
    key.add_argument(
        "--key-from-env",
        action="store_true",
        help=f"copy ${KEY_VAR} from this shell into the entry's env (the file is made readable only by you)",
    )


def _add_uninstall(sub: argparse._SubParsersAction[Parser]) -> None:
    uninstall = sub.add_parser(
        "uninstall",
        help="take the server out of an MCP host's config",
        description="Remove the server's entry from the host's config file (backed up as <file>.bak); every other "
        "server and key stays.",
    )
    uninstall.add_argument("host", choices=HOSTS, help="the MCP host")
    uninstall.add_argument("--name", default=DEFAULT_NAME, help=f"the server's name (default {DEFAULT_NAME})")
    uninstall.add_argument("--dry-run", action="store_true", help="print what would be removed; write nothing")


def run(command: str, args: argparse.Namespace) -> int:
    """``install`` or ``uninstall`` (``command``); a file that is refused is left alone and the entry printed."""
    from nano_banana_mcp import install  # noqa: PLC0415
    from nano_banana_mcp.install.openclaw import media_folder  # noqa: PLC0415

    if command == "uninstall":
        print(_lines(install.uninstall(args.host, name=args.name, dry_run=args.dry_run).report()))
        return EXIT_OK
    key = None
    if args.key_from_env:
        key = os.environ.get(KEY_VAR, "").strip()
        if not key:
            raise ConfigError(f"--key-from-env: {KEY_VAR} is not set in this shell. Set it, or leave the flag out.")
    try:
        change = install.install(args.host, name=args.name, offline=args.offline, key=key, dry_run=args.dry_run)
    except ConfigError as err:  # the file was left alone: say what to add by hand
        folder = str(media_folder({}, home=Path.home(), environ=os.environ)) if args.host == "openclaw" else None
        by_hand = install.entry_for(args.host, install.server_command(), offline=args.offline, output_dir=folder)
        entry = json.dumps(install.redacted(by_hand))
        print(f"error: {printable(str(err))}", file=sys.stderr)
        print(printable(f"The entry to add by hand, as server {args.name!r}: {entry}"), file=sys.stderr)
        if args.host == "openclaw":
            print(printable(f"or let OpenClaw write it: openclaw mcp set {args.name} '{entry}'"), file=sys.stderr)
        return EXIT_CONFIG
    print(_lines(change.report()))
    print(printable(install.key_advice(args.host, change.path, offline=args.offline, key_written=key is not None)))
    if not args.dry_run and change.action != "unchanged":
        print(_RELOAD[args.host].format(name=args.name))
    return EXIT_OK


def _lines(text: str) -> str:
    """A report of several lines, each made ``printable``."""
    return "\n".join(printable(line) for line in text.splitlines())


_RELOAD = {
    "claude-desktop": "Quit and reopen Claude Desktop to load it.",
    "claude-code": "New Claude Code sessions load it (`claude mcp get {name}` shows it); restart running ones.",
    "cursor": "Cursor loads it from Settings > MCP (toggle it on, or restart Cursor).",
    "openclaw": "The gateway loads it on the next agent turn; `openclaw mcp doctor {name} --probe` checks it.",
}
