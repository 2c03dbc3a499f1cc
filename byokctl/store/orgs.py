"""Organizations: the orgs table."""

from __future__ import annotations

from byokctl.store.family import Family


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
