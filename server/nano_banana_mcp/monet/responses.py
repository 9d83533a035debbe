"""Reading the API's answers: size-capped bodies, and each HTTP error status as its own exception."""

from __future__ import annotations

import datetime as dt
import json
import re
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from nano_banana_mcp.errors import (
    OFFLINE_HINT,
    AuthError,
    MalformedResponse,
    MonetError,
    NotFound,
    RateLimited,
    ServerError,
)
from nano_banana_mcp.monet.models import MAX_MESSAGE, error_text

__all__ = ["REDACTED", "Redactor", "buffered", "origin", "parse_retry_after", "read_capped", "status_error"]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (a number or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(when.tzinfo)).total_seconds())


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The whole body, or MalformedResponse once it passes ``limit`` bytes (nothing more is read)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise MalformedResponse(
                f"The Monet API sent an answer over {limit / 1e6:.0f} MB (HTTP {response.status_code}); "
                "it was not read.",
                status_code=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


class Redactor:
    """Removes secrets from what a peer sends before it is parsed, stored, logged or shown.

    An API (or a proxy) that echoes the request's key or ``Authorization`` header in an error body or a
    task's error would otherwise put it in tool results, the ledger and the log.
    """

    _BEARER = re.compile(rb"(?i)\b(bearer)\s+[^\s\"',;})\]]+")

    def __init__(self, *secrets: str) -> None:
        self._secrets = [s.encode() for s in secrets if len(s.strip()) >= 4]

    def bytes(self, data: bytes) -> bytes:
        data = self._BEARER.sub(rb"\1 " + REDACTED, data)
        for secret in self._secrets:
            data = data.replace(secret, REDACTED)
        return data

    def text(self, data: str) -> str:
        return self.bytes(data.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")


REDACTED = b"[redacted]"


async def buffered(streamed: httpx.Response, limit: int, redact: Redactor) -> httpx.Response:
    """A streamed response read into memory (at most ``limit`` bytes of it), secrets removed."""
    content = redact.bytes(await read_capped(streamed, limit))
    headers = streamed.headers.copy()
    headers.pop("content-encoding", None)  # the content is decoded already
    headers.pop("content-length", None)
    return httpx.Response(streamed.status_code, headers=headers, content=content, request=streamed.request)


def origin(url: httpx.URL) -> str:
    """Scheme and host only: query strings of signed URLs are not repeated in messages."""
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")


def _body(response: httpx.Response) -> Any:
    if response.headers.get("content-type", "").startswith("text/html"):
        return "an HTML error page (from a proxy or gateway, not the API)"
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        try:
            text = response.text
        except (UnicodeDecodeError, LookupError):
            return None
        return text[:MAX_MESSAGE] if text else None


def _code_and_message(body: Any) -> tuple[str | None, str | None]:
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            code, message = inner.get("code"), inner.get("message")
        else:
            code, message = body.get("code"), body.get("message") or body.get("detail") or inner
        return (str(code)[:100] if code else None, error_text(message))
    if isinstance(body, str) and body.strip():
        return None, body.strip()[:MAX_MESSAGE]
    return None, None


def status_error(response: httpx.Response, api: str) -> MonetError:
    """The exception for an error answer: what happened (status, code, message) and what to do."""
    status = response.status_code
    body = _body(response)
    code, message = _code_and_message(body)
    detail = f"HTTP {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    kwargs: dict[str, Any] = {"status_code": status, "code": code, "body": body}
    if status in (401, 403):
        return AuthError(
            f"The Monet API refused the API key ({detail}). Check MONET_API_KEY or set a new key "
            f"from https://monet.vision. {OFFLINE_HINT}",
            **kwargs,
        )
    if 300 <= status < 400:
        # The API does not redirect; a proxy or a hostile middlebox does. Whether a create behind it was
        # made is unknown, so this is never taken as a refusal: the same request is sent again.
        return MalformedResponse(f"The Monet API answered with a redirect ({detail}); not followed.", **kwargs)
    if status == 404:
        return NotFound(f"Not found on the Monet API ({detail}).", **kwargs)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        wait = f" It asked to wait {retry_after:g}s." if retry_after is not None else ""
        return RateLimited(
            f"The Monet API is rate-limiting requests ({detail}).{wait} Wait a little and try again.",
            retry_after=retry_after,
            **kwargs,
        )
    if status >= 500:
        return ServerError(f"The Monet API at {api} failed on its side ({detail}). Try again in a minute.", **kwargs)
    return MonetError(f"The Monet API refused the request ({detail}).", **kwargs)
