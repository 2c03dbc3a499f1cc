"""Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row

# Everything about a key but its sealed secret (what `key list` and the audit may show).
PUBLIC_COLUMNS = ("id, scope, org, member, provider, hint, fingerprint, version, status, test_result, "
                  "created_at, rotated_at, last_used_at, last_tested_at, from_env")

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

    def get(self, key_id: str) -> Row | None:
        """A key's whole row, sealed secret included (for the vault to open)."""
        return self.store.one("SELECT * FROM keys WHERE id = ?", (key_id,))

    def exists(self, key_id: str) -> bool:
        """Whether a key with this id is stored."""
        return self.store.scalar("SELECT 1 FROM keys WHERE id = ?", (key_id,)) is not None

    def in_slot(self, scope: str, org: str | None, member: str | None, provider: str) -> Row | None:
        """The key in one slot (its public columns): the platform's, an org's, or a member's
        personal key for `provider`."""
        if scope == "platform":
            return self.platform_key(provider)
        if scope == "org":
            return self.org_key(org or "", provider)
        return self.member_key(org or "", member or "", provider)

    def iter_visible(self, *, org: str | None = None, provider: str | None = None,
                     viewer: str | None = None, viewer_roles: Sequence[str] = ()) -> Iterator[Row]:
        """Keys' public columns, platform keys first, then by org, scope, member, provider, one
        at a time as the engine reads them. `org`, `provider`: only those. `viewer` (a member's
        email): only keys of orgs they belong to, and of those, all the keys of the orgs where
        their role is one of `viewer_roles` but only their own personal keys elsewhere."""
        where: list[str] = []
        params: list[str] = []
        if org is not None:
            where.append("org = ?")
            params.append(org)
        if provider is not None:
            where.append("provider = ?")
            params.append(provider)
        if viewer is not None:
            marks = ", ".join("?" * len(viewer_roles))
            where.append(
                "org IN (SELECT org FROM members WHERE email = ?) AND ("
                f"org IN (SELECT org FROM members WHERE email = ? AND role IN ({marks})) "
                "OR (scope = 'member' AND member = ?))")
            params += [viewer, viewer, *viewer_roles, viewer]
        sql = f"SELECT {PUBLIC_COLUMNS} FROM keys"  # noqa: S608 - fixed column list
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY scope = 'platform' DESC, org, scope, member, provider"
        return iter(self.store.execute(sql, params))

    def insert(self, *, key_id: str, scope: str, org: str | None, member: str | None, provider: str,
               data_key_id: int, nonce: bytes, ciphertext: bytes, hint: str, fingerprint: str,
               status: str, test_result: str | None, last_tested_at: str | None,
               created_at: str, from_env: str | None = None) -> None:
        """Store a new key (version 1) with its sealed secret (and the NAME of the variable it
        was read from, if it was)."""
        self.store.execute(
            "INSERT INTO keys (id, scope, org, member, provider, version, data_key_id, nonce, "
            "ciphertext, hint, fingerprint, status, test_result, last_tested_at, created_at, "
            "from_env) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, scope, org, member, provider, data_key_id, nonce, ciphertext, hint,
             fingerprint, status, test_result, last_tested_at, created_at, from_env),
        )

    def set_env_name(self, key_id: str, name: str | None) -> None:
        """Record the NAME of the environment variable that holds the key's secret (None:
        none does), as `export` will write it."""
        self.store.execute("UPDATE keys SET from_env = ? WHERE id = ?", (name, key_id))

    def env_names(self) -> Iterator[str]:
        """Every recorded variable name, once each (export hands out no invented name twice)."""
        return (r[0] for r in self.store.execute(
            "SELECT DISTINCT from_env FROM keys WHERE from_env IS NOT NULL ORDER BY from_env"))

    def delete(self, key_id: str) -> bool:
        """Delete a key; False if there was none."""
        return self.store.execute("DELETE FROM keys WHERE id = ?", (key_id,)).rowcount > 0

    _REF = f"SELECT {PUBLIC_COLUMNS} FROM keys WHERE "  # noqa: S608 - fixed column list

    def member_key(self, org: str, member: str, provider: str) -> Row | None:
        """The member's personal key for `provider` (its public columns)."""
        return self.store.one(self._REF + "scope = 'member' AND org = ? AND member = ? AND provider = ?",
                              (org, member, provider))

    def org_key(self, org: str, provider: str) -> Row | None:
        """The org's key for `provider` (its public columns)."""
        return self.store.one(self._REF + "scope = 'org' AND org = ? AND provider = ?", (org, provider))

    def platform_key(self, provider: str) -> Row | None:
        """The platform's own key for `provider` (its public columns)."""
        return self.store.one(self._REF + "scope = 'platform' AND provider = ?", (provider,))

    def count_for_org(self, org: str) -> int:
        """How many keys `org` holds (its org keys and its members' personal keys)."""
        return self.store.scalar("SELECT count(*) FROM keys WHERE org = ?", (org,))

    def of_member(self, org: str, member: str) -> list[Row]:
        """The member's personal keys as audited on removal: id, provider, hint, fingerprint, by id."""
        return self.store.all("SELECT id, provider, hint, fingerprint FROM keys "
                              "WHERE org = ? AND member = ? ORDER BY id", (org, member))

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
            return list(self.store.tuples(_NOT_UNDER + " ORDER BY rowid LIMIT ?",
                                          (data_key_id, limit)))
        return list(self.store.tuples(_NOT_UNDER + " AND rowid > ? ORDER BY rowid LIMIT ?",
                                      (data_key_id, after, limit)))

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
