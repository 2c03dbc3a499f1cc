"""Retiring models: the catalog's end-of-life dates refuse a retired model wherever one is chosen
(`org set-provider`, `platform set-default`, `apply`), warn within 30 days of it (there and in
`org show` / `resolve`), `org list --model`, `org migrate-model` and `models list`'s status.

The catalog retires claude-sonnet-4-5-20250929 (alias claude-sonnet-4-5) on 2026-11-30, with
claude-sonnet-5-5 (alias sonnet) as its successor; the clock is set around that date."""

import json
from datetime import UTC, datetime

import pytest
from conftest import ANTHROPIC_TEST_KEY, audit_rows, connect

OLD, OLD_ID, NEW_ID = "claude-sonnet-4-5", "claude-sonnet-4-5-20250929", "claude-sonnet-5-5"
EARLY = datetime(2026, 10, 1, tzinfo=UTC)  # 60 days before its end of life: no warning
SOON = datetime(2026, 11, 15, 12, tzinfo=UTC)  # 14 days and 12 hours before it
AFTER = datetime(2026, 12, 5, tzinfo=UTC)  # retired


def ok(r):
    assert r.exit_code == 0, r.output
    return r


def as_json(r):
    return json.loads(ok(r).stdout)


def org_on(cli, slug, model, provider="anthropic"):
    ok(cli("org", "create", slug, "--plan", "growth"))
    ok(cli("org", "set-provider", slug, provider, "--model", model, "--yes"))


def model_of(cli, slug="acme"):
    return as_json(cli("org", "show", slug, "--json"))["model"]


def test_set_provider_refuses_a_retired_model_naming_its_successor(cli, acme, set_now):
    set_now(AFTER)
    for name in (OLD, OLD_ID):
        r = cli("org", "set-provider", "acme", "anthropic", "--model", name, "--yes")
        assert r.exit_code == 2, r.output
        assert "retired on 2026-11-30" in r.stderr and NEW_ID in r.stderr, r.stderr
    r = cli("org", "set-provider", "acme", "anthropic", "--model", OLD, "--yes", "--json")
    assert json.loads(r.stderr)["error"]["code"] == "usage"
    assert model_of(cli) is None and audit_rows(acme, "org.set_provider") == []


def test_set_provider_warns_within_30_days_and_not_before(cli, acme, set_now):
    set_now(EARLY)
    r = ok(cli("org", "set-provider", "acme", "anthropic", "--model", OLD, "--yes", "--json"))
    assert json.loads(r.stdout)["warnings"] == [] and r.stderr == ""
    ok(cli("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--yes"))
    set_now(SOON)
    r = ok(cli("org", "set-provider", "acme", "anthropic", "--model", OLD, "--yes", "--json"))
    [warning] = json.loads(r.stdout)["warnings"]
    assert "retires on 2026-11-30 (in 14 days)" in warning and NEW_ID in warning
    assert warning in r.stderr
    assert model_of(cli) == OLD_ID


def test_an_org_kept_on_its_retired_model_can_still_change_other_settings(cli, acme, set_now):
    set_now(SOON)
    ok(cli("org", "set-provider", "acme", "anthropic", "--model", OLD, "--yes"))
    set_now(AFTER)
    r = ok(cli("org", "set-provider", "acme", "anthropic", "--fallback", "missing-key", "--yes"))
    assert "was retired on 2026-11-30" in r.stderr  # kept, not chosen: warned, not refused
    assert model_of(cli) == OLD_ID


def test_platform_set_default_refuses_retired_and_warns_retiring(cli, vault, set_now):
    set_now(AFTER)
    r = cli("platform", "set-default", "anthropic", "--model", OLD)
    assert r.exit_code == 2 and NEW_ID in r.stderr, r.output
    assert as_json(cli("platform", "show", "--json"))["configured"] is False
    set_now(SOON)
    r = ok(cli("platform", "set-default", "anthropic", "--model", OLD, "--json"))
    [warning] = json.loads(r.stdout)["warnings"]
    assert "the platform default model" in warning and "2026-11-30" in warning
    assert as_json(cli("platform", "show", "--json"))["model"] == OLD_ID


