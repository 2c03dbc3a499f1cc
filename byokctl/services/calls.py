"""One admitted provider call, whoever makes it: `ask` (byokctl's own adapters) or a platform's
own code through `byokctl.Vault.client()`. Admitting it (the refusal recorded, the member's
endpoint approval, the reservation, the secret), settling it (usage record, credits, key
status) and failing it are here once, so both paths account for a call the same way.

An `Admitted` call holds data only, never a context: an async caller may admit it on one
worker thread and settle it on another, each with that thread's own store connection.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from byokctl import clock
from byokctl.domain.credits import credits_for
from byokctl.domain.resolution import Decision, Facts
from byokctl.errors import ByokError, Integrity, VaultLocked
from byokctl.providers import catalog, registry
from byokctl.services import admission, credits, endpoints, integrity, keys, usage
from byokctl.services.context import UNSEEN, Context
from byokctl.vault import rowmac

DEFAULT_CREDIT_USD = 0.01
RECORD_ATTEMPTS = 10  # busy timeouts to wait through before an answered call goes unrecorded
BUSY_WARNING = "the vault is busy (another byokctl is writing); still waiting to record this call"


def credit_usd(ctx: Context) -> float:
    """What one credit is worth in USD (a platform setting)."""
    value = ctx.recall("meta", "credit_usd")
    if value is UNSEEN:
        value = ctx.store.meta("credit_usd")
    return float(value or DEFAULT_CREDIT_USD)


@dataclass
class Admitted:
    """A call admitted against the org's balance or budget, about to reach the provider."""

    decision: Decision
    record: usage.Record  # filled in as the call goes
    held: admission.Reservation | None
    started: float  # time.monotonic() when admitted: the record's latency starts here
    secret: str = field(repr=False)  # for the SDK client only; never shown, never stored
    # The key's row (MACed columns and mac) as admission read and checked it, if nothing was
    # written since: what lets a plain BYOK call be recorded without the whole write lock.
    key_row: dict[str, Any] | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # the dataclass's own would be safe too; this says so
        d = self.decision
        return f"Admitted(org={d.org!r}, mode={d.mode!r}, provider={d.provider!r}, key={self.key_id!r})"

    @property
    def key_id(self) -> str | None:
        return self.decision.key.id if self.decision.key else None


@dataclass(frozen=True)
class Settled:
    """What a settled call cost."""

    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    credits_charged: int
    latency_ms: int


def verified(ctx: Context, d: Decision, f: Facts) -> Decision:
    """The decision, or an Integrity refusal (exit 13, recorded like any refusal) if a row it
    was made from was changed outside byokctl: then no key is sent anywhere. A refusal made
    without the master key (a locked vault) stands as it is: nothing is sent either way."""
    if d.error is not None:
        try:
            ctx.vault()
        except VaultLocked:
            return d
    try:
        integrity.verify_for_use(ctx, f)
    except (Integrity, VaultLocked) as exc:  # recorded like the refusal it is
        return d._replace(error=exc)
    return d


def new_record(ctx: Context, d: Decision) -> usage.Record:
    member = ctx.as_email.lower() if ctx.as_email else None
    return usage.Record(org=d.org, actor=ctx.actor, member=member, mode=d.mode or "none",
                        outcome="ok", provider=d.provider, model=d.model,
                        key_id=d.key.id if d.key else None,
                        fingerprint=d.key.fingerprint if d.key else None,
                        fallback_reason=d.fallback_reason,
                        catalog_version=catalog.load().version)


def admit(ctx: Context, d: Decision, *, estimate_usd: Callable[[str, str], float],
          deadline_s: float) -> Admitted:
    """Admit a call on decision `d`: a refusal is recorded and raised; else the call reserves
    `estimate_usd(provider, model)` against what calls in flight hold, and the key's secret is
    decrypted. A failure after the reservation gives it back."""
    record = new_record(ctx, d)
    if d.error is not None:
        fail_record(ctx, record, d.error)
        raise d.error
    assert d.key is not None and d.provider and d.model and d.mode
    if d.key.scope == "member" and record.member is not None:
        # Resolution skips an unapproved personal key; this holds even if a caller built the
        # decision some other way: a member's secret never leaves for an endpoint they refused.
        endpoints.require_approved(ctx, keys.Slot("member", d.org, record.member, d.provider),
                                   d.base_url)
    registry.prefetch(d.provider)  # the SDK loads while the key is decrypted
    started = time.monotonic()
    try:
        held = _reserve(ctx, d, estimate_usd, deadline_s)
    except ByokError as exc:
        fail_record(ctx, record, exc)
        raise
    try:
        secret = keys.reveal(ctx, d.key.id)
    except ByokError as exc:
        fail_record(ctx, record, exc, held=held)
        raise
    except BaseException:
        release(ctx, held)
        raise
    row = ctx.recall("keys", (d.key.id,))  # the row verified and opened just now
    key_row = None if row is UNSEEN else {c: row[c] for c in (*rowmac.KEY_COLUMNS, "mac")}
    return Admitted(d, record, held, started, secret, key_row)


