"""The resolution chain (SPEC §3), row by row, on the pure function."""

from datetime import UTC, datetime, timedelta

import pytest

from byokctl.domain.resolution import Facts, KeyRef, after_provider_error, resolve
from byokctl.errors import ExitCode
from byokctl.providers import catalog

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
FUTURE = "2026-12-01T00:00:00.000000Z"
PAST = "2026-11-01T00:00:00.000000Z"
CAT = catalog.load()
SONNET = CAT.pinned("anthropic", "sonnet").id
PLATFORM_KEY = KeyRef("key_plat", "platform", "openai", "fp_p")
ORG_KEY = KeyRef("key_org", "org", "anthropic", "fp_o")
MEMBER_KEY = KeyRef("key_mem", "member", "anthropic", "fp_m")


def facts(**kw) -> Facts:
    base = dict(
        org="acme", plan="growth", credits=10, provider="anthropic", model=SONNET, base_url=None,
        fallback="never", grace_until=None, budget_monthly_usd=None, byok_cost_mtd=0.0,
        member=None, member_key=None, org_key=ORG_KEY, platform_provider="openai",
        platform_model=CAT.pinned("openai", None).id, platform_base_url=None,
        platform_key=PLATFORM_KEY, now=NOW,
    )
    base.update(kw)
    return Facts(**base)


# plan × grace × keys × fallback → (mode, key, fallback_reason, error code)
ROWS = [
    # the gate holds on growth/scale
    ("growth, org key", dict(), "byok", "key_org", None, None),
    ("scale, org key", dict(plan="scale"), "byok", "key_org", None, None),
    # below growth: grace holds the gate, an ended or absent grant lapses it
    ("starter + active grace", dict(plan="starter", grace_until=FUTURE), "byok", "key_org", None, None),
    ("starter, grace ended", dict(plan="starter", grace_until=PAST), "platform", "key_plat",
     "gate-lapsed", None),
    ("free, no grace", dict(plan="free"), "platform", "key_plat", "gate-lapsed", None),
    ("lapsed gate, no credits", dict(plan="free", credits=0), "platform", "key_plat", "gate-lapsed",
     ExitCode.INSUFFICIENT),
    # member key over org key
    ("member with own key", dict(member="a@x.io", member_key=MEMBER_KEY), "byok", "key_mem", None, None),
    ("member without own key", dict(member="a@x.io"), "byok", "key_org", None, None),
    ("member key, no org key", dict(member="a@x.io", member_key=MEMBER_KEY, org_key=None), "byok",
     "key_mem", None, None),
    # a personal key its owner never approved for the org's base_url is skipped (SPEC §1)
    ("unapproved member key → org key", dict(member="a@x.io", member_key=MEMBER_KEY,
     base_url="https://gw.example.com", member_key_approved=False), "byok", "key_org", None, None),
    ("unapproved member key, no org key", dict(member="a@x.io", member_key=MEMBER_KEY, org_key=None,
     base_url="https://gw.example.com", member_key_approved=False), None, None, None,
     ExitCode.NO_KEY),
    ("unapproved member key, no org key, missing-key", dict(
        member="a@x.io", member_key=MEMBER_KEY, org_key=None, fallback="missing-key",
        base_url="https://gw.example.com", member_key_approved=False),
     "platform", "key_plat", "no-key", None),
    # no key: the three policies
    ("no key, never", dict(org_key=None), None, None, None, ExitCode.NO_KEY),
    ("no key, missing-key", dict(org_key=None, fallback="missing-key"), "platform", "key_plat",
     "no-key", None),
    ("no key, provider-error", dict(org_key=None, fallback="provider-error"), "platform", "key_plat",
     "no-key", None),
    ("no key fallback, no credits", dict(org_key=None, fallback="missing-key", credits=0), "platform",
     "key_plat", "no-key", ExitCode.INSUFFICIENT),
    # platform mode
    ("platform", dict(provider="platform", model=None), "platform", "key_plat", None, None),
    ("platform, no credits", dict(provider="platform", credits=0), "platform", "key_plat", None,
     ExitCode.INSUFFICIENT),
    ("platform, no platform key", dict(provider="platform", platform_key=None), "platform", None, None,
     ExitCode.NO_KEY),
    ("platform mode on a free plan", dict(provider="platform", plan="free"), "platform", "key_plat",
     None, None),
    # budget
    ("budget reached", dict(budget_monthly_usd=10.0, byok_cost_mtd=10.0), "byok", "key_org", None,
     ExitCode.INSUFFICIENT),
    ("budget under", dict(budget_monthly_usd=10.0, byok_cost_mtd=9.99), "byok", "key_org", None, None),
    # fail closed on unknown values in the store
    ("unknown plan", dict(plan="enterprise"), None, None, None, ExitCode.PLAN_GATE),
    ("unknown provider", dict(provider="gemini"), None, None, None, ExitCode.NOT_FOUND),
    ("unknown model", dict(model="claude-9"), None, None, None, ExitCode.NOT_FOUND),
    ("unknown fallback", dict(fallback="always"), None, None, None, ExitCode.NOT_FOUND),
    ("unknown plan never BYOK even with grace", dict(plan="enterprise", grace_until=FUTURE), None,
     None, None, ExitCode.PLAN_GATE),
]