APPLY = """
[orgs.acme]
plan = "growth"
provider = "anthropic"
model = "claude-sonnet-4-5"
"""


def test_apply_refuses_a_retired_model_and_writes_nothing(cli, vault, set_now, tmp_path):
    path = tmp_path / "vault.toml"
    path.write_text(APPLY)
    set_now(AFTER)
    r = cli("apply", str(path))
    assert r.exit_code == 2 and "retired" in r.stderr and NEW_ID in r.stderr, r.output
    assert cli("org", "show", "acme").exit_code == 3  # all or nothing: not even the org
    set_now(SOON)
    r = ok(cli("apply", str(path), "--json"))
    [warning] = json.loads(r.stdout)["warnings"]
    assert "org acme's model" in warning and warning in r.stderr
    assert model_of(cli) == OLD_ID


def test_org_show_and_resolve_warn_when_the_pinned_model_retires_soon(cli, acme, set_now):
    ok(cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=ANTHROPIC_TEST_KEY))
    set_now(EARLY)
    ok(cli("org", "set-provider", "acme", "anthropic", "--model", OLD, "--yes"))
    shown = ok(cli("org", "show", "acme", "--json"))
    assert json.loads(shown.stdout)["warnings"] == [] and shown.stderr == ""
    resolved = ok(cli("resolve", "acme", "--json"))
    assert json.loads(resolved.stdout)["warnings"] == [] and resolved.stderr == ""
    # Looking ahead from today sees it coming.
    ahead = as_json(cli("org", "show", "acme", "--at", "2026-11-20", "--json"))
    assert any("retires on 2026-11-30 (in 10 days)" in w for w in ahead["warnings"])
    set_now(SOON)
    for command in (("org", "show", "acme"), ("resolve", "acme")):
        r = ok(cli(*command, "--json"))
        [warning] = json.loads(r.stdout)["warnings"]
        assert f"org acme's model anthropic/{OLD_ID} retires on 2026-11-30" in warning
        assert NEW_ID in warning and warning in r.stderr
        assert warning in ok(cli(*command)).stderr


def test_org_list_model_resolves_aliases(cli, vault, set_now):
    set_now(EARLY)
    org_on(cli, "acme", OLD)
    org_on(cli, "beta", "sonnet")
    org_on(cli, "gamma", OLD_ID)
    org_on(cli, "delta", "gpt-5-mini", provider="openai")
    ok(cli("org", "create", "plain"))  # platform mode: no model
    for name in (OLD, OLD_ID):
        listed = as_json(cli("org", "list", "--model", name, "--json"))
        assert [o["slug"] for o in listed] == ["acme", "gamma"]
    assert [o["slug"] for o in as_json(cli("org", "list", "--model", "sonnet", "--json"))] == ["beta"]
    assert [o["slug"] for o in as_json(cli("org", "list", "--model", "gpt-5-mini", "--json"))] == ["delta"]
    assert as_json(cli("org", "list", "--model", "o3", "--json")) == []
    table = ok(cli("org", "list", "--model", OLD)).stdout
    assert "acme" in table and "gamma" in table and "beta" not in table


@pytest.fixture
def on_old(cli, vault, set_now):
    """acme and gamma pinned to the retiring model, beta to another; the clock at SOON."""
    set_now(EARLY)
    org_on(cli, "acme", OLD)
    org_on(cli, "beta", "haiku")
    org_on(cli, "gamma", OLD)
    set_now(SOON)
    return vault


def test_migrate_model_dry_run_changes_nothing(cli, on_old):
    out = as_json(cli("org", "migrate-model", OLD, "sonnet", "--dry-run", "--json"))
    assert out["orgs"] == ["acme", "gamma"] and out["count"] == 2
    assert (out["from"], out["to"], out["dry_run"], out["changed"]) == (OLD_ID, NEW_ID, True, False)
    assert model_of(cli, "acme") == OLD_ID and audit_rows(on_old, "org.migrate_model") == []
    human = ok(cli("org", "migrate-model", OLD, "sonnet", "--dry-run")).stdout
    assert "Dry run: 2 orgs would move" in human and "acme, gamma" in human


