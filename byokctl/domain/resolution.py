"""The resolution chain (SPEC §3) as one pure function: the decision and the reasons for it.

`resolve` prints it, `ask` obeys it, the usage record stores it. No I/O here: the caller
gathers the facts (org row, keys present, month-to-date BYOK cost, clock) into `Facts`.

Its records are NamedTuples: immutable like frozen dataclasses, and about six times cheaper to
define, which every `resolve` and `ask` pays at start-up.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple, Protocol

from byokctl.domain import (
    ACTIVE,
    FALLBACKS,
    GATE_LAPSED,
    INVALID,
    NO_KEY,
    PLATFORM,
    PROVIDER_ERROR,
    budget,
    plans,
)
from byokctl.domain.lifecycle import Lifecycle, warning
from byokctl.domain.plans import Gate
from byokctl.errors import ByokError, Insufficient, NoKey, NotFound


class ModelCatalog(Protocol):
    """What the chain reads of the model catalog (`byokctl.providers.catalog.Catalog`)."""

    info: dict  # per provider id: its catalog facts

    def is_known(self, provider: str, model_id: str | None) -> bool: ...

    def lifecycle(self, provider: str, model_id: str | None, now: datetime) -> Lifecycle | None: ...


class KeyRef(NamedTuple):
    """A stored key as resolution sees it: id, scope, provider, fingerprint, status (no secret)."""

    id: str
    scope: str
    provider: str
    fingerprint: str
    status: str = ACTIVE


class SkippedKey(NamedTuple):
    key_id: str
    key_scope: str
    reason: str  # endpoint-not-approved
    base_url: str | None  # as it may be shown (no credentials)
    fix: str


class Facts(NamedTuple):
    org: str
    plan: str
    credits: int
    provider: str
    model: str | None
    base_url: str | None
    fallback: str
    grace_until: str | None
    budget_monthly_usd: float | None
    byok_cost_mtd: float
    member: str | None  # the acting member's email (`--as`), if any
    member_key: KeyRef | None  # the member's personal key for the org's provider
    org_key: KeyRef | None  # the org key for the org's provider
    platform_provider: str
    platform_model: str
    platform_base_url: str | None
    platform_key: KeyRef | None
    now: datetime
    # False when the member's personal key may not go to `base_url`: its owner (or the
    # operator) never approved that endpoint (SPEC §1); the key is then skipped.
    member_key_approved: bool = True


class Decision(NamedTuple):
    """Which provider, model and key a request uses, and why (`byokctl resolve`,
    `byokctl.Vault.resolve`); `error` is the refusal a call on it raises. Never a secret."""

    org: str
    mode: str | None  # "byok" | "platform"; None when the outcome is an error
    provider: str | None
    model: str | None
    base_url: str | None
    key: KeyRef | None
    fallback_reason: str | None
    gate: Gate
    reasons: tuple[str, ...]
    warnings: tuple[str, ...] = ()
    error: ByokError | None = None
    skipped: tuple[SkippedKey, ...] = ()  # keys passed over, and why

    def to_json(self) -> dict:
        return {
            "org": self.org,
            "mode": self.mode,
            "provider": self.provider,
            "model": self.model,
            "base_url": self.base_url,
            "key_id": self.key.id if self.key else None,
            "key_scope": self.key.scope if self.key else None,
            "fallback_reason": self.fallback_reason,
            "gate": self.gate.to_json(),
            "reasons": list(self.reasons),
            "warnings": list(self.warnings),
            "error": None if self.error is None else {
                "code": self.error.code.label, "message": self.error.message},
            "skipped_keys": [k._asdict() for k in self.skipped],
        }

    def to_dict(self) -> dict:
        """The fields of `byokctl resolve --json`."""
        return self.to_json()


def _platform(f: Facts, cat: ModelCatalog, gate: Gate, reasons: list[str], warnings: list[str],
              fallback_reason: str | None) -> Decision:
    """Step 5: the platform's own key and default model, paid for in credits."""
    provider, model = f.platform_provider, f.platform_model
    _retiring(cat, provider, model, "the platform default model", f.now, warnings)
    error: ByokError | None = None
    if not cat.is_known(provider, model):
        error = NotFound(
            f"The platform default model '{provider}/{model}' is not in the catalog", "set one "
            "with `byokctl platform set-default`"
        )
    elif f.platform_key is None:
        error = NoKey(
            f"No platform key for {provider}", "add one with `byokctl key add --platform "
            f"--provider {provider}`"
        )
    elif f.credits <= 0:
        error = Insufficient(
            f"Org {f.org} has no credits left", f"add some with `byokctl credits add {f.org} N`"
        )
    reasons.append(f"platform mode: {provider}/{model} on the platform key, billed in credits "
                   f"(balance {f.credits})")
    return Decision(f.org, "platform", provider, model, f.platform_base_url, f.platform_key,
                    fallback_reason, gate, tuple(reasons), tuple(warnings), error)


