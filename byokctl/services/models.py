"""Models as orgs and the platform use them: choosing one (a retired model is refused, one
retiring soon warned about), the warnings for models in use, and moving every org pinned to a
retiring model onto another (`org migrate-model`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.errors import Conflict
from byokctl.providers import catalog
from byokctl.services import audit, rules
from byokctl.services.context import Context
from byokctl.services.permissions import require_operator

if TYPE_CHECKING:
    from byokctl.providers.catalog import Model
    from byokctl.services.orgs import Org
    from byokctl.store import Row


def choose(provider: str, name: str, where: str, *, current: str | None = None,
           now: datetime | None = None) -> tuple[Model, list[str]]:
    """The catalog model `name` (alias or pinned id) of `provider`, chosen for `where` ("org
    acme's model"), and the warnings it earns. A retired model is refused (UsageError naming
    its successor) unless it is `current`, what is stored already: keeping it is no choice."""
    from byokctl.domain.lifecycle import refusal, warning

    model = catalog.load().find(provider, name)
    lc = model.lifecycle(now or clock.now())
    if model.id != current and (refused := refusal(lc)) is not None:
        raise refused
    note = warning(lc, where)
    return model, [note] if note else []


def warnings_for(provider: str | None, model_id: str | None, where: str,
                 now: datetime | None = None) -> list[str]:
    """The warning for a stored model that is retired or retires within 30 days, if any."""
    from byokctl.domain.lifecycle import warning

    if provider is None or model_id is None:
        return []
    lc = catalog.load().lifecycle(provider, model_id, now or clock.now())
    note = None if lc is None else warning(lc, where)
    return [note] if note else []


def matching_ids(name: str) -> frozenset[str]:
    """The pinned ids `name` stands for: an alias or id of the catalog, else `name` itself (an
    org may be pinned to an id a newer catalog no longer lists)."""
    found = catalog.load().named(name)
    return frozenset(m.id for m in found) if found else frozenset({name})


def on_model(orgs: Iterator[Org], name: str) -> Iterator[Org]:
    """The orgs of `orgs` whose provider setting is pinned to `name` (alias or pinned id)."""
    ids = matching_ids(name)
    return (o for o in orgs if o.model in ids and o.provider in rules.BYOK_PROVIDERS)


# ---- org migrate-model ------------------------------------------------------------------------

@dataclass
class Migration:
    """What `org migrate-model` did (or would do, with `dry_run`)."""

    provider: str
    from_model: str
    to_model: str
    orgs: list[str]
    dry_run: bool
    at: str
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.orgs) and not self.dry_run

    def to_json(self) -> dict:
        return {"provider": self.provider, "from": self.from_model, "to": self.to_model,
                "orgs": self.orgs, "count": len(self.orgs), "dry_run": self.dry_run,
                "changed": self.changed, "at": self.at, "warnings": self.warnings}


def _from_id(name: str) -> tuple[str | None, str]:
    """(provider or None, pinned id) of the model being migrated away from."""
    found = catalog.load().named(name)
    if len(found) > 1:
        raise rules.UsageError(f"'{name}' names a model of several providers",
                               "give its pinned id (see `byokctl models list`)")
    if found:
        return found[0].provider, found[0].id
    return None, name  # not in this catalog: orgs may still be pinned to it


def _target(provider: str | None, to: str, orgs: list[Org], now: datetime) -> tuple[str, Model,
                                                                                   list[str]]:
    """The provider and model to move onto: of the same provider as the model moved from."""
    if provider is None:  # the source is not in the catalog: its orgs say whose it is
        providers = {o.provider for o in orgs}
        if len(providers) > 1:
            raise rules.UsageError("Orgs of several providers are pinned to that model",
                                   "migrate them with `byokctl org set-provider` one by one")
        provider = providers.pop() if providers else None
    candidates = catalog.load().named(to)
    same = [m for m in candidates if provider is None or m.provider == provider]
    if candidates and not same:
        raise rules.UsageError(f"Model {to} belongs to {candidates[0].provider}, not to {provider}",
                               f"give a model of {provider} (see `byokctl models list --provider "
                               f"{provider}`), or move each org with `byokctl org set-provider`")
    if not candidates:
        catalog.load().find(provider or catalog.PROVIDERS[0], to)  # the one NotFound message
    provider = same[0].provider
    model, notes = choose(provider, to, "the target model", now=now)
    return provider, model, notes


def migrate_model(ctx: Context, from_: str, to: str, *, dry_run: bool = False,
                  confirm: Callable[[Migration], bool] = lambda _m: True) -> Migration:
    """Move every org pinned to `from_` onto `to` (same provider, not retired): all or nothing
    in one transaction, one audit entry per org (`org.migrate_model`, before/after setting)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only
    from byokctl.services.orgs import Org

    require_operator(ctx, "migrate orgs between models")
    now = clock.now()
    provider, from_id = _from_id(from_)
    pinned = list(on_model(map(Org.from_row, ctx.store.orgs.all()), from_id))
    provider, target, notes = _target(provider, to, pinned, now)
    if target.id == from_id:
        raise rules.UsageError(f"{from_} and {to} are the same model ({from_id})",
                               "give the model to move onto as TO")
    plan = Migration(provider, from_id, target.id, [o.slug for o in pinned], dry_run,
                     clock.iso(now), notes)
    if dry_run or not pinned:
        return plan
    if not confirm(plan):
        raise Conflict(f"Migration from {from_id} to {target.id} not confirmed", "nothing was changed")

    def move(row: Row) -> dict:
        if row["model"] != from_id or row["provider"] != provider:
            raise Conflict(f"Org {row['slug']}'s provider setting changed meanwhile",
                           "run the command again; nothing was changed")
        return {"model": target.id, "updated_at": clock.stamp()}

    with ctx.write():
        moved = [Org.from_row(r) for r in ctx.store.orgs.all()
                 if r["model"] == from_id and r["provider"] == provider]
        if {o.slug for o in moved} != set(plan.orgs):
            raise Conflict("The orgs pinned to that model changed meanwhile", "run the command "
                           "again; nothing was changed")
        for o in moved:
            integrity.update_org(ctx, o.slug, move)
            audit.record(ctx, "org.migrate_model", org=o.slug, target=o.slug,
                         before=o.setting(), after={**o.setting(), "model": target.id})
    return plan
