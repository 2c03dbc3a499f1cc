"""`apply`: converge the vault to a provisioning file, all or nothing.

Every change goes through the service an individual command would use (`orgs.create`,
`plans.set_plan`, `members.add`, `keys.rotate`, ...), so it is checked and audited exactly
as that command would be; all of them run inside one write transaction (the services' own
transactions become savepoints), and the changes reported are the audit entries written in it.
Any error rolls the whole file back. `--dry-run` runs the same code and rolls back at the end,
so it reports exactly what apply would do, and every error apply would hit.

The file format is `SCHEMA` below (TOML or JSON, same structure).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from byokctl import clock
from byokctl.errors import ByokError, Conflict, UsageError
from byokctl.providers import catalog
from byokctl.services import audit, keys, members, orgs, plans, platform, rules
from byokctl.services.context import Context
from byokctl.services.permissions import require_operator

SCHEMA = """\
[platform]                  optional: as `platform set-default`
provider = "anthropic"      anthropic | openai (model required with it)
model = "haiku"             alias or pinned id (stored pinned)
base_url = "https://..."    optional; false removes it
[[platform.keys]]           the platform's own keys (as below, no member)

[orgs.acme]                 one table per org, named by its slug
name = "Acme Inc"           display name (new org: the slug)
plan = "growth"             free | starter | growth | scale (new: free)
credits = 500               STARTING balance: only when apply creates it
provider = "anthropic"      platform | anthropic | openai
model = "sonnet"            alias or pinned id (stored pinned)
base_url = "https://..."    false removes it
fallback = "never"          never | missing-key | provider-error
budget_monthly_usd = 250    monthly BYOK budget; false removes it
grace = { until = "2026-12-31", reason = "migration" }
                            or { days = 30 }: granted only if the org has
                            no grant; or false: revoked
[orgs.acme.members]
"alice@acme.com" = "admin"  admin | staffing | interviewer
[[orgs.acme.keys]]          one table per key
provider = "anthropic"      anthropic | openai
from_env = "ACME_KEY"       NAME of the variable holding the secret
member = "alice@acme.com"   optional: a member's personal key
allow_admin_key = false     optional

A field left out is left as it is. Secrets come only from the
environment: an inline secret is refused. A key whose secret matches
the stored one is unchanged; another secret rotates it. Nothing is
deleted unless --prune: then members and keys that an org's members or
keys do not list (and platform keys not in [[platform.keys]]) are
removed. Orgs are never deleted."""

TOP_FIELDS = ("platform", "orgs")
PLATFORM_FIELDS = ("provider", "model", "base_url", "keys")
ORG_FIELDS = ("name", "plan", "credits", "provider", "model", "base_url", "fallback",
              "budget_monthly_usd", "grace", "members", "keys")
KEY_FIELDS = ("provider", "member", "from_env", "allow_admin_key")
GRACE_FIELDS = ("until", "days", "reason")
INLINE_SECRET_FIELDS = ("secret", "key", "api_key", "apikey", "value", "token", "password")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Actions after which the write-ahead log may hold old ciphertext: purge it once committed.
PURGING_ACTIONS = ("key.rotate", "key.remove", "member.remove")


# ---- the file ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeySpec:
    path: str  # where it is in the file, for messages: orgs.acme.keys[0]
    provider: str
    from_env: str
    member: str | None = None
    allow_admin_key: bool = False


@dataclass(frozen=True)
class Grace:
    until: str | None = None
    days: int | None = None
    reason: str | None = None


@dataclass
class PlatformSpec:
    provider: str | None = None
    model: str | None = None
    base_url: str | bool | None = None  # False: remove
    keys: list[KeySpec] | None = None


@dataclass
class OrgSpec:
    slug: str
    name: str | None = None
    plan: str | None = None
    credits: int | None = None
    provider: str | None = None
    model: str | None = None
    base_url: str | bool | None = None  # False: remove
    fallback: str | None = None
    budget: float | bool | None = None  # False: remove
    grace: Grace | bool | None = None  # False: revoke
    members: dict[str, str] | None = None
    keys: list[KeySpec] | None = None

    @property
    def sets_provider(self) -> bool:
        return any(v is not None for v in (self.provider, self.model, self.base_url, self.fallback))


@dataclass
class Spec:
    platform: PlatformSpec | None = None
    orgs: list[OrgSpec] = field(default_factory=list)

    def all_keys(self) -> list[KeySpec]:
        found = list(self.platform.keys or []) if self.platform else []
        for o in self.orgs:
            found += o.keys or []
        return found


def load(text: str, source: str) -> dict:
    """Parse TOML or JSON: by the name's extension, else by the content (`{` means JSON)."""
    lowered = source.lower()
    is_json = lowered.endswith(".json") or (
        not lowered.endswith(".toml") and text.lstrip().startswith("{"))
    try:
        doc = json.loads(text) if is_json else tomllib.loads(text)
    except json.JSONDecodeError as exc:  # messages give a position, never the content
        raise UsageError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno}); fix it and run apply again") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source} is not valid TOML ({exc}); fix it and run apply again") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{source} must hold a table (a JSON object) with `orgs` and/or `platform`")
    return doc