def resolve(f: Facts, cat: ModelCatalog) -> Decision:
    """Decide which provider, model and key a request for `f.org` uses, and say why."""
    reasons: list[str] = []
    warnings: list[str] = []
    gate = plans.gate(f.plan, f.grace_until, f.now)

    # Step 7 first: anything unknown in the store fails closed, never BYOK by accident.
    if not gate.known:
        err = plans.unknown_plan(f.org, f.plan)
        return Decision(f.org, None, None, None, None, None, None, gate,
                        (f"plan '{f.plan}' is unknown: refusing",), (), err)
    provider_known = f.provider == PLATFORM or f.provider in cat.info
    if not provider_known or f.fallback not in FALLBACKS:
        bad = f.fallback if provider_known else f.provider
        err = NotFound(f"Org {f.org} has an unknown provider setting '{bad}'", "fix it with "
                       f"`byokctl org set-provider {f.org}`")
        return Decision(f.org, None, None, None, None, None, None, gate,
                        (f"provider setting '{bad}' is unknown: refusing",), (), err)

    # Step 1.
    if f.provider == PLATFORM:
        reasons.append("org provider setting is platform")
        return _platform(f, cat, gate, reasons, warnings, None)
    reasons.append(f"org provider setting is {f.provider} (BYOK), model {f.model}")
    _retiring(cat, f.provider, f.model, f"org {f.org}'s model", f.now, warnings)
    if not cat.is_known(f.provider, f.model):
        err = NotFound(f"Org {f.org} uses model '{f.model}', which is not in the {f.provider} "
                       "catalog", f"pick one with `byokctl org set-provider {f.org} {f.provider} "
                       "--model M`")
        return Decision(f.org, None, f.provider, f.model, f.base_url, None, None, gate,
                        (*reasons, "model unknown: refusing"), (), err)

    # Step 2: the gate.
    if gate.by_plan:
        reasons.append(f"plan {f.plan} includes BYOK")
    elif gate.grace_active:
        reasons.append(f"plan {f.plan} excludes BYOK, but a grace grant holds until "
                       f"{f.grace_until}")
    else:
        why = (f"the grace grant ended {f.grace_until}" if f.grace_until
               else "no grace grant")
        reasons.append(f"plan {f.plan} excludes BYOK and {why}: falling back to platform credits")
        warnings.append(f"BYOK is not included in org {f.org}'s plan ({f.plan}); this request "
                        "uses platform credits. Upgrade the plan or grant grace to restore BYOK")
        return _platform(f, cat, gate, reasons, warnings, GATE_LAPSED)

    # Step 3: the key. A personal key whose owner has not approved the org's base_url is
    # never sent there: it is skipped, and the org key (or the no-key path) takes over.
    key = None
    member_key = f.member_key if f.member else None
    skipped: tuple[SkippedKey, ...] = ()
    if member_key is not None and not f.member_key_approved:
        skip = _unapproved(f, member_key)
        skipped = (skip,)
        reasons.append(f"{f.member}'s personal {f.provider} key {member_key.id} is skipped: its "
                       f"owner has not approved the org's base_url {skip.base_url} ({skip.fix})")
        member_key = None
    if member_key is not None:
        key = member_key
        reasons.append(f"using {f.member}'s personal {f.provider} key {key.id}")
    elif f.org_key is not None:
        key = f.org_key
        if f.member and not skipped:
            reasons.append(f"{f.member} has no personal {f.provider} key")
        reasons.append(f"using the org {f.provider} key {key.id}")
        if skipped:
            warnings.append(f"{f.member}'s personal {f.provider} key {skipped[0].key_id} was not "
                            f"used, since its owner has not approved org {f.org}'s base_url "
                            f"{skipped[0].base_url}; this request uses the org key ({skipped[0].fix})")
    if key is None:
        if f.fallback in ("missing-key", "provider-error"):
            reasons.append(f"no {f.provider} key, and fallback policy {f.fallback} allows "
                           "platform mode")
            warnings.append(f"No {f.provider} key in org {f.org}; this request uses platform "
                            "credits (fallback policy)")
            return _platform(f, cat, gate, reasons, warnings, NO_KEY)._replace(skipped=skipped)
        if skipped:
            s0 = skipped[0]
            err = NoKey(f"{f.member}'s personal {f.provider} key {s0.key_id} is not approved for "
                        f"org {f.org}'s base_url {s0.base_url} and the org has no {f.provider} "
                        "key", f"{s0.fix}, or add an org key with `byokctl key add {f.org} "
                        f"--provider {f.provider}`")
        else:
            err = NoKey(f"No API key for {f.provider} in org {f.org}", "add one with "
                        f"`byokctl key add {f.org} --provider {f.provider}`", org=f.org, provider=f.provider)
        return Decision(f.org, None, f.provider, f.model, f.base_url, None, None, gate,
                        (*reasons, f"no {f.provider} key and fallback policy is {f.fallback}"),
                        tuple(warnings), err, skipped)
    if key.status == INVALID:
        reasons.append(f"key {key.id} was rejected by {f.provider} before; it will be tried again")

    # Step 6: the monthly BYOK budget.
    error: ByokError | None = None
    if f.budget_monthly_usd is not None:
        spent, budget_usd = f.byok_cost_mtd, f.budget_monthly_usd
        if budget.reached(spent, budget_usd):
            error = Insufficient(
                f"Org {f.org} has reached its monthly BYOK budget (${spent:.2f} of "
                f"${budget_usd:.2f})", f"raise it with `byokctl org set-budget {f.org} --monthly-usd N`"
            )
            reasons.append(f"BYOK budget reached: ${spent:.2f} of ${budget_usd:.2f} this month")
        else:
            if budget.warns(spent, budget_usd):
                warnings.append(f"Org {f.org} has used {spent / budget_usd:.0%} of its monthly BYOK "
                                f"budget (${spent:.2f} of ${budget_usd:.2f})")
            reasons.append(f"BYOK budget: ${spent:.2f} of ${budget_usd:.2f} used this month")
    return Decision(f.org, "byok", f.provider, f.model, f.base_url, key, None, gate,
                    tuple(reasons), tuple(warnings), error, skipped)


