"""The one BYOK gate (SPEC §1, §3.2, §3.7): plan × grace × clock, and an unknown plan."""

from datetime import UTC, datetime, timedelta

import pytest

from byokctl.domain import budget, plans
from byokctl.errors import ExitCode

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def stamp(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


FUTURE, PAST, AT = stamp(NOW + timedelta(days=1)), stamp(NOW - timedelta(days=1)), stamp(NOW)


@pytest.mark.parametrize(("plan", "grace", "allowed", "by_plan", "grace_active"), [
    ("growth", None, True, True, False),
    ("scale", PAST, True, True, False),
    ("free", None, False, False, False),
    ("starter", FUTURE, True, False, True),
    ("starter", PAST, False, False, False),
    ("free", AT, False, False, False),  # a grant ends at its instant, exclusive
    ("free", stamp(NOW + timedelta(microseconds=1)), True, False, True),
    ("free", "2026-11-24T00:00:00+00:00", True, False, True),  # any ISO offset form
    ("enterprise", None, False, False, False),  # unknown: closed
    ("enterprise", FUTURE, False, False, True),  # closed even with a live grant
    ("", FUTURE, False, False, True),
])
def test_gate(plan, grace, allowed, by_plan, grace_active):
    g = plans.gate(plan, grace, NOW)
    assert (g.allowed, g.by_plan, g.grace_active) == (allowed, by_plan, grace_active)
    assert g.known is (plan in plans.PLANS)
    assert g.to_json() == {"plan": plan, "allowed": allowed, "grace_until": grace}


def test_only_growth_and_scale_include_byok():
    assert [p for p in plans.PLANS if plans.gate(p, None, NOW).allowed] == ["growth", "scale"]


def test_refusal_names_the_fix_and_is_exit_5_for_both_reasons():
    assert plans.refusal("acme", plans.gate("growth", None, NOW)) is None
    assert plans.refusal("acme", plans.gate("free", FUTURE, NOW)) is None
    lapsed = plans.refusal("acme", plans.gate("free", PAST, NOW))
    assert lapsed.code == ExitCode.PLAN_GATE
    assert "byokctl plan set acme growth" in lapsed.message and "plan grant-grace acme" in lapsed.message
    unknown = plans.refusal("acme", plans.gate("enterprise", FUTURE, NOW))
    assert unknown.code == ExitCode.PLAN_GATE
    assert unknown.message == plans.unknown_plan("acme", "enterprise").message
    assert "unknown plan 'enterprise'" in unknown.message and "byokctl plan set acme PLAN" in unknown.message


@pytest.mark.parametrize(("spent", "limit", "reached", "warns"), [
    (0.0, 10.0, False, False),
    (7.99, 10.0, False, False),
    (8.0, 10.0, False, True),  # 80% warns
    (9.99, 10.0, False, True),
    (10.0, 10.0, True, False),  # 100% refuses, no longer a warning
    (12.0, 10.0, True, False),
])
def test_budget_80_and_100_percent(spent, limit, reached, warns):
    assert budget.reached(spent, limit) is reached
    assert budget.warns(spent, limit) is warns
