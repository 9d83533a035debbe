"""``nano-banana-mcp emulator``: the Monet-compatible emulator, served on its own until Ctrl-C."""

from __future__ import annotations

import argparse
import functools
import sys

import anyio

from nano_banana_mcp import collector
from nano_banana_mcp.cli.arguments import Parser, port, seconds
from nano_banana_mcp.cli.exits import EXIT_OK
from nano_banana_mcp.errors import ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    """``emulator``: where it listens, the key it accepts, how long a task takes."""
    emu = sub.add_parser("emulator", help="run the Monet-compatible emulator on 127.0.0.1")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=port, default=8787, help="(default 8787; 0: any free port)")
    emu.add_argument("--api-key", dest="api_key", default="monet_offline", help="the key it accepts")
    emu.add_argument(
        "--task-seconds",
        dest="task_seconds",
        type=seconds,
        default=4.0,
        help="how long a task takes (default 4)",
    )
    emu.add_argument("--control", action="store_true", help="serve /_emulator/state and /_emulator/faults to steer it")


def run(args: argparse.Namespace) -> int:
    """Serve the emulator until Ctrl-C."""
    from nano_banana_mcp.emulator import Emulator, serve  # noqa: PLC0415
    from nano_banana_mcp.sockets import listening_socket  # noqa: PLC0415

    emulator = Emulator(api_key=args.api_key, task_seconds=args.task_seconds, control=args.control)
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as err:
        raise ConfigError(
            f"Cannot listen on {args.host} port {args.port}: {err.strerror or err}. Choose another --port "
            "(0: any free port)."
        ) from err
    print(
        f"Monet emulator on http://{args.host}:{sock.getsockname()[1]} (key {args.api_key}); Ctrl-C to stop",
        file=sys.stderr,
    )
    collector.started()
    anyio.run(functools.partial(serve, emulator, args.host, sock=sock))
    return EXIT_OK
