import json

from byokctl.services import usage
from byokctl.services.context import open_context


def _record(**kw):
    base = dict(org="acme", actor="tester", mode="platform", outcome="ok", provider="anthropic",
                model="claude-haiku-4-5-20251001", input_tokens=10, output_tokens=20,
                cost_usd=0.0001, credits_charged=1)
    base.update(kw)
    return usage.Record(**base)


def _seed(vault, records):
    ctx = open_context(str(vault))
    with ctx.store.tx() as conn:
        for r in records:
            usage.insert(conn, r)
    ctx.close()


def test_totals_grouping_and_period(cli, vault):
    cli("org", "create", "acme", "--plan", "growth")
    _seed(vault, [
        _record(ts="2026-10-31T23:59:00.000000Z"),
        _record(ts="2026-11-02T10:00:00.000000Z", mode="byok", credits_charged=0, cost_usd=0.5),
        _record(ts="2026-11-03T10:00:00.000000Z", outcome="key-rejected", input_tokens=0,
                output_tokens=0, cost_usd=0, credits_charged=0, mode="byok"),
    ])
    r = cli("usage", "show", "acme", "--by", "mode", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert {row["mode"]: row["calls"] for row in rep["rows"]} == {"byok": 2, "platform": 1}
    assert rep["totals"]["calls"] == 3 and rep["totals"]["errors"] == 1
    assert rep["totals"]["input_tokens"] == 20 and rep["totals"]["credits_charged"] == 1
    r = cli("usage", "show", "acme", "--since", "2026-11-01", "--until", "2026-11-02", "--by", "day",
            "--json")
    rows = json.loads(r.stdout)["rows"]
    assert [row["day"] for row in rows] == ["2026-11-02"]
    assert rows[0]["cost_usd"] == 0.5


def test_byok_org_is_told_billing_is_at_the_provider(cli, vault):
    cli("org", "create", "acme", "--plan", "growth")
    cli("org", "set-provider", "acme", "openai", "--yes")
    r = cli("usage", "show", "acme")
    assert r.exit_code == 0, r.output
    assert "billed by OpenAI" in r.stdout and "platform.openai.com/usage" in r.stdout
    cli("org", "create", "plat")
    assert "billed by" not in cli("usage", "show", "plat").stdout


def test_usage_reads_without_the_master_key(cli, vault, isolated):
    cli("org", "create", "acme")
    isolated.entries.clear()
    r = cli("usage", "show", "acme", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["totals"]["calls"] == 0


def test_bad_period_and_grouping(cli, vault):
    cli("org", "create", "acme")
    assert cli("usage", "show", "acme", "--since", "nope").exit_code == 2
    assert cli("usage", "show", "acme", "--since", "2026-12-01", "--until", "2026-11-01").exit_code == 2
    assert cli("usage", "show", "acme", "--by", "color").exit_code == 2


def test_a_record_writes_every_column_of_the_usage_table():
    from byokctl.store import usage as usage_store

    assert set(usage.Record.__dataclass_fields__) == set(usage_store.COLUMNS)