def _refuse_secrets(value: Any, path: str) -> None:
    """Refuse anything that looks like an API key anywhere in the file, naming only where."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and rules.looks_like_secret(k.strip()):
                raise UsageError(f"A name under {path or 'the top level'} looks like an API key; "
                                 "give keys only as from_env = \"VAR\" (and rotate that key, since "
                                 "the file exposed it)")
            _refuse_secrets(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_secrets(v, f"{path}[{i}]")
    elif isinstance(value, str) and rules.looks_like_secret(value.strip()):
        raise UsageError(f"{path} holds what looks like an API key; give keys only by environment "
                         "variable name (from_env = \"VAR\"), and rotate that key, since the file "
                         "exposed it")


def _table(value: Any, path: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise UsageError(f"{path} must be a table (a JSON object)")
    for name in value:
        if name not in allowed:
            raise UsageError(f"Unknown field {path}.{name}; known fields there: "
                             f"{', '.join(allowed)}")
    return value


def _str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise UsageError(f"{path} must be a string")
    return value


def _int(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{path} must be a whole number")
    return value


def _removable(value: Any, path: str, kind: Callable[[Any, str], Any]) -> Any:
    """A value, or false (JSON null too) to remove it."""
    if value is False or value is None:
        return False
    if value is True:
        raise UsageError(f"{path} must be a value, or false to remove it")
    return kind(value, path)


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{path} must be a number (USD), or false to remove it")
    return float(value)


def _grace(value: Any, path: str) -> Grace | bool:
    if value is False or value is None:
        return False
    t = _table(value, path, GRACE_FIELDS)
    if ("until" in t) == ("days" in t):
        raise UsageError(f"{path} needs exactly one of until = \"YYYY-MM-DD\" or days = N "
                         "(or grace = false to revoke)")
    reason = _str(t["reason"], f"{path}.reason") if "reason" in t else None
    if "until" in t:
        return Grace(until=_str(t["until"], f"{path}.until"), reason=reason)
    return Grace(days=_int(t["days"], f"{path}.days"), reason=reason)


def _keys(value: Any, path: str, *, org: bool, member_list: dict[str, str] | None) -> list[KeySpec]:
    if not isinstance(value, list):
        raise UsageError(f"{path} must be a list of tables ([[{path}]] in TOML)")
    found: list[KeySpec] = []
    slots: set[tuple[str | None, str]] = set()
    allowed = KEY_FIELDS if org else tuple(f for f in KEY_FIELDS if f != "member")
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if isinstance(item, dict):
            for name in item:
                if name.lower() in INLINE_SECRET_FIELDS:
                    raise UsageError(
                        f"{where}.{name}: inline secrets are refused; put the key in an "
                        "environment variable and name it with from_env = \"VAR\"")
        t = _table(item, where, allowed)
        for required in ("provider", "from_env"):
            if required not in t:
                raise UsageError(f"{where} needs {required}")
        provider = rules.choice(_str(t["provider"], f"{where}.provider"), rules.BYOK_PROVIDERS,
                                "provider")
        env = _str(t["from_env"], f"{where}.from_env")
        if not ENV_NAME.fullmatch(env):
            raise UsageError(f"{where}.from_env must be the NAME of an environment variable "
                             "holding the key (e.g. ACME_ANTHROPIC_KEY)")
        member = rules.email(_str(t["member"], f"{where}.member")) if "member" in t else None
        if member is not None and member_list is not None and member not in member_list:
            raise UsageError(f"{where} is {member}'s key but {path.rsplit('.', 1)[0]}.members "
                             "does not list them; add them there")
        admin = t.get("allow_admin_key", False)
        if not isinstance(admin, bool):
            raise UsageError(f"{where}.allow_admin_key must be true or false")
        if (member, provider) in slots:
            raise UsageError(f"{where} repeats the {provider} key"
                             + (f" of {member}" if member else "") + "; give each key once")
        slots.add((member, provider))
        found.append(KeySpec(where, provider, env, member, admin))
    return found


def _members(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise UsageError(f"{path} must be a table of email = \"role\"")
    found: dict[str, str] = {}
    for email, role in value.items():
        normal = rules.email(email)
        if normal in found:
            raise UsageError(f"{path} lists {normal} twice; give each member once")
        found[normal] = rules.choice(_str(role, f"{path}.\"{email}\""), rules.ROLES, "role")
    return found


def parse(doc: dict) -> Spec:
    """Check the file's structure and field types (values are checked by the services)."""
    _refuse_secrets(doc, "")
    top = _table(doc, "the file", TOP_FIELDS)
    spec = Spec()
    if "platform" in top:
        t = _table(top["platform"], "platform", PLATFORM_FIELDS)
        p = PlatformSpec(
            provider=_str(t["provider"], "platform.provider") if "provider" in t else None,
            model=_str(t["model"], "platform.model") if "model" in t else None,
            base_url=_removable(t["base_url"], "platform.base_url", _str) if "base_url" in t else None,
            keys=_keys(t["keys"], "platform.keys", org=False, member_list=None) if "keys" in t else None,
        )
        if (p.provider is None) != (p.model is None) or (p.provider is None and p.base_url is not None):
            raise UsageError("platform needs provider and model together (as `byokctl platform "
                             "set-default PROVIDER --model M`)")
        spec.platform = p
    table = top.get("orgs", {})
    if not isinstance(table, dict):
        raise UsageError("orgs must be a table of org slug = settings ([orgs.acme] in TOML)")
    for slug, value in table.items():
        path = f"orgs.{rules.slug(slug)}"
        t = _table(value, path, ORG_FIELDS)
        o = OrgSpec(slug)
        for name in ("name", "plan", "provider", "model", "fallback"):
            if name in t:
                setattr(o, name, _str(t[name], f"{path}.{name}"))
        if "credits" in t:
            o.credits = _int(t["credits"], f"{path}.credits")
        if "base_url" in t:
            o.base_url = _removable(t["base_url"], f"{path}.base_url", _str)
        if "budget_monthly_usd" in t:
            o.budget = _removable(t["budget_monthly_usd"], f"{path}.budget_monthly_usd", _number)
        if "grace" in t:
            o.grace = _grace(t["grace"], f"{path}.grace")
        if "members" in t:
            o.members = _members(t["members"], f"{path}.members")
        if "keys" in t:
            o.keys = _keys(t["keys"], f"{path}.keys", org=True, member_list=o.members)
        spec.orgs.append(o)
    return spec


