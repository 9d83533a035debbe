"""nano-banana-mcp: Google's Nano Banana image models for AI agents, over MCP, through the Monet AI API.

The command is :func:`nano_banana_mcp.cli.main` (the ``nano-banana-mcp`` console script, and ``python -m
nano_banana_mcp``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nano-banana-mcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
