"""`key test`, `key add --test` and the test before `key rotate`: real SDKs against the loopback
emulator, results recorded on the key and audited, secrets never shown, and each key sent only
to the base URL configured for its own provider."""

from __future__ import annotations

import json
import secrets
import string
import subprocess
import sys
import time

import pytest
from conftest import ANTHROPIC_TEST_KEY, EMULATOR_KEYS, OPENAI_TEST_KEY, REPO, master_key_b64
from conftest import added_key as add
from conftest import listed_keys as listed

from byokctl.errors import Denied
from byokctl.providers import catalog
from byokctl.services import audit, keys, keytest
from byokctl.services.context import open_context

ALPHABET = string.ascii_letters + string.digits
NEW_SECRET = {"anthropic": lambda: "sk-ant-api03-" + rand(), "openai": lambda: "sk-proj-" + rand()}


def rand(n: int = 40) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def fragments(secret: str, size: int = 16) -> set[str]:
    return {secret[i:i + size] for i in range(len(secret) - size + 1)}


def assert_never_shown(secret: str, *texts: str) -> None:
    """Neither the secret nor any 16-character piece of it appears in any of `texts`."""
    for text in texts:
        leaked = [f for f in fragments(secret) if f in text]
        assert not leaked, f"secret fragment {leaked[0]!r} leaked"


@pytest.fixture
def org_by_provider(cli, vault, emulator) -> dict[str, str]:
    """acme on Anthropic and beta on OpenAI, each pointed at the emulator; a few members."""
    for org, provider in (("acme", "anthropic"), ("beta", "openai")):
        r = cli("org", "create", org, "--plan", "growth")
        assert r.exit_code == 0, r.output
        r = cli("org", "set-provider", org, provider, "--base-url", emulator.base_url(provider),
                "--yes")
        assert r.exit_code == 0, r.output
    for email, role in (("admin@acme.com", "admin"), ("staff@acme.com", "staffing"),
                        ("int@acme.com", "interviewer")):
        r = cli("member", "add", "acme", email, "--role", role)
        assert r.exit_code == 0, r.output
    return {"anthropic": "acme", "openai": "beta"}


def entries(action: str) -> list[audit.Entry]:
    ctx = open_context(None)
    try:
        return audit.log(ctx, action=action)
    finally:
        ctx.close()


def audit_text() -> str:
    """Every audit row as stored, for leak checks."""
    ctx = open_context(None)
    try:
        return "\n".join(str(tuple(r)) for r in ctx.store.all("SELECT * FROM audit"))
    finally:
        ctx.close()


def reveal(key_id: str) -> str:
    ctx = open_context(None)
    try:
        return keys.reveal(ctx, key_id)
    finally:
        ctx.close()


def model_calls(emulator) -> list:
    return [r for r in emulator.requests if r.endpoint == "models"]


# ---- key test ------------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_ok_records_the_result_and_audits_it(cli, org_by_provider, emulator, provider):
    org, secret = org_by_provider[provider], EMULATOR_KEYS[provider]
    k = add(cli, org, "--provider", provider, secret=secret)
    assert k["last_tested_at"] is None

    r = cli("key", "test", k["id"], "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["test_result"] == "ok" and got["models"] > 0
    assert isinstance(got["latency_ms"], int) and got["latency_ms"] >= 0
    for field in ("id", "scope", "org", "member", "provider", "hint", "fingerprint", "version",
                  "status"):
        assert got[field] == k[field] or field == "status"
    assert got["status"] == "active" and got["last_tested_at"] is not None
    assert got["base_url"] == emulator.base_url(provider)
    [call] = model_calls(emulator)
    assert (call.provider, call.key_hint, call.status) == (provider, secret[-4:], 200)

    r = cli("key", "test", k["id"])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"Key {k['id']} ({provider}, {k['hint']}): ok — "
                               f"{got['models']} models visible at ")
    [row] = listed(cli, org)
    assert (row["status"], row["test_result"]) == ("active", "ok")
    assert row["last_tested_at"] is not None

    tests = entries("key.test")
    assert len(tests) == 2 and {e.target for e in tests} == {k["id"]}
    assert tests[0].org == org and tests[0].actor == "tester"
    assert tests[0].after["test_result"] == "ok" and tests[0].after["status"] == "active"
    assert tests[0].after["fingerprint"] == k["fingerprint"]
    assert_never_shown(secret, r.stdout, r.stderr, audit_text())


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_revoked_key_is_rejected_marked_invalid_then_active_after_a_good_test(
        cli, org_by_provider, emulator, provider):
    org, secret = org_by_provider[provider], EMULATOR_KEYS[provider]
    k = add(cli, org, "--provider", provider, secret=secret)
    emulator.revoke_key(secret, provider)

    r = cli("key", "test", k["id"])
    assert r.exit_code == 7, r.output
    assert r.stdout == ""
    assert r.stderr.startswith("error: ") and "rejected the API key" in r.stderr
    assert f"byokctl key rotate {k['id']}" in r.stderr
    assert model_calls(emulator)[-1].status == 401  # the emulator's 401 echoes the key...
    r_json = cli("key", "test", k["id"], "--json")
    assert r_json.exit_code == 7, r_json.output
    assert json.loads(r_json.stderr)["error"]["code"] == "key-rejected"
    assert_never_shown(secret, r.stdout, r.stderr, r_json.stdout, r_json.stderr,
                       audit_text())  # ...and nothing of it reaches the user or the audit log

    [row] = listed(cli, org)
    assert (row["status"], row["test_result"]) == ("invalid", "rejected")
    human = cli("key", "list", org, env={"COLUMNS": "250"})
    assert "invalid (rejected)" in human.stdout
    assert [e.after["test_result"] for e in entries("key.test")] == ["rejected", "rejected"]

    emulator.allow_key(secret, provider)
    r = cli("key", "test", k["id"])
    assert r.exit_code == 0, r.output
    [row] = listed(cli, org)
    assert (row["status"], row["test_result"]) == ("active", "ok")
    latest = entries("key.test")[0]
    assert latest.before["status"] == "invalid" and latest.after["status"] == "active"


