"""`export`: the vault's settings as an `apply` file (TOML or JSON), without a single secret.

Reads only non-secret columns, so it needs no master key. Each stored key becomes an entry
naming the environment variable its secret was read from (`apply`'s `from_env`, `key add
--from-env`), or, for a key entered otherwise, one derived from its slot
(`BYOKCTL_KEY_ACME_ANTHROPIC`), so that `export | apply -` round-trips once those variables
hold the secrets.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from byokctl import clock
from byokctl.domain.plans import gate
from byokctl.lazy import Pairs
from byokctl.services import endpoints, keys, members, orgs, platform, rules
from byokctl.services.context import Context
from byokctl.services.permissions import require_operator

if TYPE_CHECKING:
    from byokctl.store.spill import SpillSet

HEADER = """\
# byokctl export: the vault's settings, without secrets. Apply with `byokctl apply FILE`.
# Keys are named by environment variable (from_env): set each one to that key's secret
# before applying; apply refuses a variable that is not set. `credits` is a starting
# balance: apply uses it only when it creates the org."""


@dataclass
class Export:
    """`doc` is the apply file; from `snapshot` its `orgs` is a `lazy.Pairs`, each org built
    as it is written. `notes` holds the comments of the table being written: the platform's,
    then each org's, which replace the previous org's so that they never pile up."""

    doc: dict
    notes: dict[str, str] = field(default_factory=dict)  # TOML comments, by table path

    def to_json(self) -> dict:
        return self.doc


class Taken:
    """The environment variable names handed out so far: a set, moved to the store's spill
    set (a private temporary file, bounded page cache) past IN_MEMORY names, so that exporting
    100,000 keys holds no more than exporting 10,000. Never the vault: nothing is written to it."""

    IN_MEMORY = 4_096

    def __init__(self) -> None:
        self._names: set[str] = set()
        self._spill: SpillSet | None = None

    def __contains__(self, name: object) -> bool:
        if self._spill is None:
            return name in self._names
        return name in self._spill

    def add(self, name: str) -> None:
        if self._spill is not None:
            self._spill.add(name)
            return
        self._names.add(name)
        if len(self._names) > self.IN_MEMORY:
            from byokctl.store.spill import SpillSet

            self._spill = SpillSet(self._names)
            self._names = set()

    def close(self) -> None:
        if self._spill is not None:
            self._spill.close()
            self._spill = None


def env_name(org: str | None, member: str | None, provider: str, taken: set[str] | Taken) -> str:
    """`BYOKCTL_KEY_<ORG>[_<MEMBER>]_<PROVIDER>` (`BYOKCTL_PLATFORM_KEY_<PROVIDER>`), made
    unique with `_2`, `_3`... in the order keys are exported, so it is stable for a vault."""
    parts = ["BYOKCTL_PLATFORM_KEY"] if org is None else ["BYOKCTL_KEY", org, member or ""]
    base = re.sub(r"[^A-Z0-9]+", "_", "_".join([*parts, provider]).upper()).strip("_")
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    taken.add(name)
    return name


def _grouped(rows: Iterable[Any], org_of: Callable[[Any], str | None]
             ) -> Callable[[str | None], list[Any]]:
    """`take(org)`: the rows of `org`, from `rows` sorted by org (None first, as SQLite sorts
    NULL), for orgs asked for in that same order; one walk of `rows`, never a scan per org."""
    groups = itertools.groupby(rows, org_of)
    pending = next(groups, None)

    def take(org: str | None) -> list[Any]:
        nonlocal pending
        while pending is not None and org is not None and (pending[0] is None or pending[0] < org):
            pending = next(groups, None)  # rows of an org not asked for (none, by foreign keys)
        if pending is None or pending[0] != org:
            return []
        found = list(pending[1])
        pending = next(groups, None)
        return found

    return take


