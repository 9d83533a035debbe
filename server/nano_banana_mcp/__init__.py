"""nano-banana-mcp: Google's Nano Banana image models for AI agents, over MCP, through the Monet AI API.

The command is :func:`nano_banana_mcp.cli.main` (the ``nano-banana-mcp`` console script, and ``python -m
nano_banana_mcp``).

``__version__`` is read from the installed distribution's metadata when first asked for, not on import:
``importlib.metadata`` costs every start of the command ~40 ms (``install``, ``models`` and the rest never need it)."""

from __future__ import annotations

from functools import cache

__all__ = ["__version__"]  # given by __getattr__ below


@cache
def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("nano-banana-mcp")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
