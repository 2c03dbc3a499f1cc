"""The provisioning file `apply` reads: its format (`SCHEMA`), parsing TOML or JSON into a
`Spec` with every error naming the field's path, and the keys' secrets from the environment.

Nothing here touches the vault: values are checked by the services when `apply` runs them.
A value that looks like an API key is refused wherever it appears, and no message ever
repeats a value from the file that could be one.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from byokctl.errors import ByokError, UsageError
from byokctl.services import keys, rules

SCHEMA = """\
[platform]                  optional: as `platform set-default`
provider = "anthropic"      anthropic | openai (model required with it)
model = "haiku"             alias or pinned id (stored pinned)
base_url = "https://..."    optional; false removes it
allow_insecure = false      true: accept a plain-http base_url off loopback
[[platform.keys]]           the platform's own keys (as below, no member)

[orgs.acme]                 one table per org, named by its slug
name = "Acme Inc"           display name (new org: the slug)
plan = "growth"             free | starter | growth | scale (new: free)
credits = 500               STARTING balance: only when apply creates it
provider = "anthropic"      platform | anthropic | openai
model = "sonnet"            alias or pinned id (stored pinned)
base_url = "https://..."    false removes it
allow_insecure = false      true: accept a plain-http base_url off loopback
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
approved_base_urls = ["https://..."]
                            optional, personal keys only: base URLs it may be
                            sent to besides the provider's own (the
                            operator's approval; --prune withdraws others)

A field left out is left as it is. Secrets come only from the
environment: an inline secret is refused. A key whose secret matches
the stored one is unchanged; another secret rotates it. Nothing is
deleted unless --prune: then members and keys that an org's members or
keys do not list (and platform keys not in [[platform.keys]]) are
removed. Orgs are never deleted."""

TOP_FIELDS = ("platform", "orgs")
PLATFORM_FIELDS = ("provider", "model", "base_url", "allow_insecure", "keys")
ORG_FIELDS = ("name", "plan", "credits", "provider", "model", "base_url", "allow_insecure", "fallback",
              "budget_monthly_usd", "grace", "members", "keys")
KEY_FIELDS = ("provider", "member", "from_env", "allow_admin_key", "approved_base_urls")
GRACE_FIELDS = ("until", "days", "reason")
INLINE_SECRET_FIELDS = ("secret", "key", "api_key", "apikey", "value", "token", "password")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class KeySpec:
    path: str  # where it is in the file, for messages: orgs.acme.keys[0]
    provider: str
    from_env: str
    member: str | None = None
    allow_admin_key: bool = False
    approved_base_urls: tuple[str, ...] | None = None  # a personal key's approved endpoints


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
    allow_insecure: bool = False  # a plain-http base_url off loopback


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
    allow_insecure: bool = False  # a plain-http base_url off loopback

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


MAX_DEPTH = 16  # the schema needs 5 levels (orgs.acme.keys[0].from_env); more is an attack


class _DuplicateKey(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object that names a field twice is refused (JSON's own rule would be last-wins,
    which hides the first value from the reader of the file)."""
    doc: dict = {}
    for k, v in pairs:
        if k in doc:
            raise _DuplicateKey(k)
        doc[k] = v
    return doc


def load(text: str, source: str) -> dict:
    """Parse TOML or JSON: by the name's extension, else by the content (`{` means JSON)."""
    lowered = source.lower()
    is_json = lowered.endswith(".json") or (
        not lowered.endswith(".toml") and text.lstrip().startswith("{"))
    fix = "fix it and run apply again"
    try:
        doc = json.loads(text, object_pairs_hook=_unique_pairs) if is_json else tomllib.loads(text)
    except json.JSONDecodeError as exc:  # messages give a position, never the content
        raise UsageError(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno})", fix) from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source} is not valid TOML ({exc})", fix) from None
    except _DuplicateKey as exc:
        name = str(exc.name)
        shown = f"'{name}'" if _plain_name(name) else "a field"
        raise UsageError(f"{source} names {shown} twice in one object", "keep one and run apply "
                         "again") from None
    except RecursionError:
        raise UsageError(f"{source} is nested too deeply (more than {MAX_DEPTH} levels)", fix) from None
    if not isinstance(doc, dict):
        raise UsageError(f"{source} must hold a table (a JSON object) with `orgs` and/or `platform`")
    _check_shape(doc, source)
    return doc


def _plain_name(name: str) -> bool:
    """A field name fit to repeat in a message: short, printable, not key-shaped."""
    return (len(name) <= 64 and name.isprintable() and not rules.secrets_in(name)
            and not any(0xD800 <= ord(c) <= 0xDFFF for c in name))


