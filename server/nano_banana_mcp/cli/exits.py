"""The CLI's exit codes, and which one each kind of error ends the command with."""

from __future__ import annotations

from nano_banana_mcp.errors import (
    ConfigError,
    InvalidRequest,
    MonetConnectionError,
    MonetError,
    NanoBananaError,
    ReferenceImageError,
)

__all__ = ["EXIT_API", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "EXIT_PENDING", "EXIT_USAGE", "exit_code"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_API, EXIT_PENDING = 0, 1, 2, 3, 4, 5


def exit_code(err: NanoBananaError) -> int:
    """The exit code of a command that ended with ``err``."""
    if isinstance(err, ConfigError):
        return EXIT_CONFIG
    if isinstance(err, InvalidRequest | ReferenceImageError):
        return EXIT_USAGE
    if isinstance(err, MonetError | MonetConnectionError):
        return EXIT_API
    return EXIT_FAILED
