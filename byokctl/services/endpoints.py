"""Where a member's personal key may be sent: the provider's official endpoint always; an org
`base_url` only once that member (or the platform operator) approved it (SPEC §1).

Every read and write of approvals (`store.approvals`) goes through this module (the "rows"
section), so that the row MAC is sealed and checked in one place. An approval is for one
member's personal key of one provider in one org, and one normalised base URL: a different
URL needs a new approval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from byokctl import clock
from byokctl.errors import Denied, UsageError
from byokctl.services import rules
from byokctl.services.context import Context

if TYPE_CHECKING:
    from byokctl.services.keys import Key, Slot
    from byokctl.store import Row, Store

OWNER, OPERATOR = "owner", "operator"
NOT_APPROVED = "endpoint-not-approved"  # the reason a skipped key carries in `resolve --json`
_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise(url: str) -> str:
    """One spelling per endpoint: scheme and host lower-case, the default port and trailing
    slashes dropped. Path, query and user info are kept: they can route to another backend."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    netloc = (f"{userinfo}@" if userinfo else "") + host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


def shown(url: str) -> str:
    """The URL as messages, JSON and the audit log may show it (no credentials)."""
    from byokctl.providers.redact import safe_url

    return safe_url(url)


@dataclass
class Approval:
    org: str
    member: str
    provider: str
    base_url: str  # normalised; may hold user info, so never shown as is
    approved_by: str
    approved_as: str  # owner | operator
    approved_at: str

    def to_json(self) -> dict:
        return {"provider": self.provider, "base_url": shown(self.base_url),
                "approved_by": self.approved_by, "approved_as": self.approved_as,
                "approved_at": self.approved_at}


# ---- rows: the only code that reads or writes store.approvals ----------------------------------

def _approval(row: Row) -> Approval:
    return Approval(row["org"], row["member"], row["provider"], row["base_url"],
                    row["approved_by"], row["approved_as"], row["approved_at"])


def _find(store: Store, org: str, member: str, provider: str, url: str) -> Approval | None:
    row = store.approvals.get(org, member, provider, url)
    return None if row is None else _approval(row)


def _all(store: Store, org: str | None = None) -> list[Approval]:
    """Every approval (in one org, or in all: the table holds a few rows per member)."""
    return [_approval(r) for r in store.approvals.all(org)]


def _insert(ctx: Context, a: Approval) -> None:
    ctx.store.approvals.insert(a.org, a.member, a.provider, a.base_url, a.approved_by,
                               a.approved_as, a.approved_at)
    from byokctl.services import integrity

    integrity.seal(ctx, "endpoint_approvals", (a.org, a.member, a.provider, a.base_url))


def _delete(ctx: Context, a: Approval) -> None:
    ctx.store.approvals.delete(a.org, a.member, a.provider, a.base_url)


# ---- questions ----------------------------------------------------------------------------------

def is_approved(store: Store, org: str, member: str, provider: str, base_url: str | None) -> bool:
    """May `member`'s personal `provider` key in `org` be sent to `base_url`? None (the
    provider's official endpoint) is always approved."""
    if base_url is None:
        return True
    return _find(store, org, member, provider, normalise(base_url)) is not None


def approved_by_slot(ctx: Context, org: str | None = None) -> dict[tuple[str, str, str], list[Approval]]:
    """Every approval (in one org, or in all), by the personal key slot it is for: `(org,
    member, provider)`; `key list` and `export` look each key up as they stream them."""
    out: dict[tuple[str, str, str], list[Approval]] = {}
    for a in _all(ctx.store, org):
        out.setdefault((a.org, a.member, a.provider), []).append(a)
    return out


def not_approved(org: str, member: str, key_id: str | None, base_url: str) -> Denied:
    """The refusal for sending a personal key to an endpoint its owner did not approve."""
    fix = (f"{member} (or the platform operator, without --as) can approve it with "
           f"`byokctl key approve-endpoint {key_id} --as {member}`" if key_id else
           "store the key without --test, then have its owner (or the platform operator) "
           "approve the endpoint with `byokctl key approve-endpoint KEY_ID`")
    what = f"personal key {key_id}" if key_id else "personal key"
    return Denied(f"{member} has not approved sending their {what} to org {org}'s base_url "
                  f"{shown(base_url)}, so nothing was sent", fix)


def not_approved_for(member: str, key_id: str | None, base_url: str) -> Denied:
    """The refusal for testing a personal key at an endpoint (`--base-url`) its owner did not
    approve."""
    where = shown(base_url)
    fix = (f"{member} (or the platform operator, without --as) can approve it first with "
           f"`byokctl key approve-endpoint {key_id} --base-url {where} --as {member}`" if key_id else
           "store the key without --test, then have its owner (or the platform operator) approve "
           f"the endpoint with `byokctl key approve-endpoint KEY_ID --base-url {where}`")
    return Denied(f"{member} has not approved sending their personal key{f' {key_id}' if key_id else ''}"
                  f" to {where}, so nothing was sent", fix)


def require_approved(ctx: Context, owner: Key | Slot, base_url: str | None) -> None:
    """Raise Denied unless `owner`'s secret may go to `base_url`. Org and platform keys go where
    the org's admins or the operator point them; a personal key only where its owner agreed."""
    if owner.scope != "member" or base_url is None:
        return
    assert owner.org is not None and owner.member is not None
    if not is_approved(ctx.store, owner.org, owner.member, owner.provider, base_url):
        raise not_approved(owner.org, owner.member, getattr(owner, "id", None), base_url)
    from byokctl.services import integrity  # the secret is about to go there: the row must be ours

    integrity.verify(ctx, "endpoint_approvals",
                     (owner.org, owner.member, owner.provider, normalise(base_url)))


