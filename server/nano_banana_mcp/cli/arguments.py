"""What the command line accepts: usage errors on one line, and the argument types that refuse a bad value there."""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from nano_banana_mcp.cli.exits import EXIT_USAGE

__all__ = ["Parser", "port", "positive", "seconds"]


class Parser(argparse.ArgumentParser):
    """Usage errors on one line, saying where to read more (argparse prints the whole usage before them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}. See `{self.prog} --help`.\n")


def port(text: str) -> int:
    """A TCP port to listen on: 1 to 65535, or 0 for any free one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535 (0: any free port)")
    return value


def seconds(text: str) -> float:
    """A duration that may be zero: a finite number of seconds, not negative."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds: give 0 or more")
    return value


def positive(text: str) -> int:
    """A count or a page number: 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value