def _check_shape(doc: dict, source: str) -> None:
    """Refuse nesting past MAX_DEPTH and text that is not Unicode (a lone surrogate, which JSON's
    `\\ud800` lets in, and which no database or terminal can encode), naming only where."""
    stack: list[tuple[Any, str, int]] = [(doc, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise UsageError(f"{source} is nested too deeply (more than {MAX_DEPTH} levels, at "
                             f"{path.split('.')[0] or 'the top level'})", "fix it and run apply again")
        if isinstance(value, dict):
            for k, v in value.items():
                where = f"{path}.{k}" if path else str(k)
                if isinstance(k, str) and not _is_text(k):
                    raise UsageError(f"A name under {path or 'the top level'} in {source} is not valid "
                                     "Unicode text (a lone surrogate, e.g. \\ud800)", "fix it and run "
                                     "apply again")
                stack.append((v, where if _plain_name(str(k)) else f"{path}.?", depth + 1))
        elif isinstance(value, list):
            stack += [(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        elif isinstance(value, str) and not _is_text(value):
            raise UsageError(f"{path} in {source} is not valid Unicode text (a lone surrogate, e.g. "
                             "\\ud800)", "fix it and run apply again")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _refuse_secrets(value: Any, path: str) -> None:
    """Refuse anything that looks like an API key anywhere in the file, naming only where."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and rules.looks_like_secret(k.strip()):
                raise UsageError(f"A name under {path or 'the top level'} looks like an API key",
                                 "give keys only as from_env = \"VAR\" (and rotate that key, since "
                                 "the file exposed it)")
            _refuse_secrets(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_secrets(v, f"{path}[{i}]")
    elif isinstance(value, str) and rules.looks_like_secret(value.strip()):
        raise UsageError(f"{path} holds what looks like an API key", "give keys only by environment "
                         "variable name (from_env = \"VAR\"), and rotate that key, since the file "
                         "exposed it")


def _table(value: Any, path: str, allowed: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise UsageError(f"{path} must be a table (a JSON object)")
    for name in value:
        if name not in allowed:
            raise UsageError(f"Unknown field {path}.{name}", "known fields there: "
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
                        f"{where}.{name}: inline secrets are refused", "put the key in an "
                        "environment variable and name it with from_env = \"VAR\"")
        t = _table(item, where, allowed)
        for required in ("provider", "from_env"):
            if required not in t:
                raise UsageError(f"{where} needs {required}")
        provider = _choice(t["provider"], f"{where}.provider", rules.BYOK_PROVIDERS, "provider")
        env = _str(t["from_env"], f"{where}.from_env")
        if not ENV_NAME.fullmatch(env):
            raise UsageError(f"{where}.from_env must be the NAME of an environment variable "
                             "holding the key (e.g. ACME_ANTHROPIC_KEY)")
        member = rules.email(_str(t["member"], f"{where}.member")) if "member" in t else None
        if member is not None and member_list is not None and member not in member_list:
            raise UsageError(f"{where} is {member}'s key but {path.rsplit('.', 1)[0]}.members "
                             "does not list them", "add them there")
        admin = t.get("allow_admin_key", False)
        if not isinstance(admin, bool):
            raise UsageError(f"{where}.allow_admin_key must be true or false")
        if (member, provider) in slots:
            raise UsageError(f"{where} repeats the {provider} key" + (f" of {member}" if member else ""),
                             "give each key once")
        slots.add((member, provider))
        found.append(KeySpec(where, provider, env, member, admin,
                             _approved(t, where, member, provider)))
    return found


def _approved(t: dict, where: str, member: str | None, provider: str) -> tuple[str, ...] | None:
    if "approved_base_urls" not in t:
        return None
    value = t["approved_base_urls"]
    if member is None:
        raise UsageError(f"{where}.approved_base_urls is for members' personal keys", "an org key "
                         "goes wherever the org's base_url points")
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise UsageError(f"{where}.approved_base_urls must be a list of URLs")
    # Approving sends nothing: whether plain http may be used at all is the org base_url's
    # own check (allow_insecure), so an approval of such a URL is not refused here.
    # Each as an org's base_url is stored: corrected for the provider's SDK.
    return tuple(rules.provider_base_url(provider, u, allow_insecure=True)[0] for u in value)


def _flag(table: dict, name: str, path: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise UsageError(f"{path}.{name} must be true or false")
    return value


def _members(value: Any, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise UsageError(f"{path} must be a table of email = \"role\"")
    found: dict[str, str] = {}
    for email, role in value.items():
        try:
            normal = rules.email(email)
        except UsageError as exc:
            raise at_field(exc, f"{path}.\"{email}\"") from None
        if normal in found:
            raise UsageError(f"{path} lists {normal} twice", "give each member once")
        found[normal] = _choice(role, f"{path}.\"{email}\"", rules.ROLES, "role")
    return found


def _choice(value: Any, path: str, allowed: tuple[str, ...], what: str) -> str:
    """A field that takes one of `allowed`: an error names the field."""
    try:
        return rules.choice(_str(value, path), allowed, what)
    except UsageError as exc:
        raise at_field(exc, path) from None


def at_field(exc: ByokError, path: str, fix: str | None = None) -> ByokError:
    """`exc` about the file's field at `path` (`orgs.acme.provider`): named first in the
    message and as `details.field`, with `fix` (one made in the file) when given."""
    new = exc.reworded(f"{path}: {exc.what}", fix)
    new.details = {**exc.details, "field": path}
    return new


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
            allow_insecure=_flag(t, "allow_insecure", "platform"),
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
        o = OrgSpec(slug, allow_insecure=_flag(t, "allow_insecure", path))
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
    if len(missing) == 1:
        raise UsageError(f"Not set or empty: ${missing[0].from_env} ({missing[0].path})", "export "
                         "it to its key's secret (apply reads keys only from the environment), "
                         "then run apply again")
    if missing:
        error = UsageError(f"{len(missing)} environment variables the file names are not set or "
                           "empty", "export each to its key's secret (apply reads keys only from "
                           "the environment), then run apply again",
                           missing=[{"variable": k.from_env, "path": k.path} for k in missing])
        error.listing = tuple(f"${k.from_env} ({k.path})" for k in missing)
        raise error
    secrets = {}
    for k in wanted:
        secret = env[k.from_env].strip()
        try:
            keys.check_format(k.provider, secret, allow_admin_key=k.allow_admin_key,
                              other_provider=lambda other, k=k: f'set {k.path}.provider = "{other}"')
        except ByokError as exc:
            raise exc.reworded(f"${k.from_env} ({k.path}): {exc.what}") from None
        secrets[k.path] = secret
    return secrets
