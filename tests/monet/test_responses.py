"""Reading the API's answers: Retry-After in both of its forms."""

from __future__ import annotations

import datetime as dt
from email.utils import format_datetime

import pytest

from nano_banana_mcp.monet.responses import parse_retry_after


@pytest.mark.parametrize(("header", "seconds"), [("3", 3.0), ("0.5", 0.5), ("-4", 0.0), (None, None), ("soon", None)])
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    """A number of seconds is taken as it is (never negative); an absent or unreadable header is None."""
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date() -> None:
    """An HTTP date (the other form RFC 9110 allows) is the seconds until then."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    seconds = parse_retry_after(format_datetime(when, usegmt=True))
    assert seconds is not None
    assert 25 <= seconds <= 30


def test_retry_after_as_a_date_in_the_past_is_now() -> None:
    """A date already past means no wait."""
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
