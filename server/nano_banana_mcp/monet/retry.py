"""The one retry policy: which failures are worth another try, and how long to wait before it.

Which failures are tried again, and how often (``docs/api-contract.md`` lists the answers the page leaves open):

- **plainly transient** (:func:`is_transient`): the API could not be reached, the connection broke, a timeout (408),
  a 429, any 5xx. Work that must finish (a paid task) tries these again without a count, with backoff;
- **worth a few tries** (:func:`worth_a_few_tries`): the above, an answer that could not be read, and the 4xx the
  page does not describe that may clear (409 conflict, 425 too early). Tried ``attempts`` times, then the failure
  stands, with the API's own status and words;
- anything else (400, 401, 403, 404, 413, 422, another 4xx) is a refusal: not tried again.

Every retried operation in the package (a request, a download, carrying a task to its end) goes through
:meth:`RetryPolicy.run`, which is the package's only retry loop. The waits are stamina's capped, jittered
exponential backoff; a 429's ``Retry-After`` replaces the backoff while it is within ``max_retry_after``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from nano_banana_mcp.errors import MalformedResponse, MonetConnectionError, MonetError, RateLimited, ServerError

if TYPE_CHECKING:
    from stamina.instrumentation import RetryDetails

__all__ = ["RetryPolicy", "is_transient", "worth_a_few_tries"]

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_T = TypeVar("_T")

TIMEOUT_STATUSES = frozenset({408})
"""Besides 429 and 5xx, plainly transient: the request timed out."""
FEW_TRIES_STATUSES = frozenset({409, 425})
"""4xx the page does not describe that may clear by themselves (a same-key request still in progress, too early):
worth a few more tries, not an endless loop."""


def is_transient(err: BaseException) -> bool:
    """True when the failure is plainly transient (unreachable, cut, timed out, 429, 5xx): the same request sent again
    later, with the same idempotency key, may well succeed; work that must finish tries again without a count."""
    if isinstance(err, MonetConnectionError | ServerError | RateLimited):
        return True
    return isinstance(err, MonetError) and err.status_code in TIMEOUT_STATUSES


def worth_a_few_tries(err: BaseException) -> bool:
    """True when the same request is worth a few more tries: a transient failure, an unreadable answer, a 409/425."""
    if is_transient(err) or isinstance(err, MalformedResponse):
        return True
    return isinstance(err, MonetError) and err.status_code in FEW_TRIES_STATUSES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many tries, and the waits between them (seconds)."""

    attempts: int | None = 6
    """Tries in all, the first included; None: until it succeeds or fails for good."""
    wait_initial: float = 0.5
    wait_max: float = 8.0
    max_retry_after: float = 60.0
    """A longer ``Retry-After`` is a refusal, reported to the user rather than slept through."""
    retry_on: Callable[[Exception], bool] = worth_a_few_tries

    def with_(self, **changes: object) -> RetryPolicy:
        """This policy with some fields changed (e.g. ``attempts=None`` for work that must finish)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def backoff_hook(self, err: Exception) -> bool | float:
        """stamina's ``on`` hook: False to give up, True to back off, or the seconds a 429 asked for."""
        if not self.retry_on(err):
            return False
        if isinstance(err, RateLimited) and err.retry_after is not None:
            if err.retry_after <= self.max_retry_after:
                return err.retry_after
            return self.max_retry_after if self.attempts is None else False  # work that must finish waits
        return True

    async def run(self, fn: Callable[_P, Awaitable[_T]], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``await fn(*args, **kwargs)``, tried again on the failures this policy retries."""
        import stamina  # noqa: PLC0415 - tenacity's import cost stays off the start-up path

        _install_log_hook()
        async for attempt in stamina.retry_context(
            on=self.backoff_hook,
            attempts=self.attempts,
            timeout=None,
            wait_initial=self.wait_initial,
            wait_max=self.wait_max,
            wait_jitter=self.wait_initial,
        ):
            with attempt:
                return await fn(*args, **kwargs)
        raise AssertionError("unreachable: stamina re-raises the last failure")


_hook_installed = False


def _install_log_hook() -> None:
    """Log each scheduled retry as one readable line (stamina's own hook puts the details in ``extra``)."""
    global _hook_installed  # noqa: PLW0603 - stamina's hooks are process-wide; installed once
    if _hook_installed:
        return
    from stamina.instrumentation import set_on_retry_hooks  # noqa: PLC0415

    from nano_banana_mcp.observability.metrics import retried  # noqa: PLC0415 - with stamina, on first use

    def log_retry(details: RetryDetails) -> None:
        log.debug("retry %d in %.2fs after: %s", details.retry_num, details.wait_for, details.caused_by)
        retried(details.caused_by)

    set_on_retry_hooks([log_retry])
    _hook_installed = True
