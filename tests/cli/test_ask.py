"""`resolve` and `ask` end to end: the CLI, the real anthropic and openai SDKs, the emulator."""

import json
import time

import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, WriteLock, add_key, all_rows, provision_byok

from byokctl.errors import ExitCode
from byokctl.services import keys as keys_service
from byokctl.services.context import open_context

PROMPT = "Say hello to the BYOK world"


@pytest.fixture
def byok(cli, vault, emulator):
    """acme on growth, its own Anthropic key at the emulator; a platform OpenAI key too."""
    return provision_byok(cli, emulator)


def usage_rows(vault):
    ctx = open_context(str(vault))
    rows = [dict(r) for r in ctx.store.all("SELECT * FROM usage ORDER BY id")]
    ctx.close()
    return rows


def balance(cli, org="acme"):
    return json.loads(cli("credits", "show", org, "--json").stdout)["balance"]


@pytest.mark.parametrize("stream", [True, False])
def test_byok_anthropic(cli, vault, byok, stream):
    args = ["ask", "acme", PROMPT] + ([] if stream else ["--no-stream"])
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip(), "the answer is printed"
    assert "byok" in r.stderr and byok["org_key"] in r.stderr
    [u] = usage_rows(vault)
    assert u["mode"] == "byok" and u["provider"] == "anthropic" and u["outcome"] == "ok"
    assert u["credits_charged"] == 0 and u["input_tokens"] > 0 and u["output_tokens"] > 0
    assert u["key_id"] == byok["org_key"] and u["fingerprint"].startswith("fp_")
    assert balance(cli) == 100  # BYOK never spends credits
    paths = [q.path for q in byok["emulator"].requests]
    assert any(p.endswith("/v1/messages") for p in paths)


@pytest.mark.parametrize("stream", [True, False])
def test_byok_openai_json(cli, vault, byok, stream):
    add_key(cli, "acme", "--provider", "openai", secret=OPENAI_TEST_KEY)
    cli("org", "set-provider", "acme", "openai", "--model", "gpt-5-mini", "--base-url",
        byok["emulator"].openai_base_url, "--yes")
    r = cli("ask", "acme", PROMPT, "--json", *([] if stream else ["--no-stream"]))
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)
    for f in ("text", "mode", "provider", "model", "key_id", "fallback_reason", "input_tokens",
              "output_tokens", "cost_usd", "credits_charged"):
        assert f in a
    assert a["mode"] == "byok" and a["provider"] == "openai" and a["model"] == "gpt-5-mini-2025-08-07"
    assert a["text"] and a["credits_charged"] == 0 and a["cost_usd"] > 0


def test_platform_mode_charges_credits(cli, vault, byok):
    cli("org", "create", "plat", "--credits", "5")
    r = cli("ask", "plat", PROMPT, "--json")
    assert r.exit_code == 0, r.output
    a = json.loads(r.stdout)
    assert a["mode"] == "platform" and a["provider"] == "openai" and a["key_id"] == byok["platform_key"]
    assert a["credits_charged"] == 1  # max(1, ceil(tiny cost / $0.01))
    assert balance(cli, "plat") == 4


