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

__all__ = ["EXIT_API", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_OK", "EXIT_PENDING", "EXIT_USAGE", "exit_code", "own_error"]

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


def own_error(err: BaseException) -> NanoBananaError | None:
    """``err`` if it is one of our errors, or the first of them in a task group's exception group that holds nothing
    else; None otherwise (anything unexpected is shown whole)."""
    if isinstance(err, NanoBananaError):
        return err
    if isinstance(err, BaseExceptionGroup):
        found = [own_error(inner) for inner in err.exceptions]
        if found and all(own is not None for own in found):
            return found[0]
    return None
