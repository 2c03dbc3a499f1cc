"""Lazy JSON containers: a list or an object whose members are produced while it is written,
so that a command listing a whole vault holds one row at a time (`render.emit` streams them)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any


class Rows:
    """A JSON array of `items`, read once, as it is written."""

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)


class Pairs:
    """A JSON object of `(key, value)` pairs, read once, as it is written."""

    def __init__(self, pairs: Iterable[tuple[str, Any]]) -> None:
        self._pairs = pairs

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self._pairs)
