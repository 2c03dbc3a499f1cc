"""Stored API keys: format checks, add, list, rotate, remove, and the hooks other code uses
(`reveal` to decrypt one, `find` for a slot, `mark_used`/`mark_tested` to record outcomes).

Secrets pass through here only as arguments: they are sealed by the vault before they touch
the store, and no message, audit entry or return value ever carries one (hint + fingerprint).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NamedTuple

from byokctl import clock
from byokctl.domain import ACTIVE, INVALID, KEY_STATUSES, RATE_LIMITED  # noqa: F401 - as keys.X
from byokctl.domain.urls import safe_url
from byokctl.errors import (
    ByokError,
    Conflict,
    Denied,
    KeyRejected,
    NotFound,
    ProviderDown,
    RateLimited,
    UsageError,
)
from byokctl.providers import registry
from byokctl.providers.registry import DEFAULT_RETRIES, DEFAULT_TIMEOUT  # noqa: F401 - as keys.X
from byokctl.services import audit, rules
from byokctl.services.context import UNSEEN, Context
from byokctl.services.permissions import Actor, actor_in, org_exists, require, require_operator

if TYPE_CHECKING:
    from byokctl.store import Row

STATUSES = KEY_STATUSES
MIN_LENGTH, MAX_LENGTH = rules.SECRET_MIN_LENGTH, 512
SECRET_CHARS = re.compile(r"[A-Za-z0-9_-]+")


@dataclass
class Key:
    """A stored key as anyone may see it: everything but the secret."""

    id: str
    scope: str
    org: str | None
    member: str | None
    provider: str
    hint: str
    fingerprint: str
    version: int
    status: str
    test_result: str | None
    created_at: str
    rotated_at: str | None
    last_used_at: str | None
    last_tested_at: str | None
    from_env: str | None = None  # the NAME of the variable the secret was read from, if it was

    @classmethod
    def from_row(cls, row: object) -> Key:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})  # type: ignore[index]

    @property
    def owner(self) -> str:
        """Who the key belongs to, for people: `org acme`, `alice@acme.com in acme`, `platform`."""
        return owner_label(self.scope, self.org, self.member)

    @property
    def owner_short(self) -> str:
        """The same in a table column: `acme`, `alice@acme.com (acme)`, `platform`."""
        return owner_label(self.scope, self.org, self.member, short=True)

    def public(self) -> dict:
        """What the audit log may record about the key: never the secret."""
        return {"scope": self.scope, "member": self.member, "provider": self.provider,
                "hint": self.hint, "fingerprint": self.fingerprint, "version": self.version}

    def to_json(self) -> dict:
        return asdict(self)


def owner_label(scope: str, org: str | None, member: str | None, *, short: bool = False) -> str:
    """Who a key belongs to, for people: `org acme`, `alice@acme.com in acme`, `platform`; or,
    `short` (a table column), `acme`, `alice@acme.com (acme)`, `platform`."""
    if scope == "platform":
        return "platform"
    if scope == "member":
        return f"{member} ({org})" if short else f"{member} in {org}"
    return (org or "") if short else f"org {org}"


# ---- secrets: format and display -------------------------------------------------------------

def hint(secret: str) -> str:
    """The last four characters, the only part of a secret ever shown (`…xK7q`)."""
    return "…" + secret[-4:]


def use_provider(other: str) -> str:
    """The fix for another provider's key given to `key add`: the option that picks it."""
    return f"use --provider {other}"


