"""nano-banana-mcp: Google's Nano Banana image models for AI agents, over MCP, through the Monet AI API."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nano-banana-mcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__", "main"]


def main() -> None:
    """Entry point of the ``nano-banana-mcp`` command."""
    from nano_banana_mcp.cli import main as cli_main  # noqa: PLC0415 - keep `import nano_banana_mcp` light

    cli_main()
