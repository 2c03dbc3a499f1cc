"""Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row

# Everything about a key but its sealed secret (what `key list` and the audit may show).
PUBLIC_COLUMNS = ("id, scope, org, member, provider, hint, fingerprint, version, status, test_result, "
                  "created_at, rotated_at, last_used_at, last_tested_at")


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
               created_at: str) -> None:
        """Store a new key (version 1) with its sealed secret."""
        self.store.execute(
            "INSERT INTO keys (id, scope, org, member, provider, version, data_key_id, nonce, "
            "ciphertext, hint, fingerprint, status, test_result, last_tested_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key_id, scope, org, member, provider, data_key_id, nonce, ciphertext, hint,
             fingerprint, status, test_result, last_tested_at, created_at),
        )

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
