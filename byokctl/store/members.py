"""Members of an org: the members table."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row

# A member with the number of personal keys stored for them (column `keys`).
_WITH_KEYS = ("SELECT m.org, m.email, m.role, m.created_at, "
              "(SELECT count(*) FROM keys k WHERE k.org = m.org AND k.member = m.email) AS keys "
              "FROM members m ")


class Members(Family):
    """Members of an org: the members table."""

    def get(self, org: str, email: str) -> Row | None:
        """The member's org, email, role, created_at and `keys` (their personal keys), or None."""
        return self.store.one(_WITH_KEYS + "WHERE m.org = ? AND m.email = ?", (org, email))

    def for_org(self, org: str) -> list[Row]:
        """The org's members as `get` gives them, by email."""
        return self.store.all(_WITH_KEYS + "WHERE m.org = ? ORDER BY m.email", (org,))

    def exists(self, org: str, email: str) -> bool:
        """Whether `email` is a member of `org`."""
        return self.store.scalar("SELECT 1 FROM members WHERE org = ? AND email = ?",
                                 (org, email)) is not None

    def role(self, org: str, email: str) -> str | None:
        """The member's role in `org`, or None if they are not a member."""
        return self.store.scalar("SELECT role FROM members WHERE org = ? AND email = ?", (org, email))

    def insert(self, org: str, email: str, role: str, created_at: str) -> None:
        """Add a member to `org`."""
        self.store.execute("INSERT INTO members (org, email, role, created_at) VALUES (?, ?, ?, ?)",
                           (org, email, role, created_at))

    def delete(self, org: str, email: str) -> None:
        """Remove a member; their personal keys go with them (the foreign key cascades)."""
        self.store.execute("DELETE FROM members WHERE org = ? AND email = ?", (org, email))

    def count_for_org(self, org: str) -> int:
        """How many members `org` has."""
        return self.store.scalar("SELECT count(*) FROM members WHERE org = ?", (org,))

    def count_admins(self, org: str) -> int:
        """How many of `org`'s members are admins."""
        return self.store.scalar("SELECT count(*) FROM members WHERE org = ? AND role = 'admin'",
                                 (org,))

    def all_roles(self) -> Iterator[tuple[str, str, str]]:
        """Every member of every org as `(org, email, role)`, by org then email, streamed
        (`export`). SQLite: plain tuples from a cursor without the row factory, which saves
        building a mapping per row; a PostgreSQL engine overrides it with its tuple cursor."""
        cur = self.store.conn.cursor()
        cur.row_factory = None
        return cur.execute("SELECT org, email, role FROM members ORDER BY org, email")

    def count(self) -> int:
        """How many members the vault holds, over all orgs."""
        return self.store.scalar("SELECT count(*) FROM members")