def test_migrate_model_moves_every_pinned_org_with_one_audit_entry_each(cli, on_old):
    out = as_json(cli("org", "migrate-model", OLD, "sonnet", "--yes", "--json"))
    assert out["orgs"] == ["acme", "gamma"] and out["changed"] is True
    assert [model_of(cli, s) for s in ("acme", "beta", "gamma")] == [NEW_ID, "claude-haiku-5-5", NEW_ID]
    entries = audit_rows(on_old, "org.migrate_model")
    assert [e["org"] for e in entries] == ["acme", "gamma"]
    for e in entries:
        assert json.loads(e["before"])["model"] == OLD_ID
        assert json.loads(e["after"]) == {**json.loads(e["before"]), "model": NEW_ID}
        assert e["actor"] == "tester"
    again = ok(cli("org", "migrate-model", OLD, "sonnet", "--yes"))
    assert "No org is pinned to" in again.stdout
    assert as_json(cli("org", "show", "acme", "--json"))["warnings"] == []  # nothing left to warn of


def test_migrate_model_needs_confirmation_off_a_terminal(cli, on_old):
    r = cli("org", "migrate-model", OLD, "sonnet")
    assert r.exit_code == 12 and "--yes" in r.stderr, r.output
    assert model_of(cli, "acme") == OLD_ID and audit_rows(on_old, "org.migrate_model") == []


def test_migrate_model_refuses_a_retired_target_or_another_provider(cli, on_old, set_now):
    r = cli("org", "migrate-model", OLD, "gpt-5", "--yes")
    assert r.exit_code == 2 and "Model gpt-5 belongs to openai, not to anthropic" in r.stderr, r.output
    set_now(AFTER)
    r = cli("org", "migrate-model", "haiku", OLD, "--yes")
    assert r.exit_code == 2 and "retired" in r.stderr and NEW_ID in r.stderr, r.output
    assert model_of(cli, "beta") == "claude-haiku-5-5"
    r = cli("org", "migrate-model", "no-such-model", "sonnet", "--yes")
    assert r.exit_code == 0 and "No org is pinned to no-such-model" in r.stdout, r.output
    r = cli("org", "migrate-model", OLD, "no-such-model", "--yes")
    assert r.exit_code == 3, r.output


def test_migrate_model_is_the_operators_alone(cli, on_old):
    ok(cli("member", "add", "acme", "ann@acme.com", "--role", "admin"))
    r = cli("org", "migrate-model", OLD, "sonnet", "--yes", "--as", "ann@acme.com")
    assert r.exit_code == 4, r.output
    assert model_of(cli, "acme") == OLD_ID


def test_migrate_model_is_all_or_nothing(cli, on_old):
    # gamma's row is edited without the master key: its MAC no longer matches, so moving it
    # fails (exit 13) and acme, moved first in the same transaction, must be rolled back.
    conn = connect(on_old)
    try:
        assert conn.execute("UPDATE orgs SET name = ? WHERE slug = ?", ("Evil", "gamma")).rowcount == 1
        conn.commit()
    finally:
        conn.close()
    r = cli("org", "migrate-model", OLD, "sonnet", "--yes")
    assert r.exit_code == 13, r.output
    assert model_of(cli, "acme") == OLD_ID and audit_rows(on_old, "org.migrate_model") == []


def test_models_list_shows_the_status(cli, set_now):
    set_now(EARLY)
    out = as_json(cli("models", "list", "--json"))
    old = next(m for m in out["models"] if m["id"] == OLD_ID)
    assert (old["status"], old["end_of_life"], old["successor"]) == ("retiring", "2026-11-30", NEW_ID)
    assert {m["status"] for m in out["models"] if m["id"] != OLD_ID} == {"active"}
    assert out["at"] == "2026-10-01T00:00:00.000000Z"
    table = ok(cli("models", "list", "--provider", "anthropic")).stdout
    assert "retiring 2026-11-30" in table and "status" in table and "active" in table
    set_now(AFTER)
    out = as_json(cli("models", "list", "--json"))
    assert next(m for m in out["models"] if m["id"] == OLD_ID)["status"] == "retired"
    table = ok(cli("models", "list")).stdout
    assert f"retired 2026-11-30 → {NEW_ID}" in table