def read_secrets(spec: Spec, env: Mapping[str, str]) -> dict[str, str]:
    """Each key's secret (by the key's path) from the environment, format-checked; every
    missing variable is named at once. Secrets stay in memory and are never shown."""
    wanted = spec.all_keys()
    missing = [k for k in wanted if not env.get(k.from_env, "").strip()]
    if missing:
        names = ", ".join(f"${k.from_env} ({k.path})" for k in missing)
        raise UsageError(f"Not set or empty: {names}; export each to its key's secret (apply "
                         "reads keys only from the environment), then run apply again")
    secrets = {}
    for k in wanted:
        secret = env[k.from_env].strip()
        try:
            keys.check_format(k.provider, secret, allow_admin_key=k.allow_admin_key)
        except ByokError as exc:
            raise type(exc)(f"${k.from_env} ({k.path}): {exc.message}") from None
        secrets[k.path] = secret
    return secrets


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

    @property
    def applied(self) -> bool:
        """True when changes were written (False for a dry run, or when nothing differed)."""
        return bool(self.changes) and not self.dry_run

    def to_json(self) -> dict:
        return {"changes": self.changes, "applied": self.applied, "dry_run": self.dry_run}


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
        _converge_once(ctx, spec, secrets, prune, trial.record, None, commit=False)
        trial.probe_all()  # outside any transaction: no lock held during network calls
        tester = trial.replay
    entries = _converge_once(ctx, spec, secrets, prune, tester, progress, commit=not dry_run)
    if not dry_run and any(e.action in PURGING_ACTIONS for e in entries):
        keys.purge_wal(ctx)
    return Outcome([_change(e, dry_run) for e in entries], dry_run)


