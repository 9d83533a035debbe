"""The one retry policy: capped, jittered backoff, Retry-After within limits, and which failures are retried."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from stamina.instrumentation import RetryDetails, get_on_retry_hooks, set_on_retry_hooks

from nano_banana_mcp.errors import (
    AuthError,
    ConfigError,
    DownloadError,
    MalformedResponse,
    MonetConnectionError,
    MonetError,
    NotFound,
    RateLimited,
    ServerError,
)
from nano_banana_mcp.monet import RetryPolicy, is_transient, worth_a_few_tries

pytestmark = pytest.mark.anyio

EPSILON = 1e-9


class Flaky:
    """An operation that raises the given errors, one per call, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def limited(retry_after: float) -> RateLimited:
    return RateLimited(f"429; wait {retry_after:g}s", retry_after=retry_after)


@pytest.fixture
async def waits() -> AsyncIterator[list[float]]:
    """The waits stamina schedules before each retry, from its public retry hooks."""
    await RetryPolicy(attempts=1).run(Flaky())  # the policy sets its own hooks on first use; add ours after
    before = get_on_retry_hooks()
    recorded: list[float] = []

    def record(details: RetryDetails) -> None:
        recorded.append(details.wait_for)

    set_on_retry_hooks([*before, record])
    yield recorded
    set_on_retry_hooks(before)


async def test_backoff_doubles_and_is_capped_with_jitter(waits: list[float]) -> None:
    """Each wait is the doubled backoff plus up to wait_initial of jitter, never over wait_max."""
    policy = RetryPolicy(attempts=7, wait_initial=0.001, wait_max=0.004)
    flaky = Flaky(*[ServerError("503")] * 6)
    assert await policy.run(flaky) == "done"
    assert flaky.calls == 7
    assert len(waits) == 6
    for retry, wait in enumerate(waits):
        floor = min(policy.wait_max, policy.wait_initial * 2**retry)
        ceiling = min(policy.wait_max, floor + policy.wait_initial)
        assert floor - EPSILON <= wait <= ceiling + EPSILON
    assert waits[-1] == pytest.approx(policy.wait_max)


async def test_backoff_is_jittered(waits: list[float]) -> None:
    """Two clients retrying at once do not wait the same time."""
    policy = RetryPolicy(attempts=2, wait_initial=0.002, wait_max=0.01)
    for _ in range(4):
        await policy.run(Flaky(ServerError("503")))
    assert len(set(waits)) > 1


async def test_retry_after_within_the_cap_replaces_the_backoff(waits: list[float]) -> None:
    """A 429's Retry-After is waited exactly, however long the backoff would have been."""
    policy = RetryPolicy(attempts=3, wait_initial=10, wait_max=10, max_retry_after=1)
    assert await policy.run(Flaky(limited(0.02))) == "done"
    assert waits == [pytest.approx(0.02)]


async def test_retry_after_beyond_the_cap_gives_up_when_attempts_are_finite(waits: list[float]) -> None:
    """A Retry-After over max_retry_after is raised at once rather than slept through."""
    policy = RetryPolicy(attempts=5, wait_initial=0.001, max_retry_after=0.05)
    flaky = Flaky(limited(30))
    with pytest.raises(RateLimited) as info:
        await policy.run(flaky)
    assert info.value.retry_after == 30
    assert flaky.calls == 1
    assert waits == []


async def test_retry_after_beyond_the_cap_waits_the_cap_when_attempts_are_unlimited(waits: list[float]) -> None:
    """Work that must finish (attempts=None) waits max_retry_after instead, then tries again."""
    policy = RetryPolicy(attempts=None, wait_initial=0.001, max_retry_after=0.02)
    flaky = Flaky(limited(30), limited(30))
    assert await policy.run(flaky) == "done"
    assert flaky.calls == 3
    assert waits == [pytest.approx(0.02), pytest.approx(0.02)]


async def test_a_finite_policy_gives_up_with_the_last_error() -> None:
    """After `attempts` tries the last failure itself is raised."""
    policy = RetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.002)
    flaky = Flaky(ServerError("first"), ServerError("second"), ServerError("third"), ServerError("never"))
    with pytest.raises(ServerError, match="third"):
        await policy.run(flaky)
    assert flaky.calls == 3


async def test_a_permanent_failure_is_raised_at_once() -> None:
    """A failure that will not go away (a refused key) is not tried again."""
    flaky = Flaky(AuthError("401", status_code=401))
    with pytest.raises(AuthError):
        await RetryPolicy(wait_initial=0.001).run(flaky)
    assert flaky.calls == 1


async def test_run_passes_arguments_and_returns_the_result() -> None:
    """run(fn, *args, **kwargs) is await fn(*args, **kwargs) when nothing fails."""

    async def join(a: str, b: str, *, sep: str) -> str:
        return f"{a}{sep}{b}"

    assert await RetryPolicy().run(join, "x", "y", sep="-") == "x-y"


@pytest.mark.parametrize(
    "err",
    [
        MonetConnectionError("connection reset"),
        ServerError("503", status_code=503),
        RateLimited("429", retry_after=1),
        RateLimited("429 without Retry-After"),
        MonetError("request timeout", status_code=408),
    ],
    ids=repr,
)
def test_plainly_transient_failures_are_retried_without_a_count(err: Exception) -> None:
    """Lost connections, 5xx, 429 and 408 may succeed when sent again, however long it takes."""
    assert is_transient(err)
    assert worth_a_few_tries(err)


@pytest.mark.parametrize(
    "err",
    [
        MalformedResponse("half a JSON object"),
        MonetError("same key still in progress", status_code=409),
        MonetError("too early", status_code=425),
    ],
    ids=repr,
)
def test_answers_the_page_does_not_describe_get_a_few_tries_only(err: Exception) -> None:
    """An unreadable answer, a 409 or a 425 may clear, but is not a reason to retry for ever."""
    assert worth_a_few_tries(err)
    assert not is_transient(err)


@pytest.mark.parametrize(
    "err",
    [
        AuthError("401", status_code=401),
        NotFound("404", status_code=404),
        MonetError("validation", status_code=400),
        MonetError("payment required", status_code=402),
        MonetError("payload too large", status_code=413),
        MonetError("unprocessable", status_code=422),
        DownloadError("not an image"),
        ConfigError("no key"),
        ValueError("a bug"),
    ],
    ids=repr,
)
def test_permanent_failures_are_not_retried(err: Exception) -> None:
    """Refusals, missing things, our own errors and bugs fail the same way however often they are sent."""
    assert not is_transient(err)
    assert not worth_a_few_tries(err)


async def test_a_409_is_tried_a_few_times_then_stands() -> None:
    """A 409 on every try is sent ``attempts`` times, then raised with the API's words (not retried for ever)."""
    calls = 0

    async def conflict() -> None:
        nonlocal calls
        calls += 1
        raise MonetError("HTTP 409 idempotency_conflict: busy", status_code=409)

    with pytest.raises(MonetError, match="409 idempotency_conflict"):
        await RetryPolicy(attempts=3, wait_initial=0.0, wait_max=0.0).run(conflict)
    assert calls == 3
