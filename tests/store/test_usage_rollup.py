"""The per-day usage totals: kept with every record, on either engine, and giving the same
answer as the records themselves."""

from __future__ import annotations

import json
import random

import pytest
from conftest import connect

from byokctl.services import usage
from byokctl.services.context import open_context

BY = ("provider", "model", "mode", "day", "org")


def records(n: int, seed: int = 7) -> list[usage.Record]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        day = f"2026-11-{rng.randint(1, 9):02d}"
        ok = rng.random() < 0.8
        out.append(usage.Record(
            org=rng.choice(["acme", "beta"]), actor="t", mode=rng.choice(["platform", "byok"]),
            outcome="ok" if ok else "provider-down", member=rng.choice([None, "bob@acme.com"]),
            provider=rng.choice(["anthropic", "openai", None]),
            model=rng.choice(["claude-sonnet-4-5", "gpt-5-mini", None]),
            input_tokens=rng.randint(0, 900), output_tokens=rng.randint(0, 900),
            cost_usd=round(rng.random() / 100, 6) if ok else 0.0,
            credits_charged=rng.randint(0, 4) if ok else 0,
            ts=f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00.000000Z"))
    return out


def as_dicts(rows) -> list[dict]:
    return [{**dict(r), "cost_usd": round(r["cost_usd"], 6)} for r in rows]


@pytest.fixture
def filled(cli, vault):
    for slug in ("acme", "beta"):
        assert cli("org", "create", slug).exit_code == 0
    ctx = open_context(str(vault))
    with ctx.store.tx():
        usage.insert_many(ctx.store, records(300))
    with ctx.store.tx():
        for r in records(40, seed=8):
            usage.insert(ctx.store, r)
    yield ctx
    ctx.close()


@pytest.mark.parametrize("by", BY)
@pytest.mark.parametrize(("org", "since", "until"), [
    (None, None, None), ("acme", None, None),
    (None, "2026-11-03T00:00:00.000000Z", "2026-11-06T23:59:59.999999Z"),
])
def test_the_daily_totals_answer_as_the_records_do(filled, by, org, since, until):
    u = filled.store.usage
    daily = u._daily_totals(by, org=org, since=since, until=until)
    assert daily and as_dicts(daily) == as_dicts(u._raw_totals(by, org=org, since=since, until=until))
    assert u.grouped_totals(by, org=org, since=since, until=until) == daily


def test_bounds_inside_a_day_and_by_member_read_the_records(cli, filled):
    r = cli("usage", "show", "--since", "2026-11-03T12:00:00Z", "--by", "provider", "--json")
    assert r.exit_code == 0, r.output
    later = [x for x in records(300) + records(40, seed=8) if x.ts >= "2026-11-03T12:00:00"]
    assert json.loads(r.stdout)["totals"]["calls"] == len(later)
    r = cli("usage", "show", "--by", "member", "--json")
    members = {row["member"] for row in json.loads(r.stdout)["rows"]}
    assert members == {"-", "bob@acme.com"}


def test_usage_show_reads_the_daily_totals_not_the_records(cli, filled, vault):
    """With the records gone and only the totals left, the report is unchanged: it never read
    the records (they stay for what the totals lack)."""
    before = json.loads(cli("usage", "show", "--by", "provider", "--json").stdout)
    with connect(vault) as conn:
        conn.execute("DELETE FROM usage")
    assert json.loads(cli("usage", "show", "--by", "provider", "--json").stdout) == before


def test_deleting_an_org_deletes_its_daily_totals(cli, filled, vault):
    assert cli("org", "delete", "beta", "--yes").exit_code == 0
    with connect(vault) as conn:
        assert {r[0] for r in conn.execute("SELECT DISTINCT org FROM usage_daily").fetchall()} == {"acme"}
    # and the totals across orgs are acme's alone now, as the records that are left say
    u = filled.store.usage
    for by in ("provider", "model", "mode", "day"):
        assert as_dicts(u._daily_totals(by, org=None, since=None, until=None)) == \
            as_dicts(u._raw_totals(by, org=None, since=None, until=None))


def test_a_vault_from_before_the_daily_totals_gets_them_from_its_records(cli, filled, vault):
    u = filled.store.usage
    want = {by: as_dicts(u._raw_totals(by, org=None, since=None, until=None)) for by in BY}
    filled.close()
    with connect(vault) as conn:  # back to schema 6: the records alone
        conn.execute("DROP TABLE usage_daily")
        conn.execute("DROP TABLE usage_daily_all")
        conn.execute("DELETE FROM schema_migrations WHERE name = 'm007_usage_daily'")
        if not isinstance(vault, str):
            conn.execute("PRAGMA user_version = 6")
    ctx = open_context(str(vault))  # migrates
    try:
        for by in BY:
            assert as_dicts(ctx.store.usage._daily_totals(by, org=None, since=None, until=None)) == want[by]
    finally:
        ctx.close()
    assert cli("audit", "verify").exit_code == 0