def check_format(provider: str, secret: str, *, allow_admin_key: bool = False,
                 other_provider: Callable[[str], str] = use_provider) -> None:
    """Refuse (KeyRejected) what cannot be an inference key for `provider`; never echo it.
    `other_provider(id)` is the fix when it is another provider's key: where the caller takes
    the provider (`--provider`, an apply file's field), or what to do instead (`key rotate`)."""
    facts = registry.facts(provider)
    name, prefix = facts.label, facts.key_prefix
    others = [p for p in registry.FACTS.values() if p.id != provider]
    if not secret:
        raise UsageError(f"The {name} API key is empty", "give the key itself")
    if not SECRET_CHARS.fullmatch(secret):
        raise KeyRejected(
            f"The {name} API key contains spaces or characters API keys never have", "paste the "
            "key alone, exactly as the provider shows it")
    for other in others:  # a longer prefix of another provider's: its key, which ours accepts
        if len(other.key_prefix) > len(prefix) and secret.startswith(other.key_prefix):
            raise KeyRejected(f"That is an {other.label} key ({other.key_prefix}…), not an {name} "
                              "one", other_provider(other.id))
    if not secret.startswith(prefix):
        for other in others:
            if secret.startswith(other.key_prefix):
                raise KeyRejected(f"That looks like an {other.label} key ({other.key_prefix}…), not "
                                  f"an {name} one", other_provider(other.id))
        raise KeyRejected(f"That is not an {name} API key ({name} keys start with {prefix})",
                          "check that you copied the whole key")
    if not MIN_LENGTH <= len(secret) <= MAX_LENGTH:
        raise KeyRejected(
            f"The {name} API key is {'too short' if len(secret) < MIN_LENGTH else 'too long'} "
            f"({len(secret)} characters; real keys have {MIN_LENGTH}-{MAX_LENGTH})", "check that you "
            "copied the whole key")
    if secret.startswith(facts.admin_key_prefix) and not allow_admin_key:
        raise KeyRejected(
            f"That is an {name} admin key ({facts.admin_key_prefix}…), which can manage the whole "
            f"{name} organization", "a BYOK platform needs only inference, so create a regular API "
            "key (or pass --allow-admin-key if you really mean to store this one)")


# ---- reading ------------------------------------------------------------------------------------

def _row(ctx: Context, key_id: str) -> Row:
    row = ctx.recall("keys", (key_id,))  # the request's own read of it, if any
    if row is UNSEEN:
        row = ctx.store.keys.get(key_id)
    if row is None:
        raise _no_key(key_id)
    return row


def _no_key(key_id: str) -> NotFound:
    shown = "that key id" if rules.looks_like_secret(key_id) else f"'{key_id}'"
    return NotFound(f"No key {shown}", "see `byokctl key list` for the ids")


def get(ctx: Context, key_id: str) -> Key:
    """A key by id, with no permission check (callers that act for a user use `require_key`)."""
    return Key.from_row(_row(ctx, key_id))


def find(ctx: Context, *, provider: str, org: str | None = None, member: str | None = None,
         platform: bool = False) -> Key | None:
    """The key in one slot: platform, an org's, or a member's personal key for `provider`."""
    scope = "platform" if platform else "member" if member else "org"
    row = ctx.store.keys.in_slot(scope, None if platform else org, member, provider)
    return None if row is None else Key.from_row(row)


def list_keys(ctx: Context, org: str | None = None, provider: str | None = None) -> list[Key]:
    """The keys the actor may see; needs no master key (see `iter_keys`)."""
    return list(iter_keys(ctx, org, provider))


def iter_keys(ctx: Context, org: str | None = None, provider: str | None = None) -> Iterator[Key]:
    """The keys the actor may see, one at a time as SQLite reads them; needs no master key.
    The checks (an unknown org, a member of another org) run before the first key.

    Operator: all (without ORG, platform keys too). A member with org:view: the org's keys;
    with key:own only: their own personal keys. Without ORG, a member sees this across the
    orgs they belong to, and never platform keys.
    """
    if provider is not None:
        rules.choice(provider, rules.BYOK_PROVIDERS, "provider")
    if org is not None:
        org_exists(ctx, org)
    viewer, viewer_roles = None, []
    if ctx.as_email is not None:
        viewer = rules.email(ctx.as_email)
        if org is not None:
            actor_in(ctx, org)  # Denied unless a member
        viewer_roles = [r for r in rules.ROLES if rules.permits(r, rules.ORG_VIEW)]
    rows = ctx.store.keys.iter_visible(org=org, provider=provider, viewer=viewer,
                                       viewer_roles=viewer_roles)
    return map(Key.from_row, rows)


