"""`apply`: converge the vault to a provisioning file, all or nothing.

Every change goes through the service an individual command would use (`orgs.create`,
`plans.set_plan`, `members.add`, `keys.rotate`, ...), so it is checked and audited exactly
as that command would be; all of them run inside one write transaction (the services' own
transactions become savepoints), and the changes reported are the audit entries written in it.
Any error rolls the whole file back. `--dry-run` runs the same code and rolls back at the end,
so it reports exactly what apply would do, and every error apply would hit.

The file format and its parsing: services/apply_file.py (`SCHEMA`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from byokctl import clock
from byokctl.errors import ByokError, Conflict, PlanGate
from byokctl.providers import catalog
from byokctl.services import audit, endpoints, keys, keytest, members, orgs, plans, platform, rules
from byokctl.services.apply_file import (
    Grace,
    KeySpec,
    OrgSpec,
    PlatformSpec,
    Spec,
    at_field,
    load,
    parse,
    read_secrets,
)
from byokctl.services.context import Context
from byokctl.services.permissions import require_operator

# Actions after which the write-ahead log may hold old ciphertext: purge it once committed.
PURGING_ACTIONS = ("key.rotate", "key.remove", "member.remove")


# ---- converging -------------------------------------------------------------------------------

@dataclass
class Change:
    action: str  # the audit action, as the individual command records it
    org: str | None
    target: str | None
    detail: str

    def to_json(self) -> dict:
        return {"action": self.action, "org": self.org, "target": self.target,
                "detail": self.detail}


@dataclass
class Outcome:
    changes: list[Change]
    dry_run: bool
    warnings: list[str] = field(default_factory=list)  # each naming its field (base_url, model)

    @property
    def applied(self) -> bool:
        """True when changes were written (False for a dry run, or when nothing differed)."""
        return bool(self.changes) and not self.dry_run

    def to_json(self) -> dict:
        return {"changes": self.changes, "applied": self.applied, "dry_run": self.dry_run,
                "warnings": self.warnings}


Progress = Callable[[int, int], None]


def run(ctx: Context, text: str, source: str, *, dry_run: bool = False, prune: bool = False,
        test_keys: bool = False, env: Mapping[str, str] | None = None,
        progress: Progress | None = None) -> Outcome:
    """Converge the vault to the file `text` (named `source` in messages); all or nothing."""
    require_operator(ctx, "apply provisioning files")
    spec = parse(load(text, source))
    secrets = read_secrets(spec, os.environ if env is None else env)
    tester: keys.KeyTester | None = None
    if test_keys and secrets:
        trial = _Trial(ctx, spec)
        _converge_once(ctx, spec, secrets, prune, trial.record, None, [], commit=False)
        trial.probe_all()  # outside any transaction: no lock held during network calls
        tester = trial.replay
    notes: list[str] = []
    entries = _converge_once(ctx, spec, secrets, prune, tester, progress, notes, commit=not dry_run)
    if not dry_run and any(e.action in PURGING_ACTIONS for e in entries):
        ctx.store.purge_wal()
    return Outcome([_change(e, dry_run) for e in entries], dry_run, notes)


class _RollBack(Exception):
    """Ends a dry run's transaction without committing."""


def _converge_once(ctx: Context, spec: Spec, secrets: dict[str, str], prune: bool,
                   tester: keys.KeyTester | None, progress: Progress | None, notes: list[str],
                   *, commit: bool) -> list[audit.Entry]:
    """Run every change in one transaction; the audit entries it wrote are the changes (and
    `notes` gets the warnings, each naming its field)."""
    written: list[audit.Entry] = []
    try:
        with ctx.write():
            start = _last_seq(ctx)
            steps = ([spec.platform] if spec.platform else []) + list(spec.orgs)
            for done, step in enumerate(steps, 1):
                if isinstance(step, PlatformSpec):
                    _platform(ctx, step, secrets, prune, tester, notes)
                else:
                    _org(ctx, step, secrets, prune, tester, notes)
                if progress is not None:
                    progress(done, len(steps))
            count = _last_seq(ctx) - start
            written = audit.log(ctx, limit=count)[::-1] if count else []
            if not commit:
                raise _RollBack
    except _RollBack:
        pass
    return written


# ---- errors name the file's field, not a command ------------------------------------------------

