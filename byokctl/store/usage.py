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


def _insert(source: str = "VALUES ({})") -> str:
    """Append one record; `source`: what gives the row, its placeholders put at `{}`."""
    return (f"INSERT INTO usage ({', '.join(COLUMNS)}) "  # noqa: S608 - fixed column list
            f"{source.format(', '.join('?' * len(COLUMNS)))}")


_INSERT = _insert()
_values = operator.itemgetter(*COLUMNS)

# The per-day totals (table usage_daily, migration m007), added to in the same statement
# group as each record.
_SUMS = ("calls", "errors", "input_tokens", "output_tokens", "cost_usd", "credits_charged")


def _upsert(table: str, keys: tuple[str, ...], source: str = "VALUES ({})") -> str:
    """Add one record's figures to its row of day totals in `table` (keyed by `keys`);
    `source`: what gives the row, its placeholders put at `{}`."""
    columns = (*keys, *_SUMS)
    adds = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _SUMS)
    return (f"INSERT INTO {table} ({', '.join(columns)}) "
            f"{source.format(', '.join('?' * len(columns)))} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {adds}")


DAY_KEYS, DAY_KEYS_ALL = ("day", "org", "mode", "provider", "model"), ("day", "mode", "provider", "model")
_ROLLUP = _upsert("usage_daily", DAY_KEYS)
_ROLLUP_ALL = _upsert("usage_daily_all", DAY_KEYS_ALL)
_FORGET = ("UPDATE usage_daily_all SET "  # an org's day totals taken out of those across orgs
           + ", ".join(f"{c} = usage_daily_all.{c} - d.{c}" for c in _SUMS)
           + " FROM usage_daily AS d WHERE d.org = ? AND "
           + " AND ".join(f"usage_daily_all.{k} = d.{k}" for k in ("day", "mode", "provider", "model")))
_DAY_START, _DAY_END = "T00:00:00.000000Z", "T23:59:59.999999Z"  # what whole-day bounds look like


def _without_org(totals: tuple) -> tuple:
    return totals[:1] + totals[2:]


def _rollup(record: Mapping[str, Any]) -> tuple:
    return (record["ts"][:10], record["org"], record["mode"], record["provider"] or "-",
            record["model"] or "-", 1, int(record["outcome"] != "ok"), record["input_tokens"],
            record["output_tokens"], record["cost_usd"], record["credits_charged"])


# What `usage show --by` groups on, as the expression each group's key is.
GROUPINGS = {
    "provider": "coalesce(provider, '-')",
    "model": "coalesce(model, '-')",
    "member": "coalesce(member, '-')",
    "mode": "mode",
    "day": "substr(ts, 1, 10)",
    "org": "org",
}
# What the per-day totals group on, and their sums (for `--by member` they hold nothing).
_DAILY = {"provider": "provider", "model": "model", "mode": "mode", "day": "day", "org": "org"}
_DAILY_MEASURES = ", ".join(f"sum({c}) AS {c}" for c in _SUMS)
_MEASURES = ("count(*) AS calls, sum(CASE WHEN outcome != 'ok' THEN 1 ELSE 0 END) AS errors, "
             "coalesce(sum(input_tokens), 0) AS input_tokens, "
             "coalesce(sum(output_tokens), 0) AS output_tokens, "
             "coalesce(sum(cost_usd), 0) AS cost_usd, "
             "coalesce(sum(credits_charged), 0) AS credits_charged")


