"""The audit chain: appending entries, reading them back, the head."""

from __future__ import annotations

from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from collections.abc import Iterator

    from byokctl.store import Row

# What an entry holds, in the order of its MAC's fields (`services.audit._fields`), then its MAC.
ENTRY_COLUMNS = ("seq", "ts", "actor", "action", "org", "target", "before", "after", "os_user", "mac")
_ENTRY = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM audit"  # noqa: S608 - fixed names

# The MAC'd body of each entry built by SQLite: json_array() writes strings, integers and
# NULL exactly as `json.dumps(..., separators=(",", ":"), ensure_ascii=False)` does (the
# audit columns are TEXT, so nothing else reaches it from a row byokctl wrote), and skipping
# a Python object per column makes `audit verify` several times faster.
_CHAIN_BODIES = ("SELECT seq, CAST(CASE WHEN os_user IS NULL "
                 "THEN json_array(seq, ts, actor, action, org, target, before, after) "
                 "ELSE json_array(seq, ts, actor, action, org, target, before, after, os_user) END "
                 "AS BLOB), mac FROM audit ORDER BY seq")


class Audit(Family):
    """The audit chain: appending entries, reading them back, the head."""

    def head_seq(self) -> int:
        """The sequence number of the newest entry; 0 for an empty log."""
        return self.store.scalar("SELECT coalesce(max(seq), 0) FROM audit")

    def append(self, seq: int, ts: str, actor: str, action: str, org: str | None,
               target: str | None, before: str | None, after: str | None, mac: str,
               os_user: str | None) -> None:
        """Add one entry (its MAC computed by the caller)."""
        self.store.execute_later(
            "INSERT INTO audit (seq, ts, actor, action, org, target, before, after, mac, os_user) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ts, actor, action, org, target, before, after, mac, os_user),
        )

    def query(self, *, org: str | None = None, action: str | None = None, actor: str | None = None,
              since: str | None = None, limit: int | None = None,
              from_seq: int | None = None) -> Iterator[tuple]:
        """(seq, ts, actor, action, org, target, before, after, os_user) newest first, read as
        iterated; `action` matches exactly or as a prefix group (`key` → `key.*`)."""
        where, params = [], []
        if org:
            where.append("org = ?")
            params.append(org)
        if from_seq:
            where.append("seq >= ?")
            params.append(from_seq)
        if action:
            where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
            params += [action, action.replace("_", "\\_").replace("%", "\\%") + ".%"]
        if actor:
            where.append("actor = ?")
            params.append(actor)
        if since:
            where.append("ts >= ?")
            params.append(since)
        sql = "SELECT seq, ts, actor, action, org, target, before, after, os_user FROM audit"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self.store.tuples(sql, params)

    def last_seq(self, org: str, action: str) -> int | None:
        """The seq of the org's latest entry of `action` (None if none)."""
        return self.store.scalar("SELECT max(seq) FROM audit WHERE org = ? AND action = ?",
                                 (org, action))

    def has_action(self, action: str) -> bool:
        """Whether any entry records `action`."""
        return bool(self.store.scalar("SELECT 1 FROM audit WHERE action = ? LIMIT 1", (action,)))

    def entry(self, seq: int, columns: tuple[str, ...] = ENTRY_COLUMNS) -> Row | None:
        """The entry `seq` (`columns`, some of ENTRY_COLUMNS), or None."""
        if columns == ENTRY_COLUMNS:
            return self.store.one(_ENTRY + " WHERE seq = ?", (seq,))
        if not set(columns) <= set(ENTRY_COLUMNS):
            raise KeyError(columns)
        return self.store.one(f"SELECT {', '.join(columns)} FROM audit WHERE seq = ?", (seq,))  # noqa: S608

    def mac_at(self, seq: int) -> str | None:
        """The MAC of entry `seq`, or None if there is none."""
        return self.store.scalar("SELECT mac FROM audit WHERE seq = ?", (seq,))

    def ts_at(self, seq: int) -> str | None:
        """When entry `seq` was written, or None if there is none."""
        return self.store.scalar("SELECT ts FROM audit WHERE seq = ?", (seq,))

    def in_order(self) -> Iterator[Row]:
        """Every entry (ENTRY_COLUMNS) oldest first, read as iterated: the reference walk of
        `audit verify`."""
        return self.store.execute(_ENTRY + " ORDER BY seq")

    def chain_bodies(self) -> Iterator[tuple[int, bytes, str]]:
        """(seq, MACed body, mac) of every entry oldest first, read as iterated: the fast walk
        of `audit verify`. SQLite builds the bodies (json_array, see above); a body may differ
        from the reference for an entry written outside byokctl, so check a mismatch again
        with `entry`. A value json_array refuses fails the scan (`is_unreadable`/`is_error`).
        SQLite-specific: a PostgreSQL engine builds the body in Python (`macs.canonical`)."""
        return self.store.tuples(_CHAIN_BODIES)

    def count(self) -> int:
        """How many entries the log holds."""
        return self.store.scalar("SELECT count(*) FROM audit")