def test_soft_fallback_after_downgrade(cli, vault, byok):
    cli("plan", "set", "acme", "starter")
    r = cli("resolve", "acme", "--json")
    d = json.loads(r.stdout)
    assert r.exit_code == 0 and d["mode"] == "platform" and d["fallback_reason"] == "gate-lapsed"
    assert d["gate"] == {"plan": "starter", "allowed": False, "grace_until": None}
    r = cli("ask", "acme", PROMPT, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["fallback_reason"] == "gate-lapsed"
    assert "platform credits" in r.stderr  # the warning
    assert balance(cli) == 99
    assert json.loads(cli("org", "show", "acme", "--json").stdout)["provider"] == "anthropic"
    cli("plan", "grant-grace", "acme", "--days", "3")
    assert json.loads(cli("resolve", "acme", "--json").stdout)["mode"] == "byok"


def test_member_key_wins_over_org_key(cli, vault, byok):
    cli("member", "add", "acme", "ivan@acme.com", "--role", "interviewer")
    personal = "sk-ant-api03-personal-" + "Q" * 30
    byok["emulator"].allow_key(personal, "anthropic")
    mine = add_key(cli, "acme", "--provider", "anthropic", "--member", "ivan@acme.com",
                   "--as", "ivan@acme.com", secret=personal)
    # acme's base_url (the emulator) was set by the operator: ivan approves it for his key.
    r = cli("key", "approve-endpoint", mine, "--as", "ivan@acme.com")
    assert r.exit_code == 0, r.output
    d = json.loads(cli("resolve", "acme", "--as", "ivan@acme.com", "--json").stdout)
    assert d["key_id"] == mine and d["key_scope"] == "member"
    r = cli("ask", "acme", PROMPT, "--as", "ivan@acme.com", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key_id"] == mine
    assert usage_rows(vault)[-1]["member"] == "ivan@acme.com"
    assert json.loads(cli("resolve", "acme", "--json").stdout)["key_id"] == byok["org_key"]


def test_no_key_is_exit_6_and_recorded(cli, vault, byok):
    cli("key", "remove", byok["org_key"], "--yes")
    r = cli("resolve", "acme", "--json")
    assert r.exit_code == ExitCode.NO_KEY and json.loads(r.stdout)["mode"] is None
    r = cli("ask", "acme", PROMPT)
    assert r.exit_code == ExitCode.NO_KEY
    assert "key add acme --provider anthropic" in r.stderr
    assert usage_rows(vault)[-1]["outcome"] == "no-key"
    cli("org", "set-provider", "acme", "anthropic", "--fallback", "missing-key", "--yes")
    r = cli("ask", "acme", PROMPT, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["fallback_reason"] == "no-key"


def test_rejected_key_is_marked_invalid_and_never_printed(cli, vault, byok):
    byok["emulator"].revoke_key(ANTHROPIC_TEST_KEY, "anthropic")
    for args in (["--no-stream"], [], ["--json"]):
        r = cli("ask", "acme", PROMPT, *args)
        assert r.exit_code == ExitCode.KEY_REJECTED, r.output
        assert f"key rotate {byok['org_key']}" in r.stderr  # the fix, for this very key
        assert ANTHROPIC_TEST_KEY not in r.output
        assert not any(ANTHROPIC_TEST_KEY[i:i + 16] in r.output for i in range(len(ANTHROPIC_TEST_KEY) - 15))
    listed = json.loads(cli("key", "list", "acme", "--json").stdout)
    assert {k["id"]: k["status"] for k in listed}[byok["org_key"]] == "invalid"
    assert usage_rows(vault)[-1]["outcome"] == "key-rejected"
    # only the provider-error policy moves the org onto the platform's account
    cli("org", "set-provider", "acme", "anthropic", "--fallback", "provider-error", "--yes")
    r = cli("ask", "acme", PROMPT, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["fallback_reason"] == "provider-error"
    assert json.loads(r.stdout)["mode"] == "platform"


def test_rate_limited_is_exit_8_without_fallback(cli, vault, byok):
    byok["emulator"].inject(provider="anthropic", status=429)
    r = cli("ask", "acme", PROMPT, "--retries", "0")
    assert r.exit_code == ExitCode.RATE_LIMITED, r.output
    listed = json.loads(cli("key", "list", "acme", "--json").stdout)
    assert {k["id"]: k["status"] for k in listed}[byok["org_key"]] == "rate-limited"
    assert balance(cli) == 100


def test_server_errors_never_fall_back(cli, vault, byok):
    cli("org", "set-provider", "acme", "anthropic", "--fallback", "provider-error", "--yes")
    byok["emulator"].inject(provider="anthropic", status=500)
    r = cli("ask", "acme", PROMPT, "--retries", "0", "--json")
    assert r.exit_code == ExitCode.PROVIDER_DOWN, r.output
    assert json.loads(r.stderr)["error"]["code"] == "provider-down"
    assert usage_rows(vault)[-1]["mode"] == "byok"


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_stall_is_cut_off_by_timeout(cli, vault, byok):
    byok["emulator"].inject(provider="anthropic", stall=30)
    started = time.monotonic()
    r = cli("ask", "acme", PROMPT, "--timeout", "1", "--retries", "0", "--no-stream")
    assert r.exit_code == ExitCode.PROVIDER_DOWN, r.output
    assert time.monotonic() - started < 6


def test_insufficient_credits_and_budget(cli, vault, byok):
    cli("org", "create", "broke")
    r = cli("ask", "broke", PROMPT)
    assert r.exit_code == ExitCode.INSUFFICIENT and "credits add broke" in r.stderr
    cli("org", "set-budget", "acme", "--monthly-usd", "0.000001")
    assert cli("ask", "acme", PROMPT).exit_code == 0  # under budget: one call may overshoot
    r = cli("ask", "acme", PROMPT)
    assert r.exit_code == ExitCode.INSUFFICIENT and "budget" in r.stderr


def test_prompt_from_stdin_and_marker_never_stored(cli, vault, byok, home):
    marker = "ZEBRA-MARKER-7731-do-not-store"
    r = cli("ask", "acme", "-", "--no-stream", input=f"Remember {marker}")
    assert r.exit_code == 0, r.output
    for f in home.iterdir() if home.exists() else ():  # no vault file on PostgreSQL
        if f.is_file():
            assert marker.encode() not in f.read_bytes(), f.name
    assert marker not in "".join(map(repr, all_rows(vault)))


def test_key_last_used_recorded(cli, vault, byok):
    cli("ask", "acme", PROMPT)
    ctx = open_context(str(vault))
    assert keys_service.get(ctx, byok["org_key"]).last_used_at
    ctx.close()


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_an_answered_call_waits_for_a_busy_vault_to_be_recorded(cli, vault, byok, monkeypatch):
    """The provider has answered (tokens spent) when the vault turns out to be locked by
    another writer past the busy timeout: ask keeps waiting, then records and charges it."""
    import threading

    from byokctl import store

    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 200)
    cli("org", "set-provider", "acme", "platform", "--yes")  # platform mode: credits charged
    holder = WriteLock(vault)
    release = threading.Timer(1.0, holder.release)

    def hold(_request) -> None:  # the call is admitted and at the provider: now lock the vault
        holder.take()  # readers go on; writers wait
        release.start()

    byok["emulator"].on_request = hold
    try:
        r = cli("ask", "acme", PROMPT, "--no-stream", "--json")
    finally:
        release.join()
        holder.close()
    assert r.exit_code == 0, r.output
    assert "still waiting to record this call" in r.stderr
    [u] = usage_rows(vault)
    assert u["outcome"] == "ok" and u["mode"] == "platform" and u["credits_charged"] >= 1
    assert balance(cli) == 100 - u["credits_charged"]


def test_an_answered_call_gives_up_after_the_attempts(cli, vault, byok, monkeypatch):
    from byokctl import store
    from byokctl.services import calls as ask_service

    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(ask_service, "RECORD_ATTEMPTS", 3)
    holder = WriteLock(vault)
    byok["emulator"].on_request = holder.take
    try:
        r = cli("ask", "acme", PROMPT, "--no-stream")
    finally:
        holder.release()
        holder.close()
    assert r.exit_code == 12, r.output
    assert r.stderr.count("still waiting to record this call") == 2
    assert "is busy" in r.stderr
    assert usage_rows(vault) == []


def test_an_answer_is_recorded_after_the_database_dropped_the_connection(cli, vault, byok):
    """On a PostgreSQL vault the server ends byokctl's session while the provider answers
    (no transaction is open then): the usage record and charge go through on a new one."""
    if not isinstance(vault, str):
        pytest.skip("a vault file has no connection to drop (run with --engine postgresql)")
    import psycopg

    def drop(_request) -> None:
        with psycopg.connect(vault, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'byokctl' AND pid != pg_backend_pid()")

    byok["emulator"].on_request = drop
    r = cli("ask", "acme", PROMPT, "--no-stream")
    assert r.exit_code == 0, r.output
    assert usage_rows(vault)[-1]["outcome"] == "ok"
