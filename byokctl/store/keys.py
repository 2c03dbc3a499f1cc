"""Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row


class Keys(Family):
    """Stored API keys (org, member and platform scope): the keys table; ciphertext in, ciphertext out."""

    # What the resolution chain needs of a candidate key.
    _REF = "SELECT id, scope, provider, fingerprint, status FROM keys WHERE "

    def member_key(self, org: str, member: str, provider: str) -> Row | None:
        """The member's personal key for `provider`: id, scope, provider, fingerprint, status."""
        return self.store.one(self._REF + "scope = 'member' AND org = ? AND member = ? AND provider = ?",
                              (org, member, provider))

    def org_key(self, org: str, provider: str) -> Row | None:
        """The org's key for `provider`: id, scope, provider, fingerprint, status."""
        return self.store.one(self._REF + "scope = 'org' AND org = ? AND provider = ?", (org, provider))

    def platform_key(self, provider: str) -> Row | None:
        """The platform's own key for `provider`: id, scope, provider, fingerprint, status."""
        return self.store.one(self._REF + "scope = 'platform' AND provider = ?", (provider,))

    def count_for_org(self, org: str) -> int:
        """How many keys `org` holds (its org keys and its members' personal keys)."""
        return self.store.scalar("SELECT count(*) FROM keys WHERE org = ?", (org,))

    def of_member(self, org: str, member: str) -> list[Row]:
        """The member's personal keys as audited on removal: id, provider, hint, fingerprint, by id."""
        return self.store.all("SELECT id, provider, hint, fingerprint FROM keys "
                              "WHERE org = ? AND member = ? ORDER BY id", (org, member))
