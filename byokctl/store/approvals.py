"""Member-key endpoint approvals: the endpoint_approvals table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row

COLUMNS = ("org", "member", "provider", "base_url", "approved_by", "approved_as", "approved_at")
_COLUMNS = ", ".join(COLUMNS)


class Approvals(Family):
    """Member-key endpoint approvals: the endpoint_approvals table."""

    def get(self, org: str, member: str, provider: str, base_url: str) -> Row | None:
        """The approval of one member's personal `provider` key in `org` for one (normalised) URL."""
        return self.store.one(f"SELECT {_COLUMNS} FROM endpoint_approvals WHERE org = ? "  # noqa: S608
                              "AND member = ? AND provider = ? AND base_url = ?",
                              (org, member, provider, base_url))

    def all(self, org: str | None = None) -> list[Row]:
        """Every approval (in one org, or in all: a few rows per member), by org, member,
        provider, then when it was given."""
        sql = f"SELECT {_COLUMNS} FROM endpoint_approvals"  # noqa: S608
        params: tuple[str, ...] = ()
        if org is not None:
            sql, params = sql + " WHERE org = ?", (org,)
        return self.store.all(sql + " ORDER BY org, member, provider, approved_at", params)

    def insert(self, org: str, member: str, provider: str, base_url: str, approved_by: str,
               approved_as: str, approved_at: str) -> None:
        """Record an approval (its row MAC is the caller's: `integrity.seal`)."""
        self.store.execute(
            f"INSERT INTO endpoint_approvals ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (org, member, provider, base_url, approved_by, approved_as, approved_at))

    def delete(self, org: str, member: str, provider: str, base_url: str) -> None:
        """Withdraw one approval."""
        self.store.execute("DELETE FROM endpoint_approvals WHERE org = ? AND member = ? "
                           "AND provider = ? AND base_url = ?", (org, member, provider, base_url))
