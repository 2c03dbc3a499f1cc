"""The PostgreSQL engine's versions of the few family methods SQLite answers in its own
dialect: the fast scans of `vault check`, `audit verify` and `rekey`, which SQLite reads by
`rowid` and whose canonical bodies it builds with `json_array()`. Here a row's position is its
primary key and the bodies are built in Python, the reference encoding itself (so the slower
re-check of a mismatch never finds a difference the fast path made up)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from byokctl.store.audit import Audit
from byokctl.store.data_keys import DataKey, DataKeys
from byokctl.store.keys import SEALED_COLUMNS, Keys
from byokctl.store.members import Members
from byokctl.store.rows import Rows, _select, _where
from byokctl.store.transfer import Transfer
from byokctl.store.usage import (
    _INSERT,
    _ROLLUP,
    _ROLLUP_ALL,
    DAY_KEYS,
    DAY_KEYS_ALL,
    Usage,
    _insert,
    _rollup,
    _upsert,
    _values,
    _without_org,
)
from byokctl.vault import rowmac

if TYPE_CHECKING:
    from byokctl.store import Row

_SEALED = f"SELECT {', '.join(SEALED_COLUMNS)}, fingerprint FROM keys"  # noqa: S608 - fixed names
_NOT_UNDER = f"SELECT {', '.join(SEALED_COLUMNS)}, id FROM keys WHERE data_key_id != ?"  # noqa: S608


class PgKeys(Keys):
    """Keys, walked by id (the position a scan hands out is the key's id)."""

    def not_under(self, data_key_id: int, limit: int, after: Any = None) -> list[tuple]:
        if not after:
            return list(self.store.tuples(_NOT_UNDER + " ORDER BY id LIMIT ?", (data_key_id, limit)))
        return list(self.store.tuples(_NOT_UNDER + " AND id > ? ORDER BY id LIMIT ?",
                                      (data_key_id, after, limit)))

    def reseal(self, rows: list[tuple[int, bytes, bytes, Any]]) -> None:
        self.store.executemany("UPDATE keys SET data_key_id = ?, nonce = ?, ciphertext = ? WHERE id = ?",
                               rows)

    def check_scan(self, vault_id: str) -> Iterator[tuple]:
        from byokctl.vault.crypto import secret_ad

        for key_id, scope, org, member, provider, version, dk_id, nonce, ct, fp in self.store.tuples(
                _SEALED + " ORDER BY id"):
            yield (key_id, key_id, dk_id, nonce, ct,
                   secret_ad(vault_id, key_id, scope, org, member, provider, version), fp)

    def sealed_at(self, position: Any) -> tuple:
        return tuple(self.store.one(_SEALED + " WHERE id = ?", (position,)))

    def sealed_from(self, position: Any) -> Iterator[tuple]:
        if not position:
            return self.store.tuples(_SEALED + " ORDER BY id")
        return self.store.tuples(_SEALED + " WHERE id > ? ORDER BY id", (position,))


class PgDataKeys(DataKeys):
    """Data keys; those a write transaction found at its start came with its first round trip."""

    def as_begun(self) -> list[DataKey]:
        rows = self.store.begun_data_keys
        if rows is None:  # not the transaction's first read (or before the schema exists)
            return self.all()
        self.store.begun_data_keys = None  # once: later in the transaction they may change
        return [DataKey(*r) for r in rows]


class PgRows(Rows):
    """MACed rows; a scan's position is the row's primary key."""

    def check_scan(self, table: str) -> Iterator[tuple[bytes, Any, tuple]]:
        from byokctl.vault.macs import canonical

        columns = rowmac.COLUMNS[table]
        pks = [columns.index(c) for c in rowmac.PRIMARY_KEYS[table]]
        order = ", ".join(rowmac.PRIMARY_KEYS[table])
        for row in self.store.tuples(f"{_select(table)} ORDER BY {order}"):
            values = row[:-1]
            yield canonical([table, *values]), row[-1], tuple(values[i] for i in pks)

    def at(self, table: str, position: tuple) -> Row | None:
        return self.store.one(f"{_select(table)} WHERE {_where(table)}", position)

    def changed(self, table: str, pk: tuple, values: Mapping[str, Any]) -> Row | None:
        """One statement: PostgreSQL's RETURNING gives the row as stored, after the update."""
        sets = ", ".join(f"{c} = ?" for c in values)
        returning = ", ".join((*rowmac.COLUMNS[table], "mac"))
        return self.store.one(f"UPDATE {table} SET {sets} WHERE {_where(table)} "  # noqa: S608
                              f"RETURNING {returning}", (*values.values(), *pk))

    def checked_change(self, table: str, pk: tuple,
                       values: Mapping[str, Any]) -> tuple[Row, Row] | None:
        """One statement: the row as it was (read under its row lock) and as it is after."""
        from byokctl.store.postgres import make_row

        columns = (*rowmac.COLUMNS[table], "mac")
        keys = rowmac.PRIMARY_KEYS[table]
        sets = ", ".join(f"{c} = ?" for c in values)
        found = self.store.one(
            f"UPDATE {table} AS new SET {sets} "  # noqa: S608 - names from rowmac
            f"FROM ({_select(table)} WHERE {_where(table)} FOR UPDATE) AS old "
            f"WHERE {' AND '.join(f'new.{k} = old.{k}' for k in keys)} "
            f"RETURNING {', '.join(f'old.{c}' for c in columns)}, "
            f"{', '.join(f'new.{c}' for c in columns)}", (*values.values(), *pk))
        if found is None:
            return None
        n = len(columns)
        return make_row(columns, found[:n]), make_row(columns, found[n:])


class PgUsage(Usage):
    """Usage records: a record and its two day totals in one statement."""

    def insert(self, record: Mapping[str, Any]) -> None:
        totals = _rollup(record)
        self.store.execute_later(_INSERT_WITH_TOTALS,
                                 (*_values(record), *totals, *_without_org(totals)))

    def insert_if_unchanged(self, record: Mapping[str, Any], table: str, pk: tuple, mac: str,
                            values: Mapping[str, Any]) -> bool | None:
        """One statement, with the write lock held shared (`shared_write`), one round trip:
        the row's guarded update, then the record with its day totals, written only if that
        update changed the row."""
        from byokctl.store import is_disconnect
        from byokctl.store.rows import guarded_update

        update, params = guarded_update(table, pk, mac, values)
        totals = _rollup(record)
        try:
            found = self.store.shared_write(
                f"WITH g AS ({update} RETURNING 1), {_IF_GUARDED}",
                (*params, *_values(record), *totals, *_without_org(totals)))
        except Exception as exc:
            if is_disconnect(exc):  # sent, perhaps kept (or kept later): nobody can say here
                return None
            raise
        return found[0][0] == 1


# The record, its org's day totals and the totals across orgs: data-modifying CTEs, one
# statement (three cost psycopg's per-statement work three times over on every call).
_INSERT_WITH_TOTALS = f"WITH r AS ({_INSERT}), d AS ({_ROLLUP}) {_ROLLUP_ALL}"
# The same, each written only if the guarded update `g` before them changed its row; the
# statement answers how many rows it changed (1 or 0).
_GUARDED = "SELECT {} WHERE EXISTS (SELECT FROM g)"
_IF_GUARDED = (f"r AS ({_insert(_GUARDED)}), d AS ({_upsert('usage_daily', DAY_KEYS, _GUARDED)}), "
               f"a AS ({_upsert('usage_daily_all', DAY_KEYS_ALL, _GUARDED)}) SELECT count(*) FROM g")


class PgAudit(Audit):
    """The audit chain; entries' bodies built in Python."""

    def chain_bodies(self) -> Iterator[tuple[int, bytes, str]]:
        from byokctl.vault.macs import canonical

        for seq, ts, actor, action, org, target, before, after, os_user, mac in self.store.tuples(
                "SELECT seq, ts, actor, action, org, target, before, after, os_user, mac "
                "FROM audit ORDER BY seq"):
            fields = [seq, ts, actor, action, org, target, before, after]
            if os_user is not None:
                fields.append(os_user)
            yield seq, canonical(fields), mac


class PgMembers(Members):
    """Members; the export walk as plain tuples from the engine's tuple cursor."""

    def all_roles(self) -> Iterator[tuple[str, str, str]]:
        return self.store.tuples("SELECT org, email, role FROM members ORDER BY org, email")


class PgTransfer(Transfer):
    """Loaded rows keep their ids: the identity sequences then start after them."""

    IDENTITY = (("data_keys", "id"), ("reservations", "id"), ("usage", "id"), ("audit", "seq"))

    def loaded(self) -> None:
        for table, column in self.IDENTITY:
            self.store.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "  # noqa: S608
                f"coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)")