def _retiring(cat: ModelCatalog, provider: str, model: str | None, where: str, now: datetime,
              warnings: list[str]) -> None:
    """Warn of a model in use that is retired or retires within 30 days."""
    lc = cat.lifecycle(provider, model, now)
    note = None if lc is None else warning(lc, where)
    if note is not None and note not in warnings:
        warnings.append(note)


def _unapproved(f: Facts, key: KeyRef) -> SkippedKey:
    from byokctl.domain.urls import safe_url  # urllib: only when there is a URL to show

    where = safe_url(f.base_url) if f.base_url else None
    return SkippedKey(key.id, key.scope, "endpoint-not-approved", where,
                      f"approve it with `byokctl key approve-endpoint {key.id} --as {f.member}`")


def after_provider_error(f: Facts, decision: Decision, cat: ModelCatalog) -> Decision | None:
    """Step 4: a BYOK key rejected (401/403) or rate-limited (429). Only the `provider-error`
    policy retries once on platform mode; otherwise None (the error stands)."""
    if decision.mode != "byok" or f.fallback != "provider-error":
        return None
    reasons = [*decision.reasons,
               f"{decision.provider} refused the key, and fallback policy provider-error "
               "allows one retry on platform mode"]
    warnings = [*decision.warnings,
                f"{decision.provider} refused org {f.org}'s key; retrying once on platform credits"]
    return _platform(f, cat, decision.gate, reasons, warnings, PROVIDER_ERROR)
