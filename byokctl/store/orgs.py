"""Organizations: the orgs table."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from byokctl.store.family import Family

if TYPE_CHECKING:
    from byokctl.store import Row


class Orgs(Family):
    """Organizations: the orgs table."""

    def credits_and_created_at(self, slug: str) -> tuple[int, str] | None:
        """The org's credit balance and creation stamp, or None if there is no such org."""
        row = self.store.one("SELECT credits, created_at FROM orgs WHERE slug = ?", (slug,))
        return None if row is None else (row["credits"], row["created_at"])

    def budget_monthly_usd(self, slug: str) -> float | None:
        """The org's monthly BYOK budget in USD (None: none set, or no such org)."""
        return self.store.scalar("SELECT budget_monthly_usd FROM orgs WHERE slug = ?", (slug,))

    def provider(self, slug: str) -> str | None:
        """The org's provider (None: no such org)."""
        return self.store.scalar("SELECT provider FROM orgs WHERE slug = ?", (slug,))

    def provider_and_base_url(self, slug: str) -> tuple[str, str | None] | None:
        """Where the org's calls go: its provider and base_url (None: the provider's own API);
        None if there is no such org."""
        row = self.store.one("SELECT provider, base_url FROM orgs WHERE slug = ?", (slug,))
        return None if row is None else (row["provider"], row["base_url"])

    def get(self, slug: str) -> Row | None:
        """The org's row (every column), or None."""
        return self.store.one("SELECT * FROM orgs WHERE slug = ?", (slug,))

    def exists(self, slug: str) -> bool:
        """Whether there is an org `slug`."""
        return self.store.scalar("SELECT 1 FROM orgs WHERE slug = ?", (slug,)) is not None

    def balance(self, slug: str) -> tuple[int, int] | None:
        """The org's `(credits, shortfall)`, or None if there is no such org."""
        row = self.store.one("SELECT credits, shortfall FROM orgs WHERE slug = ?", (slug,))
        return None if row is None else (row["credits"], row["shortfall"])

    def insert(self, slug: str, name: str, plan: str, credits: int, now: str) -> None:
        """Add an org (created and updated `now`); its other columns take their defaults."""
        self.store.execute(
            "INSERT INTO orgs (slug, name, plan, credits, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (slug, name, plan, credits, now, now),
        )

    def all(self) -> Iterator[Row]:
        """Every org's row, by slug, streamed as the engine reads them."""
        return iter(self.store.execute("SELECT * FROM orgs ORDER BY slug"))

    def for_member(self, email: str, roles: Sequence[str]) -> Iterator[Row]:
        """The rows of the orgs `email` is a member of with one of `roles`, by slug, streamed."""
        marks = ", ".join("?" * len(roles))
        return iter(self.store.execute(
            "SELECT o.* FROM orgs o JOIN members m ON m.org = o.slug "  # noqa: S608 - only ?s
            f"WHERE m.email = ? AND m.role IN ({marks}) ORDER BY o.slug",
            (email, *roles),
        ))

    def delete_with_dependents(self, slug: str) -> None:
        """Delete the org, its usage records and reservations; members and keys go with it
        (the schema's foreign keys cascade). The audit log keeps its history."""
        self.store.usage.forget_org(slug)
        self.store.execute("DELETE FROM reservations WHERE org = ?", (slug,))
        self.store.execute("DELETE FROM orgs WHERE slug = ?", (slug,))

    def count(self) -> int:
        """How many orgs the vault holds."""
        return self.store.scalar("SELECT count(*) FROM orgs")
