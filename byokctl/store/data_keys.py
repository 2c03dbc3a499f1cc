"""Wrapped data keys: the data_keys table (bytes in, bytes out; the vault unwraps)."""

from __future__ import annotations

from typing import NamedTuple

from byokctl.store.family import Family


class DataKey(NamedTuple):
    """One data_keys row as the vault takes it: a wrapped key and what it is for."""

    id: int
    purpose: str  # secrets | mac
    state: str  # active | next
    wrapped: bytes


class DataKeys(Family):
    """Wrapped data keys: the data_keys table (bytes in, bytes out; the vault unwraps)."""

    def all(self) -> list[DataKey]:
        """Every data key, by id (a vault has two or three)."""
        return [DataKey(r["id"], r["purpose"], r["state"], r["wrapped"]) for r in self.store.all(
            "SELECT id, purpose, state, wrapped FROM data_keys ORDER BY id")]

    def as_begun(self) -> list[DataKey]:
        """Every data key as the write transaction found them once it held the write lock;
        call at its start, before it changes any (PostgreSQL reads them in the same round trip
        as BEGIN and the lock; SQLite, here)."""
        return self.all()

    def next_secrets(self) -> DataKey | None:
        """The 'next' secrets key of a rekey in progress (the lowest id, if ever more than one)."""
        r = self.store.one("SELECT id, purpose, state, wrapped FROM data_keys "
                           "WHERE purpose = 'secrets' AND state = 'next' ORDER BY id LIMIT 1")
        return None if r is None else DataKey(r["id"], r["purpose"], r["state"], r["wrapped"])

    def insert(self, purpose: str, state: str, wrapped: bytes, created_at: str) -> int:
        """Add a data key; returns its id (which the wrapping's associated data names)."""
        return int(self.store.scalar(
            "INSERT INTO data_keys (purpose, state, wrapped, created_at) VALUES (?, ?, ?, ?) "
            "RETURNING id", (purpose, state, wrapped, created_at)))

    def set_wrapped(self, dk_id: int, wrapped: bytes) -> None:
        """Replace one data key's wrapping (a new master key, or the first one)."""
        self.store.execute("UPDATE data_keys SET wrapped = ? WHERE id = ?", (wrapped, dk_id))

    def other_secrets_ids(self, keep: int) -> list[int]:
        """The ids of every secrets key but `keep` (those a finished rekey retires)."""
        return [r["id"] for r in self.store.all(
            "SELECT id FROM data_keys WHERE purpose = 'secrets' AND id != ?", (keep,))]

    def activate_secrets(self, dk_id: int) -> None:
        """End of a rekey: delete every other secrets key, and `dk_id` becomes the active one."""
        self.store.execute("DELETE FROM data_keys WHERE purpose = 'secrets' AND id != ?", (dk_id,))
        self.store.execute("UPDATE data_keys SET state = 'active' WHERE id = ?", (dk_id,))

    def count(self) -> int:
        """How many data keys the vault holds (every state)."""
        return self.store.scalar("SELECT count(*) FROM data_keys")

    def has_next(self) -> bool:
        """Whether a rekey is under way: a 'next' data key waits to become the active one."""
        return bool(self.store.scalar("SELECT 1 FROM data_keys WHERE state = 'next'"))