def reveal(ctx: Context, key_id: str) -> str:
    """Decrypt one key's secret (for provider calls only). Integrity if the row is bad."""
    return ctx.vault().open(_row(ctx, key_id))


# ---- who may change what ------------------------------------------------------------------------

def _may_own(ctx: Context, org: str, member: str, verb: str) -> Actor:
    """A member's personal key: that member (key:own) or an org manager."""
    org_exists(ctx, org)
    actor = actor_in(ctx, org)
    if actor.is_operator or rules.permits(actor.role or "", rules.ORG_MANAGE):
        return actor
    if actor.email == member and rules.permits(actor.role or "", rules.KEY_OWN):
        return actor
    raise Denied(f"{actor.email} ({actor.role}) may not {verb} {member}'s personal key in org "
                 f"{org}", "members manage only their own keys, admins manage all of them")


def require_key(ctx: Context, key_id: str, verb: str = "change") -> Key:
    """The key if the actor may use/test/rotate/remove it (a member never learns of another
    org's keys: NotFound, as for an unknown id)."""
    key = get(ctx, key_id)
    if key.scope == "platform":
        require_operator(ctx, f"{verb} platform keys")
        return key
    assert key.org is not None
    if ctx.as_email is not None and not ctx.store.members.exists(key.org, rules.email(ctx.as_email)):
        raise _no_key(key_id)
    if key.scope == "member":
        assert key.member is not None
        _may_own(ctx, key.org, key.member, verb)
    else:
        require(ctx, key.org, rules.ORG_MANAGE,
                "org keys are managed by org admins, members may add a personal key with "
                f"`byokctl key add {key.org} --provider {key.provider} --member EMAIL`")
    return key


# ---- adding -------------------------------------------------------------------------------------

class Slot(NamedTuple):
    scope: str
    org: str | None
    member: str | None
    provider: str

    def describe(self) -> str:
        name = registry.label(self.provider)
        if self.scope == "platform":
            return f"The platform already has an {name} key"
        if self.scope == "member":
            return f"{self.member} already has a personal {name} key in org {self.org}"
        return f"Org {self.org} already has an {name} key"


def prepare_add(ctx: Context, *, provider: str, org: str | None = None,
                member: str | None = None, platform: bool = False) -> Slot:
    """Everything `add` checks before it needs the secret: arguments, permission, a free slot,
    an unlocked vault. Call it before asking for the secret so nobody types a key in vain."""
    rules.choice(provider, rules.BYOK_PROVIDERS, "provider")
    if platform:
        if org is not None or member is not None:
            raise UsageError("A platform key belongs to no org or member", "drop ORG and --member, "
                             "or drop --platform")
        require_operator(ctx, "add platform keys")
        slot = Slot("platform", None, None, provider)
    else:
        if org is None:
            raise UsageError("Give the ORG the key is for (or --platform for the platform's own "
                             "key)", "e.g. `byokctl key add acme --provider anthropic`")
        if member is not None:
            member = rules.email(member)
            _may_own(ctx, org, member, "add")
            if not ctx.store.members.exists(org, member):
                raise NotFound(f"{member} is not a member of org {org}", "add them first with "
                               f"`byokctl member add {org} {member} --role interviewer`")
            slot = Slot("member", org, member, provider)
        else:
            require(ctx, org, rules.ORG_MANAGE,
                    "org keys are managed by org admins, add a personal key with "
                    f"`byokctl key add {org} --provider {provider} --member EMAIL`")
            slot = Slot("org", org, None, provider)
    _ensure_free(ctx, slot)
    ctx.vault()  # a locked vault fails here, before anyone types a secret
    return slot