class Usage(Family):
    """Usage records: one per provider call, and the figures `usage show` sums."""

    def insert(self, record: Mapping[str, Any]) -> None:
        """Append one record (column name → value, every one of COLUMNS) and add it to its day's
        totals, in the caller's transaction (sent with its next statement, where the engine can)."""
        self.store.execute_later(_INSERT, _values(record))
        totals = _rollup(record)
        self.store.execute_later(_ROLLUP, totals)
        self.store.execute_later(_ROLLUP_ALL, _without_org(totals))

    def insert_if_unchanged(self, record: Mapping[str, Any], table: str, pk: tuple, mac: str,
                            values: Mapping[str, Any]) -> bool | None:
        """Append one record (as `insert`) and set `values` on the row of `table` at `pk`, in a
        transaction of their own, only if that row still carries `mac`, the MAC it had when it
        was read (`guarded_update`). True: written; False: nothing written (the row was
        changed meanwhile, or is gone); None (a database vault only): the connection was lost
        after the statement was sent, so it may have been kept, now or later. The engine may
        run such transactions beside each other, never beside a writer's transaction."""
        from byokctl.store.rows import guarded_update

        with self.store.tx():
            if self.store.execute(*guarded_update(table, pk, mac, values)).rowcount != 1:
                return False
            self.insert(record)
        return True

    def insert_many(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Append many records (as `insert`) in the caller's transaction; returns the count."""
        records = list(records)
        self.store.executemany(_INSERT, map(_values, records))
        totals = [_rollup(r) for r in records]
        self.store.executemany(_ROLLUP, totals)
        self.store.executemany(_ROLLUP_ALL, map(_without_org, totals))
        return len(records)

    def forget_org(self, org: str) -> None:
        """Take `org`'s records and day totals out (its deletion), the totals across orgs
        included, in the caller's transaction."""
        self.store.execute(_FORGET, (org,))
        self.store.execute("DELETE FROM usage_daily_all WHERE calls <= 0")
        self.store.execute("DELETE FROM usage_daily WHERE org = ?", (org,))
        self.store.execute("DELETE FROM usage WHERE org = ?", (org,))

    def grouped_totals(self, by: str, *, org: str | None, since: str | None,
                       until: str | None) -> list[Row]:
        """One row per group of `by` (a GROUPINGS name) in key order, in one scan: the group's
        key `k` and its calls, errors, input_tokens, output_tokens, cost_usd, credits_charged;
        only `org`'s records if given, only those stamped within [since, until] if given.
        From the per-day totals when they hold the answer (every grouping but `member`, and
        bounds that are whole days); else from the records themselves."""
        if by in _DAILY and (since is None or since.endswith(_DAY_START)) and \
                (until is None or until.endswith(_DAY_END)):
            return self._daily_totals(by, org=org, since=since, until=until)
        return self._raw_totals(by, org=org, since=since, until=until)

    def _raw_totals(self, by: str, *, org: str | None, since: str | None,
                    until: str | None) -> list[Row]:
        return self._totals("usage", GROUPINGS[by], _MEASURES, "ts", org, since, until)

    def _daily_totals(self, by: str, *, org: str | None, since: str | None,
                      until: str | None) -> list[Row]:
        table = "usage_daily" if org is not None or by == "org" else "usage_daily_all"
        return self._totals(table, _DAILY[by], _DAILY_MEASURES, "day", org,
                            since[:10] if since else None, until[:10] if until else None)

    def _totals(self, table: str, key: str, measures: str, stamp: str, org: str | None,
                since: str | None, until: str | None) -> list[Row]:
        """One row per `key` of `table` (the records, or their day totals) in key order."""
        where, params = [], []
        for test, value in (("org = ?", org), (f"{stamp} >= ?", since), (f"{stamp} <= ?", until)):
            if value:
                where.append(test)
                params.append(value)
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        return self.store.all(f"SELECT {key} AS k, {measures} FROM {table}{cond} "  # noqa: S608
                              "GROUP BY k ORDER BY k", params)

    def byok_spent_since(self, org: str, since: str) -> float:
        """What `org`'s BYOK calls stamped at or after `since` cost, in USD (0 for none)."""
        return self.store.scalar(
            "SELECT coalesce(sum(cost_usd), 0) FROM usage WHERE org = ? AND mode = 'byok' "
            "AND ts >= ?", (org, since))

    def count(self) -> int:
        """How many usage records the vault holds."""
        return self.store.scalar("SELECT count(*) FROM usage")
