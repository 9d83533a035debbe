"""The ``nano-banana-mcp`` command: serve MCP (default), generate, tasks, models, sets, emulator, install, uninstall,
doctor.

This module wires the parser and dispatches; each command group has its own module (``serve``, ``generate``,
``listing`` for tasks and models, ``sets``, ``emulator``, ``install`` for install and uninstall, ``doctor``), the
settings flags they share are in ``settings`` and the exit codes in ``exits``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import anyio

from nano_banana_mcp import __version__
from nano_banana_mcp.cli import doctor, emulator, generate, install, listing, serve, sets, usage
from nano_banana_mcp.cli.arguments import Parser
from nano_banana_mcp.cli.exits import exit_code, own_error
from nano_banana_mcp.cli.settings import settings_from
from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.observability import logs
from nano_banana_mcp.terminal import printable

__all__ = ["build_parser", "main"]

_COMMANDS = ("serve", "generate", "tasks", "models", "sets", "emulator", "install", "uninstall", "doctor", "usage")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: each group's subcommand, in the order its help lists them."""
    parser = Parser(
        prog="nano-banana-mcp",
        description="Nano Banana image generation for AI agents: an MCP server (the default command) and a CLI. "
        "Set MONET_API_KEY, or use --offline to try it with the built-in emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_parser(sub)
    generate.add_parser(sub)
    listing.add_tasks_parser(sub)
    listing.add_models_parser(sub)
    sets.add_parser(sub)
    usage.add_parser(sub)
    emulator.add_parser(sub)
    install.add_parsers(sub)
    doctor.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``nano-banana-mcp`` command (and of ``python -m nano_banana_mcp``)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in _COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # `nano-banana-mcp [--offline ...]` is how MCP hosts start the server
    args = parser.parse_args(argv)
    command = args.command
    handler = logging.StreamHandler(sys.stderr)
    formatter, warning = logs.formatter(os.environ.get(logs.FORMAT_SETTING))  # NANO_BANANA_LOG_FORMAT: text or json
    handler.setFormatter(formatter)
    logging.basicConfig(level=getattr(args, "log_level", "WARNING"), handlers=[handler])
    if warning:
        logging.getLogger(__name__).warning(warning)
    try:
        code = _dispatch(command, args)
    except NanoBananaError as err:
        print(f"error: {printable(str(err))}", file=sys.stderr)
        code = exit_code(err)
    except KeyboardInterrupt:
        code = 130
    except BaseExceptionGroup as group:  # a task group's: ours, said as itself; anything else, as it is
        own = own_error(group)
        if own is None:
            raise
        print(f"error: {printable(str(own))}", file=sys.stderr)
        code = exit_code(own)
    sys.exit(code)


def _dispatch(command: str, args: argparse.Namespace) -> int:
    if command == "models":
        return listing.run_models(json_out=args.json)
    if command == "emulator":
        return emulator.run(args)
    if command in ("install", "uninstall"):
        return install.run(command, args)
    settings = settings_from(args)
    if command == "serve":
        return serve.run(settings, args)
    if command == "generate":
        return anyio.run(generate.run, settings, args)
    if command == "tasks":
        return anyio.run(listing.run_tasks, settings, args)
    if command == "sets":
        return anyio.run(sets.run, settings, args)
    if command == "usage":
        return anyio.run(usage.run, settings, args)
    if command == "doctor":
        return anyio.run(doctor.run, settings, args)
    raise AssertionError(command)