def _ensure_free(ctx: Context, slot: Slot) -> None:
    existing = find(ctx, provider=slot.provider, org=slot.org, member=slot.member,
                    platform=slot.scope == "platform")
    if existing is not None:
        raise Conflict(f"{slot.describe()} ({existing.id}, {existing.hint})", "replace its secret "
                       f"with `byokctl key rotate {existing.id}`")


def new_key_id() -> str:
    """`key_` + 10 lowercase base32 characters (50 random bits)."""
    return "key_" + base64.b32encode(os.urandom(10)).decode().lower()[:10]


def add(ctx: Context, slot: Slot, secret: str, *, allow_admin_key: bool = False,
        tester: KeyTester | None = None, from_env: str | None = None) -> Key:
    """Store `secret` in `slot` (from `prepare_add`), sealed and audited. With `tester`, the
    secret must pass it first: a secret the provider refuses is never stored. `from_env`: the
    NAME of the environment variable it was read from (`export` writes it back)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    check_format(slot.provider, secret, allow_admin_key=allow_admin_key)
    test_result = (_tried(tester, slot, secret, "the key was not stored", "add it without --test")
                   if tester is not None else None)
    vault = ctx.vault()
    now = clock.stamp()
    with ctx.write():
        _ensure_free(ctx, slot)  # again, under the write lock
        key_id = new_key_id()
        while ctx.store.keys.exists(key_id):
            key_id = new_key_id()
        dk_id, nonce, ct = vault.seal(secret, key_id=key_id, scope=slot.scope, org=slot.org,
                                      member=slot.member, provider=slot.provider, version=1)
        ctx.store.keys.insert(
            key_id=key_id, scope=slot.scope, org=slot.org, member=slot.member,
            provider=slot.provider, data_key_id=dk_id, nonce=nonce, ciphertext=ct,
            hint=hint(secret), fingerprint=vault.fingerprint(secret), status=ACTIVE,
            test_result=test_result, last_tested_at=now if tester is not None else None,
            created_at=now, from_env=env_name(from_env),
        )
        integrity.seal(ctx, "keys", (key_id,))
        key = get(ctx, key_id)
        after = key.public() if tester is None else {**key.public(), "test_result": test_result}
        audit.record(ctx, "key.add", org=key.org, target=key.id, after=after)
    return key


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ENV_NAME = 255


def env_name(name: str | None) -> str | None:
    """`name` if it is an environment variable's NAME (what `from_env` stores); UsageError for
    anything else, since a value there may be the secret itself."""
    if name is not None and (len(name) > MAX_ENV_NAME or not ENV_NAME.fullmatch(name)):
        raise UsageError("from_env must be the NAME of an environment variable (e.g. "
                         "ANTHROPIC_API_KEY), not a value")
    return name


def remember_env_name(ctx: Context, key_id: str, name: str | None) -> None:
    """Record (or, None, forget) the variable a stored key's unchanged secret is read from,
    as `apply` names it; not audited: a name, neither a secret nor a setting."""
    with _writing(ctx):
        ctx.store.keys.set_env_name(key_id, env_name(name))


# ---- rotating and removing ----------------------------------------------------------------------

KeyTester = Callable[[Key | Slot, str], str]
"""Tries a candidate secret for a key (or a slot, before `add`) against its provider before it
is stored. Returns the result to record (`ok`) or raises KeyRejected / RateLimited /
ProviderDown. `keytest.ProviderTester` is the real one."""


@dataclass
class Rotation:
    key: Key  # after
    previous: dict  # hint, fingerprint, version before
    tested: bool
    same_secret: bool
    purged: bool  # the old ciphertext left the WAL too (False: another process holds it open)

    def to_json(self) -> dict:
        return {**self.key.to_json(), "previous": self.previous, "tested": self.tested,
                "same_secret": self.same_secret, "purged": self.purged}


def prepare_rotate(ctx: Context, key_id: str) -> Key:
    """Permission, an unlocked vault and an intact row, before anyone is asked for the new
    secret (a row changed outside byokctl is never rotated into legitimacy)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    key = require_key(ctx, key_id, "rotate")
    ctx.vault()
    integrity.verify_key(ctx, key_id)
    return key


