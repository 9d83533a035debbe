"""The ``nano-banana-mcp`` command: serve MCP (default), generate, tasks, models, sets, emulator, install, uninstall,
doctor.

This module wires the parser and dispatches; each command group has its own module (``serve``, ``generate``,
``listing`` for tasks and models, ``sets``, ``emulator``, ``install`` for install and uninstall, ``doctor``), the
settings flags they share are in ``settings`` and the exit codes in ``exits``.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence

import anyio

from nano_banana_mcp import collector
from nano_banana_mcp.cli.arguments import Parser
from nano_banana_mcp.cli.exits import exit_code, own_error
from nano_banana_mcp.cli.settings import settings_from
from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.observability import logs
from nano_banana_mcp.terminal import printable

__all__ = ["build_parser", "main"]

_COMMANDS = ("serve", "generate", "tasks", "models", "sets", "usage", "emulator", "install", "uninstall", "doctor")
"""Every command, in the order the help lists them."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line: each group's subcommand, in the order its help lists them. With ``command``, that
    command's alone: a command's module is imported only when its parser is built, so a start of ``install`` (as
    hosts and scripts run it) does not import what ``generate`` or ``serve`` need (~0.2 s of every start)."""
    parser = Parser(
        prog="nano-banana-mcp",
        description="Nano Banana image generation for AI agents: an MCP server (the default command) and a CLI. "
        "Set MONET_API_KEY, or use --offline to try it with the built-in emulator.",
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        if command is None or name == command:
            _add_parser(sub, name)
    return parser


def _add_parser(sub: argparse._SubParsersAction[Parser], command: str) -> None:
    # the imports are here on purpose: see build_parser
    if command == "serve":
        from nano_banana_mcp.cli import serve  # noqa: PLC0415

        return serve.add_parser(sub)
    if command == "generate":
        from nano_banana_mcp.cli import generate  # noqa: PLC0415

        return generate.add_parser(sub)
    if command in ("tasks", "models"):
        from nano_banana_mcp.cli import listing  # noqa: PLC0415

        return listing.add_tasks_parser(sub) if command == "tasks" else listing.add_models_parser(sub)
    if command == "sets":
        from nano_banana_mcp.cli import sets  # noqa: PLC0415

        return sets.add_parser(sub)
    if command == "usage":
        from nano_banana_mcp.cli import usage  # noqa: PLC0415

        return usage.add_parser(sub)
    if command == "emulator":
        from nano_banana_mcp.cli import emulator  # noqa: PLC0415

        return emulator.add_parser(sub)
    if command in ("install", "uninstall"):
        from nano_banana_mcp.cli import install  # noqa: PLC0415

        return install.add_parser(sub, command)
    if command == "doctor":
        from nano_banana_mcp.cli import doctor  # noqa: PLC0415

        return doctor.add_parser(sub)
    raise AssertionError(command)


class _Version(argparse.Action):
    """``--version``: the installed version, read only when asked for (see ``nano_banana_mcp.__version__``)."""

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from nano_banana_mcp import __version__  # noqa: PLC0415

        print(f"{parser.prog} {__version__}")  # on stdout, as argparse's own version action prints
        parser.exit()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``nano-banana-mcp`` command (and of ``python -m nano_banana_mcp``)."""
    collector.starting()  # until the command runs (collector.started): its imports make only long-lived objects
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in _COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # `nano-banana-mcp [--offline ...]` is how MCP hosts start the server
    parser = build_parser(argv[0] if argv[0] in _COMMANDS else None)
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
    # On its way out the interpreter collects garbage over every object still alive, those start-up made included (the
    # SDK's and pydantic's types and schemas): ~0.1 s of CPU at every exit. Frozen, they are left alone; what is
    # closed is closed already (every file, ledger and client is closed by its own `with`).
    gc.freeze()
    sys.exit(code)


def _dispatch(command: str, args: argparse.Namespace) -> int:
    # each branch imports its command's module (build_parser did already): no command pays for another's imports
    if command == "models":
        from nano_banana_mcp.cli import listing  # noqa: PLC0415

        return listing.run_models(json_out=args.json)
    if command == "emulator":
        from nano_banana_mcp.cli import emulator  # noqa: PLC0415

        return emulator.run(args)
    if command in ("install", "uninstall"):
        from nano_banana_mcp.cli import install  # noqa: PLC0415

        return install.run(command, args)
    settings = settings_from(args)
    if command == "serve":
        from nano_banana_mcp.cli import serve  # noqa: PLC0415

        return serve.run(settings, args)
    if command == "generate":
        from nano_banana_mcp.cli import generate  # noqa: PLC0415

        return anyio.run(generate.run, settings, args)
    if command == "tasks":
        from nano_banana_mcp.cli import listing  # noqa: PLC0415

        return anyio.run(listing.run_tasks, settings, args)
    if command == "sets":
        from nano_banana_mcp.cli import sets  # noqa: PLC0415

        return anyio.run(sets.run, settings, args)
    if command == "usage":
        from nano_banana_mcp.cli import usage  # noqa: PLC0415

        return anyio.run(usage.run, settings, args)
    if command == "doctor":
        from nano_banana_mcp.cli import doctor  # noqa: PLC0415

        return anyio.run(doctor.run, settings, args)
    raise AssertionError(command)