def snapshot(ctx: Context) -> Export:
    """Everything `apply` can set, as it stands: platform default and keys, orgs, members.

    Linear in the vault's size, and flat in memory: orgs, their members and their keys are
    each read once in slug order and merged, one org at a time, while the file is written."""
    require_operator(ctx, "export the vault")
    out = Export({})
    taken = Taken()
    for name in ctx.store.keys.env_names():  # the names keys were given: never invented again
        taken.add(name)
    approved = endpoints.approved_by_slot(ctx)

    def key_entries(found: list[keys.Key], path: str, org: str | None) -> list[dict]:
        entries = []
        for i, k in enumerate(sorted(found, key=lambda k: (k.member or "", k.provider))):
            entry: dict = {"provider": k.provider}
            if k.member:
                entry["member"] = k.member
            entry["from_env"] = k.from_env or env_name(org, k.member, k.provider, taken)
            slot = approved.get((k.org, k.member, k.provider)) if k.scope == "member" else None
            if slot:  # applied back, they become the operator's approvals
                entry["approved_base_urls"] = [a.base_url for a in slot]
            entries.append(entry)
            out.notes[f"{path}[{i}]"] = (f"{k.id}: {k.hint}, version {k.version}, {k.status}; "
                                        f"set ${entry['from_env']} to its secret")
        return entries

    # Every key in one walk, by org: the platform's (no org) first, then each org's.
    keys_of = _grouped(keys.iter_keys(ctx), operator.attrgetter("org"))
    current = platform.current(ctx)
    platform_keys = keys_of(None)
    if current.configured or platform_keys:
        p: dict = {}
        if current.configured:
            p.update({"provider": current.provider, "model": current.model})
            if current.base_url:
                p["base_url"] = current.base_url
                if insecure(current.base_url):
                    p["allow_insecure"] = True
        if platform_keys:
            p["keys"] = key_entries(platform_keys, "platform.keys", None)
        out.doc["platform"] = p
    members_of = _grouped(members.all_roles(ctx), operator.itemgetter(0))

    def org_entries() -> Iterator[tuple[str, dict]]:
        try:
            for o in orgs.list_orgs(ctx):
                out.notes.clear()  # the previous org's comments were written with it
                yield o.slug, _org_entry(o, members_of(o.slug), keys_of(o.slug), key_entries,
                                         out.notes)
        finally:
            taken.close()

    out.doc["orgs"] = Pairs(org_entries())
    return out


def _org_entry(o: orgs.Org, found_members: list[Any], found_keys: list[keys.Key],
               key_entries: Callable[[list[keys.Key], str, str | None], list[dict]],
               notes: dict[str, str]) -> dict:
    """One org's table: its settings, members (`(org, email, role)` rows) and keys."""
    path = f"orgs.{o.slug}"
    entry: dict = {"name": o.name, "plan": o.plan, "credits": o.credits}
    g = gate(o.plan, o.grace_until, clock.now())
    if o.provider in rules.BYOK_PROVIDERS and not g.allowed:
        # Stored but unusable (soft fallback): apply would refuse to select it on this plan.
        notes[path] = (f"provider {o.provider}/{o.model} is stored but not exported: "
                       f"plan {o.plan} does not allow BYOK (soft fallback)")
    else:
        entry["provider"] = o.provider
        if o.model:
            entry["model"] = o.model
        if o.base_url:
            entry["base_url"] = o.base_url
            if insecure(o.base_url):
                entry["allow_insecure"] = True
    entry["fallback"] = o.fallback
    if o.budget_monthly_usd is not None:
        entry["budget_monthly_usd"] = o.budget_monthly_usd
    if g.grace_active:  # a lapsed grant is history, not a setting
        entry["grace"] = {"until": o.grace_until}
        if o.grace_reason:
            entry["grace"]["reason"] = o.grace_reason
    entry["members"] = {email: role for _org, email, role in found_members}
    entry["keys"] = key_entries(found_keys, f"{path}.keys", o.slug)
    return entry


# ---- TOML ---------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else _string(name)


def _string(text: str) -> str:
    # JSON's escapes are TOML's, except that TOML wants DEL escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _table(lines: list[str], path: str, table: dict, notes: dict[str, str]) -> None:
    """Scalars (and inline tables, empty lists) first, then sub-tables, then arrays of tables."""
    if note := notes.get(path):
        lines.append(f"# {note}")
    lines.append(f"[{path}]")
    nested = {k: v for k, v in table.items()
              if (isinstance(v, dict) and k != "grace") or (isinstance(v, list) and v)}
    lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items() if k not in nested]
    for k, v in nested.items():
        if isinstance(v, dict):
            lines += ["", f"[{path}.{_key(k)}]"]
            lines += [f"{_key(e)} = {_value(r)}" for e, r in v.items()]
        else:
            for i, item in enumerate(v):
                lines.append("")
                if note := notes.get(f"{path}.{k}[{i}]"):
                    lines.append(f"# {note}")
                lines.append(f"[[{path}.{_key(k)}]]")
                lines += [f"{_key(e)} = {_value(r)}" for e, r in item.items()]


def to_toml(export: Export) -> str:
    return "".join(toml_chunks(export))


def toml_chunks(export: Export) -> Iterator[str]:
    """The TOML file in pieces, a table at a time (an org's is built as it is asked for)."""
    lines = [HEADER]
    if "platform" in export.doc:
        lines.append("")
        _table(lines, "platform", export.doc["platform"], export.notes)
    yield "\n".join(lines) + "\n"
    found = export.doc["orgs"]
    for slug, entry in found.items() if isinstance(found, dict) else found:
        lines = [""]
        _table(lines, f"orgs.{_key(slug)}", entry, export.notes)
        yield "\n".join(lines) + "\n"


def insecure(url: str) -> bool:
    """A stored plain-http base_url off loopback: apply needs `allow_insecure = true` for it."""
    from urllib.parse import urlsplit

    try:
        return url.startswith("http://") and not rules.is_loopback(urlsplit(url).hostname or "")
    except ValueError:
        return False