def _rotate_other(key: Key, other: str) -> str:
    """A rotation keeps the key's provider: another provider's secret is a new key, not this one."""
    where = "--platform" if key.scope == "platform" else key.org
    member = f" --member {key.member}" if key.member else ""
    mine = registry.label(key.provider)
    return (f"key {key.id} is for {mine}: rotate it with a new {mine} secret, or store this "
            f"{registry.label(other)} key as a key of its own with `byokctl key add {where} "
            f"--provider {other}{member}`")


def rotate(ctx: Context, key_id: str, secret: str, *, allow_admin_key: bool = False,
           tester: KeyTester | None = None, from_env: str | None = None) -> Rotation:
    """Replace a key's secret in one transaction: same id, version + 1, status reset, old
    ciphertext overwritten. With `tester`, the new secret must pass it before anything changes.
    `from_env`: the NAME of the variable the new secret was read from; None forgets the old
    name (that variable no longer holds the key's secret)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    key = prepare_rotate(ctx, key_id)
    check_format(key.provider, secret, allow_admin_key=allow_admin_key,
                 other_provider=lambda other: _rotate_other(key, other))
    test_result = (_tried(tester, key, secret, f"{key.id} keeps its current secret",
                          "rotate with --no-test") if tester is not None else None)
    vault = ctx.vault()
    fingerprint = vault.fingerprint(secret)
    now = clock.stamp()
    with ctx.write():
        version = key.version + 1

        def replace(current: Row) -> dict:
            if current["version"] != key.version:
                raise Conflict(f"Key {key_id} was rotated meanwhile (now version "
                               f"{current['version']})", "run the command again")
            dk_id, nonce, ct = vault.seal(secret, key_id=key.id, scope=key.scope, org=key.org,
                                          member=key.member, provider=key.provider,
                                          version=version)
            return {"version": version, "data_key_id": dk_id, "nonce": nonce, "ciphertext": ct,
                    "hint": hint(secret), "fingerprint": fingerprint, "status": ACTIVE,
                    "rotated_at": now, "test_result": test_result,
                    "last_tested_at": now if tester is not None else current["last_tested_at"]}

        if integrity.update_key(ctx, key_id, replace) is None:
            raise _no_key(key_id)
        ctx.store.keys.set_env_name(key_id, env_name(from_env))
        after = get(ctx, key_id)
        audit.record(ctx, "key.rotate", org=key.org, target=key.id,
                     before={**key.public(), "status": key.status},
                     after={**after.public(), "status": after.status, "tested": tester is not None})
    purged = ctx.store.purge_wal()
    return Rotation(after, {"hint": key.hint, "fingerprint": key.fingerprint,
                            "version": key.version},
                    tester is not None, fingerprint == key.fingerprint, purged)


@dataclass
class Removal:
    key: Key
    purged: bool
    org_uses_it: bool  # an org key for the provider the org currently uses

    def to_json(self) -> dict:
        return {**self.key.to_json(), "removed": True, "purged": self.purged}


def remove(ctx: Context, key_id: str) -> Removal:
    """Delete a key; its ciphertext is overwritten in the file (secure_delete) and the WAL."""
    key = require_key(ctx, key_id, "remove")
    with ctx.write():
        if not ctx.store.keys.delete(key_id):
            raise _no_key(key_id)
        audit.record(ctx, "key.remove", org=key.org, target=key.id,
                     before={**key.public(), "status": key.status})
    in_use = (key.scope == "org" and key.org is not None
              and ctx.store.orgs.provider(key.org) == key.provider)
    return Removal(key, ctx.store.purge_wal(), in_use)


# ---- outcomes recorded by provider calls --------------------------------------------------------

@contextmanager
def _writing(ctx: Context) -> Iterator[None]:
    """Join the caller's write transaction (e.g. a usage record's), or open one."""
    if ctx.store.in_transaction:
        yield
    else:
        with ctx.write():
            yield


def mark_used(ctx: Context, key_id: str, *, status: str = ACTIVE, why: str | None = None) -> bool:
    """Record a provider call made with the key and what it said about it: `invalid` (401/403,
    shown in `key list` until rotated or tested ok), `rate-limited` (429) or `active`. A status
    change is audited (`key.status`). Joins the caller's write transaction if there is one.
    False if there is no such key (removed while the call ran)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    rules.choice(status, STATUSES, "key status")
    now = clock.stamp()
    with _writing(ctx):
        changed = integrity.update_key(ctx, key_id, {"last_used_at": now, "status": status})
        if changed is None:
            return False
        before = changed[0]  # the checked row as it was
        if before["status"] != status:
            audit.record(ctx, "key.status", org=before["org"], target=key_id,
                         before={"status": before["status"]}, after={"status": status, "why": why})
    return True