@pytest.mark.parametrize(("name", "kw", "mode", "key", "reason", "error"), ROWS,
                         ids=[r[0] for r in ROWS])
def test_chain(name, kw, mode, key, reason, error):
    d = resolve(facts(**kw), CAT)
    assert d.mode == mode
    assert (d.key.id if d.key else None) == key
    assert d.fallback_reason == reason
    assert (d.error.code if d.error else None) == error
    assert d.reasons, "every decision says why"


def test_soft_fallback_warns_and_keeps_setting_visible():
    d = resolve(facts(plan="starter", grace_until=PAST), CAT)
    assert d.warnings and "platform credits" in d.warnings[0]
    assert d.provider == "openai" and d.gate.allowed is False and d.gate.grace_until == PAST
    assert any("grace grant ended" in r for r in d.reasons)


def test_budget_warns_at_80_percent():
    assert resolve(facts(budget_monthly_usd=10.0, byok_cost_mtd=7.9), CAT).warnings == ()
    d = resolve(facts(budget_monthly_usd=10.0, byok_cost_mtd=8.0), CAT)
    assert d.error is None and "80%" in d.warnings[0]


def test_grace_boundary_is_exclusive():
    at = NOW.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert resolve(facts(plan="free", grace_until=at), CAT).mode == "platform"
    later = (NOW + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert resolve(facts(plan="free", grace_until=later), CAT).mode == "byok"


@pytest.mark.parametrize("policy", ["never", "missing-key", "provider-error"])
def test_provider_refusal_falls_back_only_under_provider_error(policy):
    f = facts(fallback=policy)
    d = resolve(f, CAT)
    fb = after_provider_error(f, d, CAT)
    if policy == "provider-error":
        assert fb is not None and fb.mode == "platform" and fb.fallback_reason == "provider-error"
        assert fb.key.id == "key_plat" and fb.error is None
    else:
        assert fb is None


def test_provider_error_fallback_still_needs_credits():
    f = facts(fallback="provider-error", credits=0)
    fb = after_provider_error(f, resolve(f, CAT), CAT)
    assert fb.error.code == ExitCode.INSUFFICIENT


def test_no_second_fallback_from_platform_mode():
    f = facts(provider="platform", fallback="provider-error")
    assert after_provider_error(f, resolve(f, CAT), CAT) is None


def test_json_has_the_stable_fields():
    d = resolve(facts()._replace(member="a@x.io", member_key=MEMBER_KEY), CAT).to_json()
    for k in ("org", "mode", "provider", "model", "key_id", "key_scope", "fallback_reason", "gate"):
        assert k in d
    assert d["gate"] == {"plan": "growth", "allowed": True, "grace_until": None}
    assert d["key_scope"] == "member"


def test_a_skipped_personal_key_is_named_with_the_fix():
    f = facts(member="a@x.io", member_key=MEMBER_KEY, base_url="https://u:p@gw.example.com/v1?t=1",
              member_key_approved=False)
    d = resolve(f, CAT)
    assert d.to_json()["skipped_keys"] == [{
        "key_id": "key_mem", "key_scope": "member", "reason": "endpoint-not-approved",
        "base_url": "https://gw.example.com/v1",  # no credentials shown
        "fix": "approve it with `byokctl key approve-endpoint key_mem --as a@x.io`"}]
    assert any("key_mem is skipped" in r for r in d.reasons)
    assert any("key_mem was not used" in w for w in d.warnings)
    d = resolve(f._replace(org_key=None), CAT)
    assert "key approve-endpoint key_mem" in d.error.message and "u:p" not in d.error.message
    assert resolve(facts(member="a@x.io", member_key=MEMBER_KEY), CAT).to_json()["skipped_keys"] == []
