"""In-flight reservations of credits and budget: the reservations table."""

from __future__ import annotations

from typing import NamedTuple

from byokctl.store.family import Family


class Held(NamedTuple):
    """What an org's calls in flight of one mode have reserved."""

    credits: int
    cost_usd: float
    calls: int
    until: str | None  # when the last of them lapses (None: no reservation)


class Reservations(Family):
    """In-flight reservations of credits and budget: the reservations table."""

    def expire(self, now: str) -> None:
        """Delete the reservations that lapsed at or before `now` (their process was killed)."""
        self.store.execute_later("DELETE FROM reservations WHERE expires_at <= ?", (now,))

    def held(self, org: str, mode: str) -> Held:
        """The sums, count and last expiry of `org`'s reservations of `mode`."""
        row = self.store.one(
            "SELECT coalesce(sum(credits), 0) AS credits, coalesce(sum(cost_usd), 0) AS cost_usd, "
            "count(*) AS calls, max(expires_at) AS until FROM reservations WHERE org = ? AND mode = ?",
            (org, mode))
        assert row is not None  # an aggregate always has its one row
        return Held(row["credits"], row["cost_usd"], row["calls"], row["until"])

    def insert(self, *, org: str, mode: str, credits: int, cost_usd: float, created_at: str,
               expires_at: str) -> int:
        """Add a reservation; returns its id."""
        return self.store.scalar(
            "INSERT INTO reservations (org, mode, credits, cost_usd, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (org, mode, credits, cost_usd, created_at, expires_at))

    def delete(self, reservation_id: int) -> None:
        """Delete one reservation (its call settled or failed)."""
        self.store.execute_later("DELETE FROM reservations WHERE id = ?", (reservation_id,))