def _reserve(ctx: Context, d: Decision, estimate_usd: Callable[[str, str], float],
             deadline_s: float) -> admission.Reservation | None:
    """Admit the call against what calls in flight have reserved (SPEC §1 Credits); a BYOK
    call with no budget reserves nothing, and nothing is estimated for it."""
    from byokctl.services.resolution import month_start_iso

    assert d.mode and d.provider and d.model
    org = ctx.recall("orgs", (d.org,))  # the row the decision was made from, if it was read
    budget = ctx.store.orgs.budget_monthly_usd(d.org) if org is UNSEEN else org["budget_monthly_usd"]
    if d.mode != "platform" and budget is None:
        return None
    return admission.reserve(ctx, org=d.org, mode=d.mode,
                             estimate_usd=estimate_usd(d.provider, d.model),
                             credit_value=credit_usd(ctx), deadline_s=deadline_s,
                             budget_usd=budget if d.mode == "byok" else None,
                             month_start=month_start_iso())


def release(ctx: Context, held: admission.Reservation | None) -> None:
    """Give a reservation back now rather than at its expiry (something unforeseen stopped
    the call: a bug, Ctrl-C, a cancelled task). Never raises."""
    with contextlib.suppress(Exception), ctx.store.tx():
        admission.release(ctx, held)


def settle(ctx: Context, call: Admitted, input_tokens: int, output_tokens: int, *,
           model: str | None = None, on_warning: Callable[[str], None] = lambda _: None) -> Settled:
    """Record and charge a call the provider answered: one transaction deletes its
    reservation, charges its credits (platform mode) and writes its usage record. `model`: the
    catalog model that answered, if another than the decision's (priced and recorded so)."""
    d, record, held = call.decision, call.record, call.held
    assert d.key is not None and d.provider and d.model and d.mode
    cat = catalog.load()
    priced = cat.find(d.provider, model) if model and cat.is_known(d.provider, model) else \
        cat.find(d.provider, d.model)
    cost = priced.cost_usd(input_tokens, output_tokens)
    record.model = priced.id
    record.input_tokens, record.output_tokens = input_tokens, output_tokens
    record.cost_usd = cost
    record.latency_ms = int((time.monotonic() - call.started) * 1000)
    key_id = d.key.id
    notes: list[str] = []
    kept_if: str | None = None  # the key's MAC that shows a record sent alone was kept

    def account() -> None:
        # The call is recorded whatever happened to its org or key meanwhile (the tokens are
        # spent). `credits_charged` is the call's price in credits: what the balance covered
        # plus the shortfall it left, or, for an org deleted during the call, nothing could be
        # taken (said on stderr). A retried transaction starts afresh.
        notes.clear()
        if kept_if is not None:  # sent alone, then the connection was lost: was it kept?
            # Under the lock: a record that reaches the server after this one is written finds
            # the key's row changed by it, and writes nothing.
            found = ctx.store.rows.get("keys", (key_id,))
            if found is not None and found["mac"] == kept_if:
                return
        admission.release(ctx, held)
        record.credits_charged = 0
        if d.mode == "platform":
            price = credits_for(cost, credit_usd(ctx))
            change = credits.change(ctx, d.org, charge=price,
                                    created_at=held.org_created_at if held else None)
            record.credits_charged = price
            if change is None:
                notes.append(f"org {d.org} was deleted while the call ran: its usage is recorded "
                             f"({price} credit{'s' if price != 1 else ''}), but no balance was "
                             "left to charge")
            elif change.owed:
                notes.append(f"this call cost {price} credits and org {d.org} had {change.before}: "
                             f"{change.shortfall_after} credits are owed (`byokctl credits show "
                             f"{d.org}`); the next `byokctl credits add` pays them first")
        usage.insert(ctx.store, record)
        if not keys.mark_used(ctx, key_id, status=keys.ACTIVE, why="it answered a request"):
            notes.append(f"key {key_id} was removed while the call ran; the call is recorded")

    alone = _recorded_alone(ctx, call)
    if not alone.done:
        kept_if = alone.kept_if
        if alone.busy:  # one busy timeout waited through already
            on_warning(BUSY_WARNING)
        _record_answered(ctx, account, on_warning, waited=int(alone.busy))
    for note in notes:
        on_warning(note)
    return Settled(priced.id, input_tokens, output_tokens, round(cost, 8), record.credits_charged,
                   record.latency_ms)


