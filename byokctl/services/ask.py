"""`ask`: resolve, call the provider, account for it. One usage record per call, never any text."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from byokctl.domain.credits import credits_for
from byokctl.domain.keys import status_after
from byokctl.domain.resolution import Decision, Facts, after_provider_error
from byokctl.errors import ByokError, Integrity, KeyRejected, RateLimited, VaultLocked
from byokctl.providers import catalog, registry
from byokctl.services import admission, credits, endpoints, integrity, keys, rules, usage
from byokctl.services.context import Context
from byokctl.services.resolution import resolve_for

DEFAULT_CREDIT_USD = 0.01


@dataclass
class Request:
    prompt: str
    system: str | None = None
    max_tokens: int = 1024
    stream: bool = True
    timeout: float = registry.DEFAULT_TIMEOUT
    retries: int = registry.DEFAULT_RETRIES


@dataclass
class Answer:
    text: str
    mode: str
    provider: str
    model: str
    key_id: str
    fallback_reason: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    credits_charged: int
    latency_ms: int

    def to_json(self) -> dict:
        return asdict(self)


def credit_usd(ctx: Context) -> float:
    return float(ctx.store.meta("credit_usd") or DEFAULT_CREDIT_USD)


def ask(ctx: Context, org: str, req: Request, *, on_text: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] = lambda _: None) -> Answer:
    if not req.prompt.strip():
        raise rules.UsageError("The prompt is empty", "pass it as an argument or on stdin with -")
    if req.max_tokens < 1:
        raise rules.UsageError(f"--max-tokens must be at least 1, not {req.max_tokens}")
    keys.check_limits(req.timeout, req.retries)
    decision, f = resolve_for(ctx, org)
    decision = _verified(ctx, decision, f)
    for w in decision.warnings:
        on_warning(w)
    try:
        return _call(ctx, decision, req, on_text, on_warning)
    except (KeyRejected, RateLimited):
        retry = after_provider_error(f, decision, catalog.load())
        if retry is None:
            raise
        on_warning(retry.warnings[-1])
        return _call(ctx, retry, req, on_text, on_warning)


def _verified(ctx: Context, d: Decision, f: Facts) -> Decision:
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


def _call(ctx: Context, d: Decision, req: Request, on_text: Callable[[str], None] | None,
          on_warning: Callable[[str], None]) -> Answer:
    member = ctx.as_email.lower() if ctx.as_email else None
    record = usage.Record(org=d.org, actor=ctx.actor, member=member, mode=d.mode or "none",
                          outcome="ok", provider=d.provider, model=d.model,
                          key_id=d.key.id if d.key else None,
                          fingerprint=d.key.fingerprint if d.key else None,
                          fallback_reason=d.fallback_reason,
                          catalog_version=catalog.load().version)
    if d.error is not None:
        _fail(ctx, record, d.error)
        raise d.error
    assert d.key is not None and d.provider and d.model and d.mode
    if d.key.scope == "member" and member is not None:
        # Resolution skips an unapproved personal key; this holds even if a caller built the
        # decision some other way: a member's secret never leaves for an endpoint they refused.
        endpoints.require_approved(ctx, keys.Slot("member", d.org, member, d.provider), d.base_url)
    registry.prefetch(d.provider)  # the SDK loads while the key is decrypted
    started = time.monotonic()
    try:
        held = _reserve(ctx, d, req)
    except ByokError as exc:
        _fail(ctx, record, exc)
        raise
    try:
        return _call_reserved(ctx, d, req, record, held, started, on_text, on_warning)
    except BaseException:
        # Settled or released already, unless something unforeseen stopped the call (a bug,
        # Ctrl-C): then give the reservation back now rather than at its expiry.
        with contextlib.suppress(Exception), ctx.store.tx():
            admission.release(ctx, held)
        raise


def _reserve(ctx: Context, d: Decision, req: Request) -> admission.Reservation | None:
    """Admit the call against what calls in flight have reserved (SPEC §1 Credits)."""
    from byokctl.services.resolution import month_start_iso

    assert d.provider and d.model and d.mode
    estimate = admission.estimate_usd(d.provider, d.model, prompt=req.prompt, system=req.system,
                                      max_tokens=req.max_tokens)
    budget = ctx.store.orgs.budget_monthly_usd(d.org)
    return admission.reserve(ctx, org=d.org, mode=d.mode, estimate_usd=estimate,
                             credit_value=credit_usd(ctx), deadline_s=req.timeout,
                             budget_usd=budget if d.mode == "byok" else None,
                             month_start=month_start_iso())


def _call_reserved(ctx: Context, d: Decision, req: Request, record: usage.Record,
                   held: admission.Reservation | None, started: float,
                   on_text: Callable[[str], None] | None,
                   on_warning: Callable[[str], None]) -> Answer:
    assert d.key is not None and d.provider and d.model and d.mode
    try:
        secret = keys.reveal(ctx, d.key.id)
        result = registry.get(d.provider).complete(
            secret=secret, model=d.model, prompt=req.prompt, system=req.system,
            max_tokens=req.max_tokens, base_url=d.base_url, timeout=req.timeout,
            retries=req.retries, stream=req.stream, on_text=on_text, key_id=d.key.id)
    except ByokError as exc:
        record.latency_ms = int((time.monotonic() - started) * 1000)
        _fail(ctx, record, exc, key_status=status_after(exc), held=held)
        raise
    model = catalog.load().find(d.provider, d.model)
    cost = model.cost_usd(result.input_tokens, result.output_tokens)
    record.input_tokens, record.output_tokens = result.input_tokens, result.output_tokens
    record.cost_usd = cost
    record.latency_ms = int((time.monotonic() - started) * 1000)
    key_id = d.key.id
    notes: list[str] = []

    def account() -> None:
        # The call is recorded whatever happened to its org or key meanwhile (the tokens are
        # spent). `credits_charged` is the call's price in credits: what the balance covered
        # plus the shortfall it left, or, for an org deleted during the call, nothing could be
        # taken (said on stderr). A retried transaction starts afresh.
        notes.clear()
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
        if ctx.store.keys.exists(key_id):
            keys.mark_used(ctx, key_id, status=keys.ACTIVE, why="it answered a request")
        else:
            notes.append(f"key {key_id} was removed while the call ran; the call is recorded")

    _record_answered(ctx, account, on_warning)
    for note in notes:
        on_warning(note)
    charged = record.credits_charged
    return Answer(result.text, d.mode, d.provider, d.model, d.key.id, d.fallback_reason,
                  result.input_tokens, result.output_tokens, round(cost, 8), charged,
                  record.latency_ms)


RECORD_ATTEMPTS = 10  # busy timeouts to wait through before an answered call goes unrecorded


def _record_answered(ctx: Context, account: Callable[[], None],
                     on_warning: Callable[[str], None]) -> None:
    """Record and charge a call the provider has answered. Its tokens are spent by now, so a
    vault busy past one busy timeout (a long `rekey` or `apply` elsewhere) is waited for, up
    to RECORD_ATTEMPTS of them, rather than letting the call go unrecorded and unbilled."""
    from byokctl.store import is_busy

    for attempt in range(1, RECORD_ATTEMPTS + 1):
        try:
            with ctx.write():
                account()
            return
        except Exception as exc:  # only a busy vault is waited through; anything else stands
            if not is_busy(exc) or attempt == RECORD_ATTEMPTS:
                raise
            on_warning("the vault is busy (another byokctl is writing); still waiting to "
                       "record this call")


def _fail(ctx: Context, record: usage.Record, exc: ByokError, key_status: str | None = None,
          held: admission.Reservation | None = None) -> None:
    """Record a failed call (and what it says about the key) and give back its reservation;
    the caller re-raises the error. A key removed during the call keeps its record."""
    record.outcome = exc.outcome or exc.code.label
    # Only a key-status change is audited (and so needs the vault); a refusal decided before
    # any call is recorded even when the vault is locked.
    with ctx.write() if key_status else ctx.store.tx():
        admission.release(ctx, held)
        usage.insert(ctx.store, record)
        if key_status and record.key_id and ctx.store.keys.exists(record.key_id):
            keys.mark_used(ctx, record.key_id, status=key_status,
                           why=f"{record.provider} answered {exc.code.label}")