class _RollBack(Exception):
    """Ends a dry run's transaction without committing."""


def _converge_once(ctx: Context, spec: Spec, secrets: dict[str, str], prune: bool,
                   tester: keys.KeyTester | None, progress: Progress | None,
                   *, commit: bool) -> list[audit.Entry]:
    """Run every change in one transaction; the audit entries it wrote are the changes."""
    written: list[audit.Entry] = []
    try:
        with ctx.write():
            start = _last_seq(ctx)
            steps = ([spec.platform] if spec.platform else []) + list(spec.orgs)
            for done, step in enumerate(steps, 1):
                if isinstance(step, PlatformSpec):
                    _platform(ctx, step, secrets, prune, tester)
                else:
                    _org(ctx, step, secrets, prune, tester)
                if progress is not None:
                    progress(done, len(steps))
            count = _last_seq(ctx) - start
            written = audit.log(ctx, limit=count)[::-1] if count else []
            if not commit:
                raise _RollBack
    except _RollBack:
        pass
    return written


def _last_seq(ctx: Context) -> int:
    return ctx.store.scalar("SELECT ifnull(max(seq), 0) FROM audit")


def _platform(ctx: Context, p: PlatformSpec, secrets: dict[str, str], prune: bool,
              tester: keys.KeyTester | None) -> None:
    if p.provider is not None and p.model is not None:
        current = platform.current(ctx)
        if p.base_url is None:  # left out: kept while the provider stays
            url = current.base_url if current.configured and current.provider == p.provider else None
        else:
            url = p.base_url or None
        platform.set_default(ctx, p.provider, p.model, url)
    if p.keys is not None:
        _keys_converge(ctx, p.keys, secrets, tester, org=None)
        if prune:
            wanted = {k.provider for k in p.keys}
            for key in keys.list_keys(ctx):
                if key.scope == "platform" and key.provider not in wanted:
                    keys.remove(ctx, key.id)