class _Alone(NamedTuple):
    """What `_recorded_alone` did."""

    done: bool  # recorded
    busy: bool = False  # not: a writer held the vault for a whole busy timeout
    # Not known: the connection was lost after the record was sent. It was kept if the key's
    # row carries this MAC, which the usual way looks at under the lock before it records (a
    # record that reaches the server later finds the row changed, and writes nothing).
    kept_if: str | None = None


def _recorded_alone(ctx: Context, call: Admitted) -> _Alone:
    """Record a BYOK call that reserved nothing and whose key stays active: its usage record
    and the key's last use, in one transaction that reads nothing first, written only if the
    key's row still carries the MAC admission checked (so it is the row admission read).
    Nothing else changes: no credits, no reservation, no key status, no audit entry, so
    PostgreSQL runs these beside each other, in one round trip each. Not done (the row
    changed, the vault was busy, or the call is not such a call): the usual way records it."""
    from byokctl.store import is_busy

    d, row = call.decision, call.key_row
    if d.mode != "byok" or call.held is not None or row is None or \
            row["status"] != keys.ACTIVE or ctx.store.in_transaction:
        return _Alone(False)
    values = integrity.guarded(ctx, "keys", row, {"last_used_at": clock.stamp()})
    if values is None:
        return _Alone(False)
    ctx.seen = {}  # the key's row changes
    try:
        done = ctx.store.usage.insert_if_unchanged(vars(call.record), "keys", (row["id"],),
                                                   row["mac"], values)
    except Exception as exc:
        if not is_busy(exc):
            raise
        return _Alone(False, busy=True)
    return _Alone(False, kept_if=values["mac"]) if done is None else _Alone(done)


def _record_answered(ctx: Context, account: Callable[[], None],
                     on_warning: Callable[[str], None], waited: int = 0) -> None:
    """Record and charge a call the provider has answered. Its tokens are spent by now, so a
    vault busy past one busy timeout (a long `rekey` or `apply` elsewhere) is waited for, up
    to RECORD_ATTEMPTS of them (`waited` of them already spent), rather than letting the call
    go unrecorded and unbilled."""
    from byokctl.store import is_busy

    for attempt in range(min(waited, RECORD_ATTEMPTS - 1) + 1, RECORD_ATTEMPTS + 1):
        try:
            with ctx.write():
                account()
            return
        except Exception as exc:  # only a busy vault is waited through; anything else stands
            if not is_busy(exc) or attempt == RECORD_ATTEMPTS:
                raise
            on_warning(BUSY_WARNING)


def fail(ctx: Context, call: Admitted, exc: ByokError | None, *, outcome: str | None = None) -> None:
    """Record an admitted call that failed (`exc`, else `outcome`), what the failure says of
    the key (401/403 → invalid, 429 → rate-limited), and give back its reservation."""
    from byokctl.domain.keys import status_after

    call.record.latency_ms = int((time.monotonic() - call.started) * 1000)
    fail_record(ctx, call.record, exc, key_status=status_after(exc) if exc else None,
                held=call.held, outcome=outcome)


def fail_record(ctx: Context, record: usage.Record, exc: ByokError | None,
                key_status: str | None = None, held: admission.Reservation | None = None,
                outcome: str | None = None) -> None:
    """Record a failed call (and what it says about the key) and give back its reservation;
    the caller re-raises the error. A key removed during the call keeps its record."""
    record.outcome = outcome or (exc.outcome or exc.code.label if exc else "internal")
    # Only a key-status change is audited (and so needs the vault); a refusal decided before
    # any call is recorded even when the vault is locked.
    with ctx.write() if key_status else ctx.store.tx():
        admission.release(ctx, held)
        usage.insert(ctx.store, record)
        if key_status and record.key_id:  # a key removed during the call is simply gone
            keys.mark_used(ctx, record.key_id, status=key_status,
                           why=f"{record.provider} answered {exc.code.label if exc else key_status}")
