"""Usage records: one per provider call, and the figures `usage show` sums."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row

# The usage table's columns, in the order a record is written.
COLUMNS = ("org", "actor", "mode", "outcome", "member", "provider", "model", "key_id", "fingerprint",
           "fallback_reason", "input_tokens", "output_tokens", "cost_usd", "catalog_version",
           "credits_charged", "latency_ms", "ts")
_INSERT = (f"INSERT INTO usage ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed column list
           f"VALUES ({', '.join('?' * len(COLUMNS))})")
_values = operator.itemgetter(*COLUMNS)

# What `usage show --by` groups on, as the expression each group's key is.
GROUPINGS = {
    "provider": "coalesce(provider, '-')",
    "model": "coalesce(model, '-')",
    "member": "coalesce(member, '-')",
    "mode": "mode",
    "day": "substr(ts, 1, 10)",
    "org": "org",
}
_MEASURES = ("count(*) AS calls, sum(CASE WHEN outcome != 'ok' THEN 1 ELSE 0 END) AS errors, "
             "coalesce(sum(input_tokens), 0) AS input_tokens, "
             "coalesce(sum(output_tokens), 0) AS output_tokens, "
             "coalesce(sum(cost_usd), 0) AS cost_usd, "
             "coalesce(sum(credits_charged), 0) AS credits_charged")


class Usage(Family):
    """Usage records: one per provider call, and the figures `usage show` sums."""

    def insert(self, record: Mapping[str, Any]) -> None:
        """Append one record (column name → value, every one of COLUMNS) in the caller's transaction."""
        self.store.execute(_INSERT, _values(record))

    def insert_many(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append many records (as `insert`) in the caller's transaction; returns the count."""
        return self.store.executemany(_INSERT, map(_values, records)).rowcount

    def grouped_totals(self, by: str, *, org: str | None, since: str | None,
                       until: str | None) -> list[Row]:
        """One row per group of `by` (a GROUPINGS name) in key order, in one scan: the group's
        key `k` and its calls, errors, input_tokens, output_tokens, cost_usd, credits_charged;
        only `org`'s records if given, only those stamped within [since, until] if given."""
        where, params = [], []
        if org is not None:
            where.append("org = ?")
            params.append(org)
        if since:
            where.append("ts >= ?")
            params.append(since)
        if until:
            where.append("ts <= ?")
            params.append(until)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        return self.store.all(
            f"SELECT {GROUPINGS[by]} AS k, {_MEASURES} FROM usage{cond} "  # noqa: S608 - fixed parts
            "GROUP BY k ORDER BY k", params)

    def byok_spent_since(self, org: str, since: str) -> float:
        """What `org`'s BYOK calls stamped at or after `since` cost, in USD (0 for none)."""
        return self.store.scalar(
            "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE org = ? AND mode = 'byok' "
            "AND ts >= ?", (org, since))

    def count(self) -> int:
        """How many usage records the vault holds."""
        return self.store.scalar("SELECT count(*) FROM usage")
