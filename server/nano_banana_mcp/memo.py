"""A value made from a source and kept until the source changes: what a host's polls are answered from.

A host polls each task it carries every second, and what it is answered from (a task's ledger row, its state)
changes a few times in the task's life; each answer is made once per change instead of once per poll.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Memo(Generic[_K, _V]):
    """The latest value made for each key, with the source it was made from; at most ``limit`` keys are kept (more
    than a host carries at once), and past that all are dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._kept: dict[_K, tuple[object, _V]] = {}

    def get(self, key: _K, source: object, make: Callable[[], _V]) -> _V:
        """The value kept for ``key`` if it was made from an equal ``source``; else ``make()``, kept from now on."""
        kept = self._kept.get(key)
        if kept is not None and kept[0] == source:
            return kept[1]
        value = make()
        if len(self._kept) >= self._limit:
            self._kept.clear()
        self._kept[key] = (source, value)
        return value

    def clear(self) -> None:
        self._kept.clear()

    def __len__(self) -> int:
        return len(self._kept)
