"""The base of the store's table families."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from byokctl.store import Store


class Family:
    """Named queries over one table family of a `Store`; SQL in the engines' shared dialect."""

    def __init__(self, store: Store) -> None:
        self.store = store