def _org(ctx: Context, o: OrgSpec, secrets: dict[str, str], prune: bool,
         tester: keys.KeyTester | None) -> None:
    slug = o.slug
    org, created = orgs.create(ctx, slug, name=o.name, plan=o.plan or "free",
                               credits=o.credits or 0, if_not_exists=True)
    if o.name is not None and not created:
        orgs.rename(ctx, slug, o.name)
    if o.plan is not None:
        plans.set_plan(ctx, slug, o.plan)
    _grace_converge(ctx, slug, o.grace)
    if o.budget is not None:
        orgs.set_budget(ctx, slug, None if o.budget is False else float(o.budget))
    if o.sets_provider:
        _provider_converge(ctx, o)
    if o.members is not None:
        current = {m.email: m.role for m in members.list_members(ctx, slug)}
        for email, role in o.members.items():
            if email not in current:
                members.add(ctx, slug, email, role)
            elif current[email] != role:
                members.set_role(ctx, slug, email, role)
    if o.keys is not None:
        _keys_converge(ctx, o.keys, secrets, tester, org=slug)
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
            plans.grant_grace(ctx, slug, until=grace.until, reason=grace.reason)
    elif isinstance(grace, Grace) and org.grace_until is None:
        # `days` grants once: re-running the file neither extends a grant nor renews a lapsed one.
        plans.grant_grace(ctx, slug, days=grace.days, reason=grace.reason)


def _provider_converge(ctx: Context, o: OrgSpec) -> None:
    org = orgs.get(ctx, o.slug)
    provider = o.provider or org.provider
    if _provider_unchanged(org, o, provider):
        # Re-stating the current setting is no selection: an org in soft fallback (gate
        # closed) keeps its stored BYOK setting without a plan-gate error.
        return
    change = orgs.plan_provider_change(
        ctx, o.slug, provider, model=o.model,
        base_url=o.base_url if isinstance(o.base_url, str) else None, fallback=o.fallback)
    if o.base_url is False:
        change.after["base_url"] = None
    orgs.set_provider(ctx, change, lambda _change: True)  # the file is the confirmation


def _provider_unchanged(org: orgs.Org, o: OrgSpec, provider: str) -> bool:
    if provider != org.provider or (o.fallback is not None and o.fallback != org.fallback):
        return False
    if o.base_url is False and org.base_url is not None:
        return False
    if isinstance(o.base_url, str) and rules.base_url(o.base_url) != org.base_url:
        return False
    if o.model is not None:
        return provider in rules.BYOK_PROVIDERS and \
            catalog.load().find(provider, o.model).id == org.model
    return True


def _keys_converge(ctx: Context, wanted: list[KeySpec], secrets: dict[str, str],
                   tester: keys.KeyTester | None, *, org: str | None) -> None:
    vault = ctx.vault()
    for k in wanted:
        secret = secrets[k.path]
        existing = keys.find(ctx, provider=k.provider, org=org, member=k.member,
                             platform=org is None)
        if existing is None:
            slot = keys.prepare_add(ctx, provider=k.provider, org=org, member=k.member,
                                    platform=org is None)
            keys.add(ctx, slot, secret, allow_admin_key=k.allow_admin_key, tester=tester)
        elif existing.fingerprint != vault.fingerprint(secret):
            keys.rotate(ctx, existing.id, secret, allow_admin_key=k.allow_admin_key, tester=tester)


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
        self.pending[(_slot_id(owner), secret)] = keys.base_url_for(self.ctx, owner)
        return keys.OK

    def probe_all(self) -> None:
        for (slot, secret), url in self.pending.items():
            seen = keys.probe(slot[3], secret, base_url=url)
            if seen.error is not None:
                raise type(seen.error)(f"{self.paths.get(slot, 'a key')}: {seen.error.message}; "
                                       "nothing was applied")
            self.results[(slot, secret)] = seen.result

    def replay(self, owner: keys.Key | keys.Slot, secret: str) -> str:
        try:
            return self.results[(_slot_id(owner), secret)]
        except KeyError:
            raise Conflict("The vault changed while apply tested the keys; run apply again") from None


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