def test_rate_limited_is_exit_8_and_recorded(cli, org_by_provider, emulator):
    k = add(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    emulator.inject(provider="anthropic", status=429)
    r = cli("key", "test", k["id"], "--retries", "0")
    assert r.exit_code == 8, r.output
    assert "rate-limited" in r.stderr and r.stdout == ""
    [row] = listed(cli, "acme")
    assert (row["status"], row["test_result"]) == ("rate-limited", "rate-limited")
    [entry] = entries("key.test")
    assert entry.after["status"] == "rate-limited"
    assert len(model_calls(emulator)) == 1  # --retries 0: one attempt only


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_unreachable_is_exit_11_quickly_and_leaves_the_status_alone(cli, org_by_provider, emulator):
    k = add(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    emulator.inject(provider="anthropic", stall=30)
    started = time.monotonic()
    r = cli("key", "test", k["id"], "--timeout", "1", "--retries", "0")
    assert r.exit_code == 11, r.output
    assert time.monotonic() - started < 5
    assert "did not answer within 1 s" in r.stderr
    [row] = listed(cli, "acme")
    assert (row["status"], row["test_result"]) == ("active", "unreachable")  # not marked invalid
    assert row["last_tested_at"] is not None
    [entry] = entries("key.test")
    assert entry.after == {**entry.after, "status": "active", "test_result": "unreachable"}

    # A key already marked invalid stays invalid: an unreachable provider judged nothing.
    emulator.clear_faults()
    emulator.revoke_key(ANTHROPIC_TEST_KEY, "anthropic")
    assert cli("key", "test", k["id"]).exit_code == 7
    emulator.inject(provider="anthropic", stall=30)
    r = cli("key", "test", k["id"], "--timeout", "1", "--retries", "0")
    assert r.exit_code == 11, r.output
    assert listed(cli, "acme")[0]["status"] == "invalid"


def test_bad_limits_unknown_key_and_no_call(cli, org_by_provider, emulator):
    k = add(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    for args, says in ((("--timeout", "0"), "--timeout"), (("--retries", "-1"), "--retries")):
        r = cli("key", "test", k["id"], *args)
        assert r.exit_code == 2, r.output
        assert says in r.stderr
    r = cli("key", "test", "key_nothere12")
    assert r.exit_code == 3 and "byokctl key list" in r.stderr
    assert model_calls(emulator) == [] and entries("key.test") == []


# ---- permissions ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("actor", "org_key", "own_key", "platform_key"), [
    ("admin@acme.com", 0, 0, 4),       # org:manage: org keys and members' keys
    ("staff@acme.com", 4, 0, 4),       # org:view is not enough to spend the org's key
    ("int@acme.com", 4, 0, 4),         # key:own: one's own key only
    ("stranger@else.com", 3, 3, 4),    # another org's key ids are not even acknowledged
])
def test_who_may_test_what(cli, org_by_provider, emulator, actor, org_key, own_key, platform_key):
    org = add(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    owner = actor if actor.endswith("@acme.com") else "int@acme.com"
    own = add(cli, "acme", "--provider", "anthropic", "--member", owner,
              secret=ANTHROPIC_TEST_KEY)
    platform = add(cli, "--platform", "--provider", "openai", secret=OPENAI_TEST_KEY)
    # The operator set acme's base_url: the personal key goes there once approved (SPEC §1).
    assert cli("key", "approve-endpoint", own["id"]).exit_code == 0
    for key, code in ((org, org_key), (own, own_key), (platform, platform_key)):
        r = cli("key", "test", key["id"], "--as", actor)
        assert r.exit_code == code, (key["scope"], r.output)
    allowed = [c for c in (org_key, own_key) if c == 0]
    assert len(model_calls(emulator)) == len(allowed)  # a refusal makes no call
    assert len(entries("key.test")) == len(allowed)


def test_operator_tests_a_platform_key_at_the_platform_base_url(cli, org_by_provider, emulator):
    k = add(cli, "--platform", "--provider", "openai", secret=OPENAI_TEST_KEY)
    r = cli("platform", "set-default", "openai", "--model", "gpt-5-mini", "--base-url",
            emulator.openai_base_url)
    assert r.exit_code == 0, r.output
    r = cli("key", "test", k["id"], "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["base_url"] == emulator.openai_base_url
    [entry] = entries("key.test")
    assert entry.org is None and entry.target == k["id"]


# ---- which base URL a key is sent to -------------------------------------------------------------

def test_base_url_follows_the_provider_the_url_was_set_for(cli, org_by_provider, emulator):
    ant, oai = emulator.anthropic_base_url, emulator.openai_base_url
    r = cli("org", "create", "gamma", "--plan", "growth")  # platform mode, no base_url
    assert r.exit_code == 0, r.output
    ctx = open_context(None)
    try:
        def url(scope: str, org: str | None, provider: str, member: str | None = None):
            return keytest.base_url_for(ctx, keys.Slot(scope, org, member, provider))

        assert url("org", "acme", "anthropic") == ant
        with pytest.raises(Denied):  # the operator set it, int@acme.com never approved it
            url("member", "acme", "anthropic", "int@acme.com")
        assert url("org", "acme", "openai") is None  # acme's URL is Anthropic's
        assert url("member", "acme", "openai", "int@acme.com") is None
        assert url("org", "beta", "openai") == oai
        assert url("org", "beta", "anthropic") is None
        assert url("org", "gamma", "anthropic") is None
        assert url("platform", None, "anthropic") is None  # nothing configured yet
    finally:
        ctx.close()
    r = cli("platform", "set-default", "anthropic", "--model", "haiku", "--base-url", ant)
    assert r.exit_code == 0, r.output
    ctx = open_context(None)
    try:
        assert keytest.base_url_for(ctx, keys.Slot("platform", None, None, "anthropic")) == ant
        assert keytest.base_url_for(ctx, keys.Slot("platform", None, None, "openai")) is None
    finally:
        ctx.close()


def test_a_key_never_goes_to_another_providers_base_url(cli, org_by_provider, emulator, monkeypatch):
    """beta's base URL is the (OpenAI) emulator: beta's Anthropic key goes to Anthropic's own
    API instead (here a closed port standing in for it), and the emulator sees nothing."""
    monkeypatch.setitem(catalog.load().info["anthropic"], "default_base_url",
                        "http://127.0.0.1:9")
    k = add(cli, "beta", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    r = cli("key", "test", k["id"], "--retries", "0", "--timeout", "5")
    assert r.exit_code == 11, r.output
    assert "127.0.0.1:9" in r.stderr
    assert emulator.requests == []
    assert listed(cli, "beta")[0]["test_result"] == "unreachable"


# ---- key add --test ------------------------------------------------------------------------------

@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_add_with_test_stores_a_good_key_as_tested(cli, org_by_provider, emulator, provider):
    org = org_by_provider[provider]
    r = cli("key", "add", org, "--provider", provider, "--test", "--from-stdin", "--json",
            input=EMULATOR_KEYS[provider])
    assert r.exit_code == 0, r.output
    k = json.loads(r.stdout)
    assert (k["status"], k["test_result"]) == ("active", "ok")
    assert k["last_tested_at"] is not None
    assert len(model_calls(emulator)) == 1
    [entry] = entries("key.add")
    assert entry.after["test_result"] == "ok"
    r = cli("key", "remove", k["id"], "--yes")
    assert r.exit_code == 0, r.output
    r = cli("key", "add", org, "--provider", provider, "--test", "--from-stdin",
            input=EMULATOR_KEYS[provider])
    assert r.exit_code == 0, r.output
    assert "; tested: " in r.stdout and "models visible" in r.stdout


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_add_with_test_stores_nothing_when_the_test_fails(cli, org_by_provider, emulator):
    bad = NEW_SECRET["anthropic"]()
    r = cli("key", "add", "acme", "--provider", "anthropic", "--test", "--from-stdin", input=bad)
    assert r.exit_code == 7, r.output
    assert "the key was not stored" in r.stderr
    assert model_calls(emulator)[-1].status == 401
    r_json = cli("key", "add", "acme", "--provider", "anthropic", "--test", "--from-stdin",
                 "--json", input=bad)
    assert r_json.exit_code == 7, r_json.output
    assert json.loads(r_json.stderr)["error"]["code"] == "key-rejected"
    assert_never_shown(bad, r.stdout, r.stderr, r_json.stdout, r_json.stderr, audit_text())

    emulator.inject(provider="anthropic", stall=30)
    r = cli("key", "add", "acme", "--provider", "anthropic", "--test", "--timeout", "1",
            "--retries", "0", "--from-stdin", input=ANTHROPIC_TEST_KEY)
    assert r.exit_code == 11, r.output
    assert "the key was not stored" in r.stderr and "add it without --test" in r.stderr
    assert listed(cli) == []
    assert entries("key.add") == [] and entries("key.test") == []


def test_add_without_test_makes_no_call(cli, org_by_provider, emulator):
    k = add(cli, "acme", "--provider", "anthropic", secret=NEW_SECRET["anthropic"]())
    assert k["test_result"] is None and emulator.requests == []


# ---- key rotate ----------------------------------------------------------------------------------

def test_rotate_tests_the_new_secret_first(cli, org_by_provider, emulator):
    old = ANTHROPIC_TEST_KEY
    k = add(cli, "acme", "--provider", "anthropic", secret=old)

    bad = NEW_SECRET["anthropic"]()
    r = cli("key", "rotate", k["id"], "--from-stdin", input=bad)
    assert r.exit_code == 7, r.output
    assert f"{k['id']} keeps its current secret" in r.stderr
    assert model_calls(emulator)[-1].key_hint == bad[-4:]  # the NEW secret was tried
    assert reveal(k["id"]) == old
    [row] = listed(cli, "acme")
    assert (row["version"], row["status"], row["hint"]) == (1, "active", k["hint"])
    assert entries("key.rotate") == []
    assert_never_shown(bad, r.stdout, r.stderr, audit_text())

    emulator.inject(provider="anthropic", status=429)
    r = cli("key", "rotate", k["id"], "--from-stdin", "--retries", "0", input=bad)
    assert r.exit_code == 8, r.output
    assert "rotate with --no-test" in r.stderr and reveal(k["id"]) == old
    emulator.clear_faults()

    good = NEW_SECRET["anthropic"]()
    emulator.allow_key(good, "anthropic")
    r = cli("key", "rotate", k["id"], "--from-stdin", "--json", input=good)
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["tested"] is True and done["version"] == 2 and done["test_result"] == "ok"
    assert done["last_tested_at"] is not None
    assert reveal(k["id"]) == good
    assert model_calls(emulator)[-1].key_hint == good[-4:]


def test_rotate_no_test_makes_no_call(cli, org_by_provider, emulator):
    k = add(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    assert cli("key", "test", k["id"]).exit_code == 0
    seen = len(emulator.requests)
    new = NEW_SECRET["anthropic"]()  # unknown to the emulator: a test would reject it
    r = cli("key", "rotate", k["id"], "--no-test", "--from-stdin", "--json", input=new)
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["tested"] is False and done["test_result"] is None  # the old result was
    assert len(emulator.requests) == seen                            # about the old secret
    assert reveal(k["id"]) == new
    r = cli("key", "rotate", k["id"], "--no-test", "--from-stdin", input=NEW_SECRET["anthropic"]())
    assert r.exit_code == 0 and "(untested)" in r.stdout
    assert len(emulator.requests) == seen


# ---- start-up stays light ------------------------------------------------------------------------

HEAVY = ("anthropic", "openai", "httpx")


def _heavy_after(*args: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Run byokctl in a fresh process; which SDK modules were imported by the end."""
    code = ("import sys\n"
            "from byokctl.cli import app\n"
            f"rc = app({list(args)!r}, standalone_mode=False)\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    line = next(x for x in p.stderr.splitlines() if x.startswith("HEAVY "))
    return eval(line[len("HEAVY "):]), p  # noqa: S307 - our own printed list


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_key_list_and_help_import_no_sdk_but_key_test_does(cli, emulator, monkeypatch):
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())  # the subprocess needs it
    assert cli("init").exit_code == 0
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    assert cli("org", "set-provider", "acme", "anthropic", "--base-url",
               emulator.anthropic_base_url, "--yes").exit_code == 0
    k = add(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    for args in (["key", "list"], ["key", "list", "--json"], ["key", "--help"],
                 ["key", "test", "--help"]):
        heavy, p = _heavy_after(*args)
        assert heavy == [], (args, p.stderr)
    heavy, p = _heavy_after("key", "test", k["id"])  # the check can see an SDK import
    assert "anthropic" in heavy and "openai" not in heavy, p.stderr
    assert f"Key {k['id']} (anthropic" in p.stdout
