"""Organizations: the orgs table."""

from __future__ import annotations

from byokctl.store.family import Family


class Orgs(Family):
    """Organizations: the orgs table."""

    def provider(self, slug: str) -> str | None:
        """The provider the org uses; None if there is no such org."""
        return self.store.scalar("SELECT provider FROM orgs WHERE slug = ?", (slug,))

    def provider_and_base_url(self, slug: str) -> tuple[str, str | None] | None:
        """Where the org's calls go: its provider and base_url (None: the provider's own API);
        None if there is no such org."""
        row = self.store.one("SELECT provider, base_url FROM orgs WHERE slug = ?", (slug,))
        return None if row is None else (row["provider"], row["base_url"])