@contextmanager
def _at(path: str, fix: str | None = None) -> Iterator[None]:
    """An error while converging the field at `path` (`orgs.acme.provider`) names that field
    (first in the message, and as `details.field`), with `fix` when given: one made in the
    file, where the service's own would name a command."""
    try:
        yield
    except ByokError as exc:
        if "field" in exc.details:
            raise  # named by an inner field already
        raise at_field(exc, path, fix) from None


def _last_seq(ctx: Context) -> int:
    return ctx.store.audit.head_seq()


def _platform(ctx: Context, p: PlatformSpec, secrets: dict[str, str], prune: bool,
              tester: keys.KeyTester | None, notes: list[str]) -> None:
    if p.provider is not None and p.model is not None:
        current = platform.current(ctx)
        if p.base_url is None:  # left out: kept while the provider stays
            url = current.base_url if current.configured and current.provider == p.provider else None
        else:
            url = p.base_url or None
        # A URL kept as stored was accepted when it was set; a new one is checked in full.
        url_note = None
        if url is not None and url != current.base_url:
            with _at("platform.base_url"):
                url_note = rules.provider_base_url(p.provider, url, allow_insecure=p.allow_insecure,
                                                   insecure_fix="set platform.allow_insecure = true")[1]
        with _at("platform.model"):
            catalog.load().find(p.provider, p.model)
        with _at("platform"):
            change = platform.set_default(ctx, p.provider, p.model, url,
                                          allow_insecure=p.allow_insecure or url == current.base_url)
        notes += [f"platform.{'base_url' if w == url_note else 'model'}: {w}" for w in change.warnings]
    if p.keys is not None:
        _keys_converge(ctx, p.keys, secrets, tester, org=None)
        if prune:
            wanted = {k.provider for k in p.keys}
            for key in keys.list_keys(ctx):
                if key.scope == "platform" and key.provider not in wanted:
                    keys.remove(ctx, key.id)


def _org(ctx: Context, o: OrgSpec, secrets: dict[str, str], prune: bool,
         tester: keys.KeyTester | None, notes: list[str]) -> None:
    slug = o.slug
    at = f"orgs.{slug}"
    with _at(at):
        org, created = orgs.create(ctx, slug, name=o.name, plan=o.plan or "free",
                                   credits=o.credits or 0, if_not_exists=True)
    if o.name is not None and not created:
        with _at(f"{at}.name"):
            orgs.rename(ctx, slug, o.name)
    if o.plan is not None:
        with _at(f"{at}.plan"):
            plans.set_plan(ctx, slug, o.plan)
    with _at(f"{at}.grace"):
        _grace_converge(ctx, slug, o.grace)
    if o.budget is not None:
        with _at(f"{at}.budget_monthly_usd"):
            orgs.set_budget(ctx, slug, None if o.budget is False else float(o.budget))
    if o.sets_provider:
        notes += _provider_converge(ctx, o)
    if o.members is not None:
        current = {m.email: m.role for m in members.list_members(ctx, slug)}
        for email, role in o.members.items():
            with _at(f'{at}.members."{email}"'):
                if email not in current:
                    members.add(ctx, slug, email, role)
                elif current[email] != role:
                    members.set_role(ctx, slug, email, role)
    if o.keys is not None:
        _keys_converge(ctx, o.keys, secrets, tester, org=slug, prune=prune)
    if prune and o.keys is not None:
        wanted = {(k.member, k.provider) for k in o.keys}
        for key in keys.list_keys(ctx, slug):
            if (key.member, key.provider) not in wanted:
                keys.remove(ctx, key.id)
    if prune and o.members is not None:
        for m in members.list_members(ctx, slug):
            if m.email not in o.members:
                members.remove(ctx, slug, m.email)


def _grace_converge(ctx: Context, slug: str, grace: Grace | bool | None) -> None:
    if grace is None:
        return
    org = orgs.get(ctx, slug)
    if grace is False:
        if org.grace_until is not None:
            plans.revoke_grace(ctx, slug)
    elif isinstance(grace, Grace) and grace.until is not None:
        # Already granted to that moment: unchanged, even once it has passed.
        end = clock.iso(rules.parse_when(grace.until, end_of_day=True))
        if (org.grace_until, org.grace_reason) != (end, grace.reason or None):
            # The file is the confirmation of a grant it moves earlier, as for a provider switch.
            plans.grant_grace(ctx, slug, until=grace.until, reason=grace.reason,
                              confirm_shorter=lambda _old, _new: True)
    elif isinstance(grace, Grace) and org.grace_until is None:
        # `days` grants once: re-running the file neither extends a grant nor renews a lapsed one.
        plans.grant_grace(ctx, slug, days=grace.days, reason=grace.reason)