# ---- changes (audited) --------------------------------------------------------------------------

def grant(ctx: Context, org: str, member: str, provider: str, base_url: str, *,
          approved_as: str, key_id: str | None = None) -> Approval | None:
    """Record an approval inside the caller's write transaction; None if it already exists."""
    url = normalise(base_url)
    if _find(ctx.store, org, member, provider, url) is not None:
        return None
    a = Approval(org, member, provider, url, ctx.actor, approved_as, clock.stamp())
    _insert(ctx, a)
    from byokctl.services import audit

    audit.record(ctx, "key.approve_endpoint", org=org, target=key_id or member,
                 after={"member": member, "provider": provider, "base_url": shown(url),
                        "approved_as": approved_as})
    return a


def converge(ctx: Context, org: str, member: str, provider: str, urls: tuple[str, ...], *,
             prune: bool) -> None:
    """`apply`: the operator approves each of `urls` for the member's personal key; with
    `prune`, approvals the file does not list are withdrawn. Inside the caller's transaction."""
    if not ctx.store.members.exists(org, member):
        return  # adding the key then says who is missing
    wanted = {normalise(u) for u in urls}
    for url in sorted(wanted):
        grant(ctx, org, member, provider, url, approved_as=OPERATOR)
    if not prune:
        return
    from byokctl.services import audit

    for a in _all(ctx.store, org):
        if a.member == member and a.provider == provider and a.base_url not in wanted:
            _delete(ctx, a)
            audit.record(ctx, "key.revoke_endpoint", org=org, target=member,
                         before={"member": member, "provider": provider,
                                 "base_url": shown(a.base_url), "approved_as": a.approved_as,
                                 "approved_by": a.approved_by})


@dataclass
class Change:
    """What `approve-endpoint` / `revoke-endpoint` did to one personal key's approvals."""

    key: Key
    base_url: str  # normalised
    approved: bool  # after the command
    changed: bool  # False: it was already so
    approval: Approval | None  # the approval granted, or the one revoked (None if there was none)

    def to_json(self) -> dict:
        a = self.approval
        return {"key_id": self.key.id, "org": self.key.org, "member": self.key.member,
                "provider": self.key.provider, "base_url": shown(self.base_url),
                "approved": self.approved, "changed": self.changed,
                "approved_by": a.approved_by if a else None,
                "approved_as": a.approved_as if a else None,
                "approved_at": a.approved_at if a else None}


def _target(ctx: Context, key_id: str, base_url: str | None, verb: str) -> tuple[Key, str]:
    """The personal key and the URL an approve/revoke is about, once the actor may do it: the
    key's owner (key:own) or the platform operator. An org admin may not: that is the attack."""
    from byokctl.services.keys import get, require_key
    from byokctl.services.permissions import actor_in

    try:
        key = require_key(ctx, key_id, f"{verb} endpoints for")
    except Denied:
        key = get(ctx, key_id)  # a member of its org, not the owner: said below, precisely
        if key.scope != "member":
            raise
    if key.scope != "member":
        raise UsageError(f"Key {key.id} is {'the platform' if key.scope == 'platform' else 'an org'}"
                         " key, which goes wherever its org's admins (or the operator) point it",
                         "endpoint approval is for members' personal keys")
    assert key.org is not None and key.member is not None
    actor = actor_in(ctx, key.org)
    if not actor.is_operator and (actor.email != key.member
                                  or not rules.permits(actor.role or "", rules.KEY_OWN)):
        raise Denied(f"{actor.email} ({actor.role}) may not {verb} endpoints for {key.member}'s "
                     f"personal key {key.id}", f"only {key.member} or the platform operator may "
                     "decide where a member's own key is sent")
    if base_url is not None:
        # As the org's base_url is stored: corrected for the key's provider's SDK.
        return key, normalise(rules.provider_base_url(key.provider, base_url, allow_insecure=True)[0])
    route = ctx.store.orgs.provider_and_base_url(key.org)
    if route is None or route[0] != key.provider or route[1] is None:
        raise UsageError(f"Org {key.org} sends {key.provider} keys to the provider's official "
                         "endpoint, which needs no approval", "give --base-url URL to approve "
                         "another one in advance")
    return key, normalise(route[1])


def approve(ctx: Context, key_id: str, base_url: str | None = None) -> Change:
    """`key approve-endpoint`: let a member's personal key be sent to `base_url` (default: its
    org's current base_url)."""
    key, url = _target(ctx, key_id, base_url, "approve")
    assert key.org is not None and key.member is not None
    with ctx.write():
        made = grant(ctx, key.org, key.member, key.provider, url,
                     approved_as=OPERATOR if ctx.as_email is None else OWNER, key_id=key.id)
        approval = made or _find(ctx.store, key.org, key.member, key.provider, url)
    return Change(key, url, True, made is not None, approval)


def revoke(ctx: Context, key_id: str, base_url: str | None = None) -> Change:
    """`key revoke-endpoint`: withdraw an approval; the key is no longer sent there."""
    key, url = _target(ctx, key_id, base_url, "revoke")
    assert key.org is not None and key.member is not None
    with ctx.write():
        existing = _find(ctx.store, key.org, key.member, key.provider, url)
        if existing is not None:
            _delete(ctx, existing)
            from byokctl.services import audit

            audit.record(ctx, "key.revoke_endpoint", org=key.org, target=key.id,
                         before={"member": key.member, "provider": key.provider,
                                 "base_url": shown(url), "approved_as": existing.approved_as,
                                 "approved_by": existing.approved_by})
    return Change(key, url, False, existing is not None, existing)