def mark_tested(ctx: Context, key_id: str, *, result: str, status: str | None,
                version: int | None = None, base_url: str | None = None) -> Key:
    """Record a test of the key: its result (`ok`, `rejected`, `rate-limited`, `unreachable`),
    when, and the key's status after it; `status=None` leaves the status as it was (an
    unreachable provider says nothing about the key). Audited (`key.test`) whatever the result.
    With `version`, a key rotated since the test began is left alone (Conflict): the result
    was about its previous secret. `base_url`: the endpoint a `key test --base-url` went to,
    recorded in the audit entry (None: where the key is used)."""
    from byokctl.services import integrity  # hashes and row MACs: writes only

    if status is not None:
        rules.choice(status, STATUSES, "key status")
    now = clock.stamp()
    with _writing(ctx):
        before = get(ctx, key_id)
        if version is not None and before.version != version:
            raise Conflict(f"Key {key_id} was rotated while it was being tested (now version "
                           f"{before.version})", f"test it again with `byokctl key test {key_id}`")
        after_status = before.status if status is None else status
        integrity.update_key(ctx, key_id, {"status": after_status, "test_result": result,
                                           "last_tested_at": now})
        audit.record(ctx, "key.test", org=before.org, target=key_id,
                     before={"status": before.status, "test_result": before.test_result},
                     after={"status": after_status, "test_result": result, "hint": before.hint,
                            "fingerprint": before.fingerprint, "version": before.version,
                            **({} if base_url is None else {"base_url": safe_url(base_url)})})
    return get(ctx, key_id)


# ---- testing against the provider ---------------------------------------------------------------

MAX_TIMEOUT, MAX_RETRIES = 3600.0, 10  # an hour per network step; ten retries of up to 8 s


def check_limits(timeout: float, retries: int) -> None:
    """--timeout and --retries, for `ask` and every key test. Past the maxima a value is a
    mistake: 1e308 seconds overflows the OS's timers, and a million retries never end."""
    if not timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {timeout:g}")
    if not timeout <= MAX_TIMEOUT:
        raise UsageError(f"--timeout must be at most {MAX_TIMEOUT:g} seconds, not {timeout:g}")
    if retries < 0:
        raise UsageError(f"--retries must be zero or more, not {retries}")
    if retries > MAX_RETRIES:
        raise UsageError(f"--retries must be at most {MAX_RETRIES}, not {retries}")


def _tried(tester: KeyTester, owner: Key | Slot, secret: str, outcome: str, skip: str) -> str:
    """`tester(owner, secret)`; a refusal is raised again (same class, so the same exit code)
    saying what did not happen and what to do instead."""
    try:
        return tester(owner, secret)
    except ByokError as exc:
        what, fix = exc.what, exc.fix
        if isinstance(exc, KeyRejected):
            fix = "check that it is the right key, and still active, at the provider"
        elif isinstance(exc, RateLimited):
            fix = f"wait and try again, or {skip}"
        elif isinstance(exc, ProviderDown):
            fix = f"try again later, or {skip}"
        raise exc.reworded(what, f"{outcome}: {fix}" if fix else outcome) from None