def _provider_converge(ctx: Context, o: OrgSpec) -> list[str]:
    """Converge the org's provider setting; the warnings, each naming its field."""
    at = f"orgs.{o.slug}"
    org = orgs.get(ctx, o.slug)
    provider = o.provider or org.provider
    # The fields one at a time first, so that an error names the one that is wrong.
    url_note = None
    if isinstance(o.base_url, str):
        with _at(f"{at}.base_url"):
            if provider in rules.BYOK_PROVIDERS:
                url_note = rules.provider_base_url(provider, o.base_url, allow_insecure=o.allow_insecure,
                                                   insecure_fix=f"set {at}.allow_insecure = true")[1]
            else:
                rules.base_url(o.base_url, allow_insecure=o.allow_insecure,
                               insecure_fix=f"set {at}.allow_insecure = true")
    if o.model is not None and provider in rules.BYOK_PROVIDERS:
        with _at(f"{at}.model"):
            catalog.load().find(provider, o.model)
    with _at(f"{at}.provider"):
        if _provider_unchanged(org, o, provider):
            # Re-stating the current setting is no selection: an org in soft fallback (gate
            # closed) keeps its stored BYOK setting without a plan-gate error.
            from byokctl.services.models import warnings_for

            return [f"{at}.model: {w}" for w in warnings_for(org.provider, org.model,
                                                             f"org {o.slug}'s model")]
    platform_fix = None
    if provider == "platform" and (o.model or o.base_url):
        platform_fix = (f"leave model and base_url out of {at} while its provider is \"platform\" "
                        "(the platform's own are [platform].model and base_url)")
    try:
        with _at(f"{at}.provider", platform_fix):
            change = orgs.plan_provider_change(
                ctx, o.slug, provider, model=o.model,
                base_url=o.base_url if isinstance(o.base_url, str) else None, fallback=o.fallback,
                allow_insecure=o.allow_insecure)
    except PlanGate as exc:  # named its field above; the fix is the file's
        raise exc.reworded(fix=f'set {at}.plan to "growth" or "scale" (or give {at}.grace), or '
                               f'{at}.provider to "platform"') from None
    if o.base_url is False:
        change.after["base_url"] = None
    orgs.set_provider(ctx, change, lambda _change: True)  # the file is the confirmation
    return [f"{at}.{'base_url' if w == url_note else 'model'}: {w}" for w in change.warnings]


def _stored_url(provider: str, o: OrgSpec) -> str:
    """The base_url the file's would be stored as (corrected for a BYOK provider's SDK)."""
    assert isinstance(o.base_url, str)
    if provider in rules.BYOK_PROVIDERS:
        return rules.provider_base_url(provider, o.base_url, allow_insecure=o.allow_insecure)[0]
    return rules.base_url(o.base_url, allow_insecure=o.allow_insecure)


def _provider_unchanged(org: orgs.Org, o: OrgSpec, provider: str) -> bool:
    if provider != org.provider or (o.fallback is not None and o.fallback != org.fallback):
        return False
    if o.base_url is False and org.base_url is not None:
        return False
    if isinstance(o.base_url, str) and _stored_url(provider, o) != org.base_url:
        return False
    if o.model is not None:
        return provider in rules.BYOK_PROVIDERS and \
            catalog.load().find(provider, o.model).id == org.model
    return True


def _keys_converge(ctx: Context, wanted: list[KeySpec], secrets: dict[str, str],
                   tester: keys.KeyTester | None, *, org: str | None, prune: bool = False) -> None:
    for k in wanted:
        with _at(k.path):
            _key_converge(ctx, k, secrets[k.path], tester, org=org, prune=prune)


