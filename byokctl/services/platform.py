"""The platform default: which provider and model orgs in platform mode run on.

Kept in the vault's meta table (`platform_provider`, `platform_model`, `platform_base_url`),
MACed as one record (`services.integrity.set_platform`), read by
`services.resolution.platform_default`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from byokctl.providers import catalog
from byokctl.services import audit, rules
from byokctl.services.context import Context
from byokctl.services.permissions import require_operator
from byokctl.services.resolution import platform_default

META_KEYS = ("platform_provider", "platform_model", "platform_base_url")


@dataclass
class PlatformDefault:
    provider: str
    model: str
    base_url: str | None
    configured: bool  # False: nothing set yet, these are byokctl's built-in defaults
    key_id: str | None  # the platform's own key for this provider, if one is stored

    def setting(self) -> dict:
        return {"provider": self.provider, "model": self.model, "base_url": self.base_url}

    def to_json(self) -> dict:
        return {**self.setting(), "configured": self.configured, "key_id": self.key_id}


def current(ctx: Context) -> PlatformDefault:
    """Read-only: needs no master key."""
    provider, model, base_url = platform_default(ctx)
    key = ctx.store.keys.platform_key(provider)
    key_id = None if key is None else key["id"]
    configured = ctx.store.meta("platform_provider") is not None
    return PlatformDefault(provider, model, base_url, configured, key_id)


@dataclass
class DefaultChange:
    before: dict
    after: PlatformDefault
    changed: bool
    warnings: list[str] = field(default_factory=list)  # a base_url corrected, a model retiring

    def to_json(self) -> dict:
        return {"changed": self.changed, "before": self.before, **self.after.to_json(),
                "warnings": self.warnings}


def set_default(ctx: Context, provider: str, model: str, base_url: str | None = None, *,
                allow_insecure: bool = False) -> DefaultChange:
    """Point platform mode at `provider`/`model` (an alias is pinned); `base_url` or none."""
    from byokctl.services import integrity  # hashes and row MACs: writes only
    from byokctl.services.models import choose

    rules.choice(provider, rules.BYOK_PROVIDERS, "provider")
    catalog.load().find(provider, model)  # an unknown model is named before anything else
    warnings: list[str] = []
    if base_url is not None:
        base_url, corrected = rules.provider_base_url(provider, base_url, allow_insecure=allow_insecure)
        warnings += [corrected] if corrected else []
    require_operator(ctx, "change the platform default")
    before = current(ctx)
    kept = before.model if before.configured and before.provider == provider else None
    pinned_model, notes = choose(provider, model, "the platform default model", current=kept)
    pinned = pinned_model.id
    after = {"provider": provider, "model": pinned, "base_url": base_url}
    # Storing the built-in default explicitly is a change too: it no longer moves with byokctl.
    changed = after != before.setting() or not before.configured
    if changed:
        with ctx.write():
            integrity.set_platform(ctx, dict(zip(META_KEYS, (provider, pinned, base_url),
                                                 strict=True)))
            audit.record(ctx, "platform.set_default", before=before.setting(), after=after)
    return DefaultChange(before.setting(), current(ctx), changed, warnings + notes)
