"""Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from collections.abc import Iterator

# What `Vault.open_fields` takes, in its order: a secret and the row it is bound to.
SEALED_COLUMNS = ("id", "scope", "org", "member", "provider", "version", "data_key_id", "nonce",
                  "ciphertext")
_NOT_UNDER = f"SELECT {', '.join(SEALED_COLUMNS)}, rowid FROM keys WHERE data_key_id != ?"  # noqa: S608
_SEALED = ("SELECT id, scope, org, member, provider, version, data_key_id, "
           "CAST(nonce AS BLOB), CAST(ciphertext AS BLOB), fingerprint")

# `crypto.secret_ad` as an SQL expression over a `keys` row (the parameter: the vault id), for
# reading many rows at once. SQLite's json_array() writes what json.dumps writes, except that
# it keeps non-ASCII characters where json.dumps escapes them, so for such a row (an email
# with an accent) the ciphertext does not open with it: callers then fall back to
# `secret_ad`, the reference. Nothing was ever sealed under the SQL form alone.
SECRET_AD_SQL = ("CAST(json_array('byokctl-secret/1', ?, id, scope, org, member, provider, "
                 "version) AS BLOB)")


class Keys(Family):
    """Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

    def count(self) -> int:
        """How many keys the vault holds, over every scope."""
        return self.store.scalar("SELECT count(*) FROM keys")

    # -- rekey: walked in storage order (SQLite's rowid; a PostgreSQL engine overrides these
    # three with its own position, e.g. a serial column), not by key id, whose random values
    # would make every batch rewrite pages all over the file.
    def count_not_under(self, data_key_id: int) -> int:
        """How many secrets are sealed under another data key than `data_key_id`."""
        return self.store.scalar("SELECT count(*) FROM keys WHERE data_key_id != ?", (data_key_id,))

    def not_under(self, data_key_id: int, limit: int, after: int | None = None) -> list[tuple]:
        """Up to `limit` secrets sealed under another data key, in storage order (after the
        position `after`, if given): tuples of SEALED_COLUMNS, then the row's position."""
        if after is None:
            return self.store.tuples(_NOT_UNDER + " ORDER BY rowid LIMIT ?",
                                     (data_key_id, limit)).fetchall()
        return self.store.tuples(_NOT_UNDER + " AND rowid > ? ORDER BY rowid LIMIT ?",
                                 (data_key_id, after, limit)).fetchall()

    def reseal(self, rows: list[tuple[int, bytes, bytes, int]]) -> None:
        """Store secrets sealed again: (data_key_id, nonce, ciphertext, position) each."""
        self.store.executemany(
            "UPDATE keys SET data_key_id = ?, nonce = ?, ciphertext = ? WHERE rowid = ?", rows)

    # -- vault check ----------------------------------------------------------------------
    def check_scan(self, vault_id: str) -> Iterator[tuple]:
        """(position, id, data_key_id, nonce, ciphertext, associated data, fingerprint) of
        every secret in storage order (twice as fast as by id through its index), read as
        iterated. SQLite builds the associated data (SECRET_AD_SQL), which may differ from
        `crypto.secret_ad` (the reference) for a row with non-ASCII text: open a row that
        fails again with `sealed_at`. A value SQLite cannot hand over this way fails the scan
        (`is_unreadable`). SQLite-specific: a PostgreSQL engine builds the data in Python."""
        return self.store.tuples(
            "SELECT rowid, id, data_key_id, CAST(nonce AS BLOB), CAST(ciphertext AS BLOB), "
            f"{SECRET_AD_SQL}, fingerprint FROM keys ORDER BY rowid", (vault_id,))

    def sealed_at(self, position: int) -> tuple:
        """The SEALED_COLUMNS and fingerprint of the secret at a position `check_scan` gave."""
        return tuple(self.store.one(_SEALED + " FROM keys WHERE rowid = ?", (position,)))

    def sealed_from(self, position: int) -> Iterator[tuple]:
        """The SEALED_COLUMNS and fingerprint of every secret after `position`, in storage
        order, read as iterated (`vault check` goes on with them, in `Store.lenient`)."""
        return self.store.tuples(_SEALED + " FROM keys WHERE rowid > ? ORDER BY rowid", (position,))