def _key_converge(ctx: Context, k: KeySpec, secret: str, tester: keys.KeyTester | None, *,
                  org: str | None, prune: bool) -> None:
    if org is not None and k.member is not None and k.approved_base_urls is not None:
        # Before the key: `--test-keys` tests it where the file lets it go.
        endpoints.converge(ctx, org, k.member, k.provider, k.approved_base_urls, prune=prune)
    existing = keys.find(ctx, provider=k.provider, org=org, member=k.member, platform=org is None)
    if existing is None:
        slot = keys.prepare_add(ctx, provider=k.provider, org=org, member=k.member,
                                platform=org is None)
        keys.add(ctx, slot, secret, allow_admin_key=k.allow_admin_key, tester=tester,
                 from_env=k.from_env)
    elif existing.fingerprint != ctx.vault().fingerprint(secret):
        keys.rotate(ctx, existing.id, secret, allow_admin_key=k.allow_admin_key, tester=tester,
                    from_env=k.from_env)
    elif existing.from_env != k.from_env:  # the same secret, now named as the file names it
        keys.remember_env_name(ctx, existing.id, k.from_env)


class _Trial:
    """`--test-keys`: a rolled-back first pass records each secret apply would store and where
    it would be used (the org's base URL as the file leaves it); they are probed outside any
    transaction; the real pass replays the results, so a refused key stops everything."""

    def __init__(self, ctx: Context, spec: Spec) -> None:
        self.ctx = ctx
        self.paths = {_slot_of(k, o.slug): k.path for o in spec.orgs for k in o.keys or []}
        if spec.platform:
            self.paths.update({_slot_of(k, None): k.path for k in spec.platform.keys or []})
        self.pending: dict[tuple, str | None] = {}
        self.results: dict[tuple, str] = {}

    def record(self, owner: keys.Key | keys.Slot, secret: str) -> str:
        self.pending[(_slot_id(owner), secret)] = keytest.base_url_for(self.ctx, owner)
        return keytest.OK

    def probe_all(self) -> None:
        for (slot, secret), url in self.pending.items():
            seen = keytest.probe(slot[3], secret, base_url=url)
            if seen.error is not None:
                err = seen.error
                raise err.reworded(f"{self.paths.get(slot, 'a key')}: {err.what}",
                                   f"{err.fix}; nothing was applied" if err.fix else "nothing was applied")
            self.results[(slot, secret)] = seen.result

    def replay(self, owner: keys.Key | keys.Slot, secret: str) -> str:
        try:
            return self.results[(_slot_id(owner), secret)]
        except KeyError:
            raise Conflict("The vault changed while apply tested the keys", "run apply again") from None


def _slot_of(k: KeySpec, org: str | None) -> tuple:
    return ("platform" if org is None else "member" if k.member else "org", org, k.member,
            k.provider)


def _slot_id(owner: keys.Key | keys.Slot) -> tuple:
    return (owner.scope, owner.org, owner.member, owner.provider)


# ---- reporting --------------------------------------------------------------------------------

def _change(e: audit.Entry, dry_run: bool) -> Change:
    target = e.target
    if dry_run and e.action == "key.add":
        target = None  # the id drawn in a dry run is rolled back with everything else
    return Change(e.action, e.org, target, describe(e.action, e.before, e.after))


def _shown(value: Any) -> str:
    return "—" if value is None else str(value)


def describe(action: str, before: Any, after: Any) -> str:
    """One line for people from an audit entry's before/after (which never hold secrets)."""
    b, a = before or {}, after or {}
    if action.startswith("key."):
        k = a or b
        owner = (f"{k['member']}'s " if k.get("member") else
                 "platform " if k.get("scope") == "platform" else "org ")
        what = f"{owner}{k.get('provider')} key"
        if action in ("key.approve_endpoint", "key.revoke_endpoint"):
            verb = "may be sent to" if a else "is no longer sent to"
            return f"{what} {verb} {k.get('base_url')}"
        if action == "key.rotate":
            return f"{what} {b.get('hint')} → {a.get('hint')} (version {a.get('version')})"
        return f"{what} {k.get('hint')}" + (" removed" if action == "key.remove" else "")
    if action == "member.remove":
        purged = len(b.get("keys") or [])
        return f"role {b.get('role')} removed" + (
            f", {purged} personal key(s) purged" if purged else "")
    names = list(a) + [k for k in b if k not in a]
    diff = [f"{k} {_shown(b.get(k))} → {_shown(a.get(k))}" for k in names if a.get(k) != b.get(k)]
    if not b or not diff:  # a creation, or a default now stored explicitly
        return ", ".join(f"{k} {_shown(v)}" for k, v in a.items() if v is not None)
    return ", ".join(diff)
