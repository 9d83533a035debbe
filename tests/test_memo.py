"""What a host's polls are answered from: made once per change of its source, and never more kept than the limit."""

from __future__ import annotations

import functools
import operator

from nano_banana_mcp.memo import Memo


def test_a_value_is_made_again_only_when_its_source_changes() -> None:
    made: list[str] = []

    def make(value: str) -> str:
        made.append(value)
        return value

    memo: Memo[str, str] = Memo(8)
    assert memo.get("task", ("working", 10), lambda: make("10%")) == "10%"
    assert memo.get("task", ("working", 10), lambda: make("again")) == "10%"
    assert memo.get("task", ("working", 40), lambda: make("40%")) == "40%"
    assert memo.get("task", ("working", 40), lambda: make("again")) == "40%"
    assert made == ["10%", "40%"]


def test_past_the_limit_what_was_kept_is_dropped() -> None:
    """A server polled for many more tasks than a host carries keeps at most the limit, and still answers each."""
    memo: Memo[int, int] = Memo(100)
    for task in range(1000):
        assert memo.get(task, "source", functools.partial(operator.mul, task, 2)) == task * 2
        assert len(memo) <= 100
    assert memo.get(0, "source", lambda: -1) == -1  # long dropped: made again
