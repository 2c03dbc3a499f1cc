"""Looking ahead (and back): `resolve --at`, `org show --at`, `org list --grace-ending-within`,
and `--until` taking a date or an ISO date-time."""

import json
from datetime import UTC, datetime

import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ok(r):
    assert r.exit_code == 0, r.output
    return r


@pytest.fixture
def graced(cli, vault, set_now):
    """acme: Anthropic BYOK with an org key, downgraded to starter with grace until 2026-03-15."""
    set_now(NOW)
    ok(cli("org", "create", "acme", "--plan", "growth", "--credits", "10"))
    ok(cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=ANTHROPIC_TEST_KEY))
    ok(cli("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--yes"))
    ok(cli("key", "add", "--platform", "--provider", "openai", "--from-stdin", input=OPENAI_TEST_KEY))
    ok(cli("platform", "set-default", "openai", "--model", "gpt-5-nano"))
    ok(cli("plan", "set", "acme", "starter"))
    ok(cli("plan", "grant-grace", "acme", "--until", "2026-03-15"))
    return vault


def resolved(cli, *args):
    return json.loads(ok(cli("resolve", "acme", *args, "--json")).stdout)


def test_resolve_at_a_date_after_the_grace_grant_shows_the_fallback(cli, graced):
    today = resolved(cli)
    assert today["mode"] == "byok" and today["at"] == "2026-03-01T12:00:00.000000Z"
    later = resolved(cli, "--at", "2026-03-16")
    assert later["at"] == "2026-03-16T00:00:00.000000Z"
    assert later["mode"] == "platform" and later["fallback_reason"] == "gate-lapsed"
    assert later["gate"] == {"plan": "starter", "allowed": False,
                             "grace_until": "2026-03-15T23:59:59.000000Z"}
    # The last second of the grant still holds; an ISO date-time is taken as given.
    assert resolved(cli, "--at", "2026-03-15T23:59:58Z")["mode"] == "byok"
    assert resolved(cli, "--at", "2026-03-16T01:00:00+02:00")["mode"] == "byok"  # 23:00 UTC
    r = ok(cli("resolve", "acme", "--at", "2026-03-16"))
    assert "as of:" in r.stdout and "2026-03-16 00:00 UTC" in r.stdout
    assert "gate-lapsed" in r.stdout and "platform credits" in r.stderr


def test_resolve_at_a_past_date(cli, graced, set_now):
    set_now(datetime(2026, 4, 1, tzinfo=UTC))  # the grant has ended
    assert resolved(cli)["fallback_reason"] == "gate-lapsed"
    back = resolved(cli, "--at", "2026-03-10")
    assert back["mode"] == "byok" and back["fallback_reason"] is None
    assert back["at"] == "2026-03-10T00:00:00.000000Z"


def test_org_show_at_a_date(cli, graced):
    now = json.loads(ok(cli("org", "show", "acme", "--json")).stdout)
    assert now["at"] == "2026-03-01T12:00:00.000000Z"
    assert now["effective_mode"] == "byok" and now["grace_active"] is True
    later = json.loads(ok(cli("org", "show", "acme", "--at", "2026-03-20", "--json")).stdout)
    assert later["at"] == "2026-03-20T00:00:00.000000Z"
    assert later["effective_mode"] == "platform" and later["grace_active"] is False
    assert later["fallback_reason"] == "gate-lapsed"
    assert later["provider"] == "anthropic"  # the stored setting is kept
    human = ok(cli("org", "show", "acme", "--at", "2026-03-20"))
    assert "as of:" in human.stdout and "grace grant active" not in human.output
    assert "grace grant active" in ok(cli("org", "show", "acme", "--at", "2026-03-14")).output


@pytest.mark.parametrize("command", [("resolve", "acme"), ("org", "show", "acme")])
@pytest.mark.parametrize("bad", ["31/12/2026", "2026-13-01", "tomorrow"])
def test_a_bad_at_is_a_usage_error_naming_the_format(cli, graced, command, bad):
    r = cli(*command, "--at", bad)
    assert r.exit_code == 2, r.output
    assert "YYYY-MM-DD" in r.stderr and "ISO date-time" in r.stderr and r.stdout == ""
    r = cli(*command, "--at", bad, "--json")
    assert r.exit_code == 2 and json.loads(r.stderr)["error"]["code"] == "usage"


def test_org_list_grace_ending_within(cli, vault, set_now):
    set_now(NOW)
    for slug, until in (("soon", "2026-03-10"), ("later", "2026-03-25"), ("none", None),
                        ("ended", "2026-03-05")):
        ok(cli("org", "create", slug, "--plan", "starter"))
        if until:
            ok(cli("plan", "grant-grace", slug, "--until", until))
    set_now(datetime(2026, 3, 6, tzinfo=UTC))  # `ended`'s grant is over
    listed = json.loads(ok(cli("org", "list", "--grace-ending-within", "14", "--json")).stdout)
    assert [o["slug"] for o in listed] == ["soon"]
    assert listed[0]["grace_until"] == "2026-03-10T23:59:59.000000Z"
    wide = json.loads(ok(cli("org", "list", "--grace-ending-within", "30", "--json")).stdout)
    assert [o["slug"] for o in wide] == ["later", "soon"]
    table = ok(cli("org", "list", "--grace-ending-within", "14")).stdout
    assert "grace until" in table and "2026-03-10 23:59 UTC" in table and "later" not in table
    assert "grace until" not in ok(cli("org", "list")).stdout
    for bad in ("0", "-3"):
        r = cli("org", "list", "--grace-ending-within", bad)
        assert r.exit_code == 2 and "positive" in r.stderr, r.output


def test_grant_grace_until_takes_an_iso_date_time(cli, vault, set_now):
    set_now(NOW)
    ok(cli("org", "create", "acme", "--plan", "starter"))
    out = json.loads(ok(cli("plan", "grant-grace", "acme", "--until", "2026-03-10T18:30+01:00",
                            "--json")).stdout)
    assert out["grace_until"] == "2026-03-10T17:30:00.000000Z"
    r = cli("plan", "grant-grace", "acme", "--until", "10.03.2026")
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.stderr and "ISO date-time" in r.stderr


def test_until_and_at_help_name_both_forms(cli):
    for command in (("plan", "grant-grace"), ("resolve",), ("org", "show"), ("usage", "show")):
        text = " ".join(ok(cli(*command, "--help")).stdout.split())
        assert "YYYY-MM-DD" in text and "ISO date-time" in text, command
