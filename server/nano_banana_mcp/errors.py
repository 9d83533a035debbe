"""One exception tree for everything a user or an agent can see go wrong.

``str(error)`` is the text the agent reads: it says what happened and what to do next.
No error ever carries the API key or request headers.

* NanoBananaError
  + ConfigError            a setting is missing or wrong; names the env var / flag
  + DatabaseUnavailable    the team database failed while serving (the log has why; a tenant reads no address)
  + InvalidRequest         refused before anything is uploaded or paid for
  + ReferenceImageError    a reference image is missing, not an image, or too large
  + TaskNotFound           this server knows no task with that id
  + DownloadError          a finished image could not be saved (yet: it is tried again)
    x UnsavableImage       ... and never will be: not an allowed host, too large, not an image
  + MonetError             the API answered with an error (``.status_code``, ``.code``, ``.body``)
    x MonetConnectionError the API could not be reached (no status)
    x AuthError            401/403: the key is missing or refused
    x NotFound             404
    x MalformedResponse    a 2xx answer that cannot be read (bad JSON, wrong shape, too large)
    x RateLimited          429 (``.retry_after``)
    x ServerError          5xx
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "NO_KEY",
    "OFFLINE_HINT",
    "AuthError",
    "ConfigError",
    "DatabaseUnavailable",
    "DownloadError",
    "HostNotAllowed",
    "InvalidRequest",
    "MalformedResponse",
    "MonetConnectionError",
    "MonetError",
    "NanoBananaError",
    "NotFound",
    "RateLimited",
    "ReferenceImageError",
    "ServerError",
    "TaskNotFound",
    "UnsavableImage",
    "monet_error_class",
]

OFFLINE_HINT = "To try everything without a key, run with --offline (or set NANO_BANANA_OFFLINE=1)."
NO_KEY = (
    "No Monet API key is set. Set MONET_API_KEY to your key (get one at https://monet.vision; keys look like "
    f"monet_...). {OFFLINE_HINT}"
)


class NanoBananaError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(NanoBananaError):
    """A setting is missing or invalid."""


class DatabaseUnavailable(NanoBananaError):
    """The database failed while serving. Its text is for anyone: the server's log names the database and the reason."""

    def __init__(self) -> None:
        super().__init__(
            "The server's task database is not answering (database unavailable); try again in a moment. The reason "
            "is in the server's log."
        )


class InvalidRequest(NanoBananaError):
    """The request breaks a rule of the chosen model; nothing was sent."""


class ReferenceImageError(NanoBananaError):
    """A reference image cannot be used."""


class TaskNotFound(NanoBananaError):
    """No task with this id is known."""


class DownloadError(NanoBananaError):
    """A finished image could not be downloaded or saved."""


class HostNotAllowed(DownloadError):
    """The image is on a host the download allowlist does not name: kept, with its URL, until a setting allows it."""


class UnsavableImage(DownloadError):
    """A finished image that can never be saved, so it is not downloaded again: the task fails with this reason."""


class MonetError(NanoBananaError):
    """The Monet API answered with an error."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.body = body


class MonetConnectionError(MonetError):
    """The API could not be reached, or the connection broke before an answer arrived."""


class AuthError(MonetError):
    """The API key is missing or was refused."""


class NotFound(MonetError):
    """The API has no such task or file."""


class RateLimited(MonetError):
    """Too many requests; ``retry_after`` is the server's hint in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = 429,
        code: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, body=body)
        self.retry_after = retry_after


class ServerError(MonetError):
    """The API failed on its side (5xx)."""


class MalformedResponse(MonetError):
    """The API answered, but not in a form this client can read; asking again may help."""


def monet_error_class(name: str) -> type[MonetError]:
    """The :class:`MonetError` class of this name (a refusal kept in the ledger names its class); else MonetError."""
    kinds = (MonetError, MonetConnectionError, AuthError, NotFound, RateLimited, ServerError, MalformedResponse)
    return next((kind for kind in kinds if kind.__name__ == name), MonetError)
