"""`byokctl.Vault` (SPEC §8) through the real anthropic and openai SDKs against the emulator;
what it records is read back through the CLI (`usage show --json`, `credits show --json`)."""

from __future__ import annotations

import base64
import json

import anthropic
import openai
import pytest
from conftest import ANTHROPIC_TEST_KEY, anthropic_answer, in_threads, provision_byok

import byokctl
from byokctl import Vault
from byokctl.providers.emulator_wire import count_tokens

PROMPT = "Say hello to the BYOK world"


def setup_byok(cli, env_key: str, emulator, monkeypatch) -> dict:
    """acme (growth, 100 credits) on its own Anthropic key at the emulator; org `plat` in
    platform mode (50 credits) on the platform's OpenAI key, also at the emulator, in a vault
    opened by $BYOKCTL_MASTER_KEY. Then the environment forgets the master key: the API is
    given it as bytes (`master`); the CLI gets it back through `env`."""
    from conftest import vault_db

    assert cli("init").exit_code == 0
    made = provision_byok(cli, emulator)
    cli("org", "create", "plat", "--credits", "50")
    monkeypatch.delenv("BYOKCTL_MASTER_KEY")
    return {**made, "db": vault_db(), "master": base64.b64decode(env_key),
            "env": {"BYOKCTL_MASTER_KEY": env_key}}


@pytest.fixture
def byok(cli, env_key, emulator, monkeypatch) -> dict:
    return setup_byok(cli, env_key, emulator, monkeypatch)


@pytest.fixture
def api(byok):
    with Vault.open(byok["db"], master_key=byok["master"], actor="api-server") as v:
        yield v


def usage(cli, byok, org, by="mode"):
    r = cli("usage", "show", org, "--by", by, "--json", env=byok["env"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def balance(cli, byok, org):
    r = cli("credits", "show", org, "--json", env=byok["env"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["balance"]


def test_resolve_is_the_decision_the_cli_prints(cli, byok, api):
    d = api.resolve("acme")
    r = cli("resolve", "acme", "--json", env=byok["env"])
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert printed.pop("at")  # the CLI also says when it judged (`--at`, or now)
    assert d.to_dict() == printed
    assert d.mode == "byok" and d.key.id == byok["org_key"] and d.error is None
    assert ANTHROPIC_TEST_KEY not in repr(d) + str(d.to_dict())
    p = api.resolve("plat")
    assert p.mode == "platform" and p.provider == "openai" and p.key.id == byok["platform_key"]


@pytest.mark.parametrize("stream", [True, False])
def test_ask_a_prompt_byok(cli, byok, api, stream):
    pieces: list[str] = []
    answer = api.ask("acme", PROMPT, on_text=pieces.append if stream else None)
    assert answer.text and answer.mode == "byok" and answer.provider == "anthropic"
    assert answer.key_id == byok["org_key"] and answer.credits_charged == 0
    assert answer.input_tokens > 0 and answer.output_tokens > 0 and answer.cost_usd > 0
    assert ("".join(pieces) == answer.text) if stream else pieces == []
    assert set(answer.to_dict()) >= {"text", "mode", "provider", "model", "key_id",
                                      "fallback_reason", "input_tokens", "output_tokens",
                                      "cost_usd", "credits_charged"}
    [row] = usage(cli, byok, "acme")["rows"]
    assert row["mode"] == "byok" and row["calls"] == 1
    assert row["input_tokens"] == answer.input_tokens and row["output_tokens"] == answer.output_tokens
    assert balance(cli, byok, "acme") == 100
    sent = [q for q in byok["emulator"].requests if q.path.endswith("/v1/messages")]
    assert sent and sent[-1].stream is stream


@pytest.mark.parametrize("stream", [True, False])
def test_ask_messages_in_platform_mode_charges_credits(cli, byok, api, stream):
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": PROMPT}]
    answer = api.ask("plat", messages, stream=stream)
    assert answer.mode == "platform" and answer.provider == "openai"
    assert answer.key_id == byok["platform_key"] and answer.credits_charged == 1
    # every turn reached the provider: the emulator counts the tokens of all of them
    assert answer.input_tokens == sum(count_tokens(m["content"]) for m in messages)
    assert balance(cli, byok, "plat") == 49
    totals = usage(cli, byok, "plat")["totals"]
    assert totals["credits_charged"] == 1 and totals["calls"] == 1


def test_a_conversation_goes_to_anthropic_with_the_system_prompt_apart(byok, api):
    turns = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Yo"},
             {"role": "system", "content": "Answer in French."}, {"role": "user", "content": PROMPT}]
    answer = api.ask("acme", turns, system="Be brief.")
    texts = ["Be brief.", "Answer in French.", "Hi there", "Yo", PROMPT]
    # the system turns joined the system prompt ("\n\n" between them), the rest went as turns
    assert answer.input_tokens == count_tokens("Be brief.\n\nAnswer in French.") + sum(
        count_tokens(t) for t in texts[2:])
    assert answer.input_tokens > api.ask("acme", PROMPT).input_tokens


@pytest.mark.parametrize("bad", [[], [{"role": "assistant", "content": "x"}],
                                 [{"role": "tool", "content": "x"}], [{"role": "user"}], 42])
def test_a_malformed_conversation_is_a_usage_error_before_any_call(byok, api, bad):
    with pytest.raises(byokctl.UsageError) as info:
        api.ask("acme", bad)
    assert info.value.code == byokctl.ExitCode.USAGE
    assert not byok["emulator"].requests


@pytest.mark.parametrize(("prompt", "kwargs"), [
    ("hello \udcff", {}),  # bytes that were not UTF-8, decoded leniently (argv, a file)
    ([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\ud800"},
      {"role": "user", "content": "more"}], {}),
    (PROMPT, {"system": "be \udcff brief"}),
])
def test_text_that_is_not_utf8_is_a_usage_error_before_the_key_is_opened(cli, byok, api, prompt,
                                                                          kwargs):
    """A BYOK org without a budget estimates nothing, so nothing encodes the prompt before
    the SDK would: byokctl checks the text itself, with the request's other limits, before
    anything is resolved or decrypted, and no request reaches the provider."""
    with pytest.raises(byokctl.UsageError, match="not valid text") as info:
        api.ask("acme", prompt, **kwargs)
    assert info.value.code == byokctl.ExitCode.USAGE
    assert not byok["emulator"].requests


def test_client_and_record_anthropic(cli, byok, api):
    with api.client("acme") as call:
        assert isinstance(call.sdk, anthropic.Anthropic)
        assert call.model == "claude-haiku-5-5" or call.model.startswith("claude-")
        assert call.decision.mode == "byok" and call.key_id == byok["org_key"]
        msg = call.sdk.messages.create(model=call.model, max_tokens=64,
                                       messages=[{"role": "user", "content": PROMPT}])
        rec = call.record(msg)
    assert rec.input_tokens == msg.usage.input_tokens and rec.output_tokens == msg.usage.output_tokens
    assert rec.mode == "byok" and rec.credits_charged == 0 and rec.cost_usd > 0
    for text in (repr(call), str(rec.to_dict()), repr(rec)):
        assert ANTHROPIC_TEST_KEY not in text
    [row] = usage(cli, byok, "acme")["rows"]
    assert row["calls"] == 1 and row["input_tokens"] == msg.usage.input_tokens


def test_client_and_record_a_stream_openai_platform(cli, byok, api):
    with api.client("plat") as call:
        assert isinstance(call.sdk, openai.OpenAI)
        assert call.mode == "platform"
        last = None
        for chunk in call.sdk.chat.completions.create(
                model=call.model, max_completion_tokens=64, stream=True,
                stream_options={"include_usage": True},
                messages=[{"role": "user", "content": PROMPT}]):
            last = chunk
        rec = call.record(last)
    assert rec.credits_charged == 1 and rec.input_tokens == last.usage.prompt_tokens
    assert balance(cli, byok, "plat") == 49
    assert usage(cli, byok, "plat")["totals"]["credits_charged"] == 1


def test_client_records_an_anthropic_streams_final_message(cli, byok, api):
    with api.client("acme") as call, call.sdk.messages.stream(
            model=call.model, max_tokens=64, messages=[{"role": "user", "content": PROMPT}]) as s:
        text = "".join(s.text_stream)
        rec = call.record(s.get_final_message())
    assert text and rec.output_tokens > 0
    assert usage(cli, byok, "acme")["totals"]["output_tokens"] == rec.output_tokens


def test_leaving_the_block_without_record_records_a_failed_call_and_frees_credits(cli, byok, api):
    with api.client("plat") as call:
        pass
    with pytest.raises(ValueError), api.client("plat") as call:
        raise ValueError("the platform's own bug")
    rows = usage(cli, byok, "plat", by="mode")
    assert rows["totals"]["calls"] == 2 and rows["totals"]["credits_charged"] == 0
    from conftest import connect

    conn = connect(byok["db"])
    outcomes = [r[0] for r in conn.execute("SELECT outcome FROM usage ORDER BY id").fetchall()]
    held = conn.execute("SELECT count(*) FROM reservations").fetchone()[0]
    conn.close()
    assert outcomes == ["unrecorded", "internal"] and held == 0
    assert balance(cli, byok, "plat") == 50
    with pytest.raises(byokctl.UsageError):
        call.record(None)  # after the block: refused


def test_an_sdk_401_in_the_block_marks_the_key_invalid_and_is_byokctls_error(cli, byok, api):
    byok["emulator"].revoke_key(ANTHROPIC_TEST_KEY, "anthropic")
    with pytest.raises(byokctl.KeyRejected) as info, api.client("acme") as call:
        call.sdk.messages.create(model=call.model, max_tokens=16,
                                 messages=[{"role": "user", "content": PROMPT}])
    err = info.value
    assert err.code == byokctl.ExitCode.KEY_REJECTED and f"key rotate {byok['org_key']}" in err.fix
    assert err.__cause__ is None and err.__suppress_context__
    assert ANTHROPIC_TEST_KEY not in str(err) + repr(err)
    listed = json.loads(cli("key", "list", "acme", "--json", env=byok["env"]).stdout)
    assert {k["id"]: k["status"] for k in listed}[byok["org_key"]] == "invalid"


def test_an_sdk_429_in_the_block_marks_the_key_rate_limited(cli, byok, api):
    byok["emulator"].inject(provider="anthropic", status=429)
    with pytest.raises(byokctl.RateLimited), api.client("acme", retries=0) as call:
        call.sdk.messages.create(model=call.model, max_tokens=16,
                                 messages=[{"role": "user", "content": PROMPT}])
    listed = json.loads(cli("key", "list", "acme", "--json", env=byok["env"]).stdout)
    assert {k["id"]: k["status"] for k in listed}[byok["org_key"]] == "rate-limited"


def test_record_refuses_what_has_no_usage_and_a_second_record(byok, api):
    with api.client("acme") as call:
        with pytest.raises(byokctl.UsageError):
            call.record("just text")
        msg = call.sdk.messages.create(model=call.model, max_tokens=16,
                                       messages=[{"role": "user", "content": PROMPT}])
        call.record(msg)
        with pytest.raises(byokctl.UsageError):
            call.record(msg)


def test_errors_are_typed_and_carry_code_and_fix(cli, byok, api):
    cli("key", "remove", byok["org_key"], "--yes", env=byok["env"])
    d = api.resolve("acme")
    assert isinstance(d.error, byokctl.NoKey) and d.mode is None
    with pytest.raises(byokctl.NoKey) as info:
        api.ask("acme", PROMPT)
    assert isinstance(info.value, byokctl.ByokError) and info.value.code == 6
    assert "key add acme --provider anthropic" in info.value.fix
    cli("org", "create", "free-org", env=byok["env"])  # no credits
    with pytest.raises(byokctl.Insufficient) as info, api.client("free-org"):
        pass
    assert info.value.code == 9 and "credits add free-org" in info.value.fix
    with pytest.raises(byokctl.NotFound):
        api.resolve("nope")


def test_a_wrong_master_key_is_vault_locked_and_never_shown(byok):
    wrong = bytes(32)
    with Vault.open(byok["db"], master_key=wrong) as v:
        assert v.resolve("acme").mode == "byok"  # no secret needed
        with pytest.raises(byokctl.VaultLocked) as info:
            v.ask("acme", PROMPT)
    assert "given to byokctl.Vault.open" in str(info.value)
    with pytest.raises(byokctl.UsageError):
        Vault.open(byok["db"], master_key=b"short")


def test_the_actor_is_recorded_in_the_audit_log(cli, byok, api):
    byok["emulator"].revoke_key(ANTHROPIC_TEST_KEY, "anthropic")
    with pytest.raises(byokctl.KeyRejected):
        api.ask("acme", PROMPT)
    r = cli("audit", "log", "--action", "key.status", "--json", env=byok["env"])
    assert [e["actor"] for e in json.loads(r.stdout)] == ["api-server"]


def test_a_member_acts_with_their_own_key(cli, byok, api):
    cli("member", "add", "acme", "ivan@acme.com", "--role", "interviewer", env=byok["env"])
    personal = "sk-ant-api03-personal-" + "Q" * 30
    byok["emulator"].allow_key(personal, "anthropic")
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "ivan@acme.com",
            "--as", "ivan@acme.com", "--from-stdin", "--json", input=personal, env=byok["env"])
    mine = json.loads(r.stdout)["id"]
    assert cli("key", "approve-endpoint", mine, "--as", "ivan@acme.com",
               env=byok["env"]).exit_code == 0
    answer = api.ask("acme", PROMPT, member="Ivan@acme.com ")
    assert answer.key_id == mine
    assert usage(cli, byok, "acme", by="member")["rows"][0]["member"] == "ivan@acme.com"
    with pytest.raises(byokctl.Denied):
        api.ask("acme", PROMPT, member="stranger@x.io")


def test_a_closed_vault_refuses_calls(byok):
    v = Vault.open(byok["db"], master_key=byok["master"])
    v.close()
    with pytest.raises(byokctl.UsageError, match="closed"):
        v.resolve("acme")
    assert "closed" in repr(v)


@pytest.mark.slow  # 32 threads, real SDK calls: seconds
def test_32_threads_share_one_vault_in_platform_mode(cli, byok):
    """Credits exact, no lock error: every thread's call is charged once, none is lost."""
    r = cli("credits", "add", "plat", "1000", env=byok["env"])
    assert r.exit_code == 0, r.output
    answers = []
    with Vault.open(byok["db"], master_key=byok["master"]) as v:
        def work() -> None:
            for _ in range(2):
                answers.append(v.ask("plat", PROMPT))
            with v.client("plat") as call:
                call.record(call.sdk.chat.completions.create(
                    model=call.model, max_completion_tokens=32,
                    messages=[{"role": "user", "content": PROMPT}]))
                answers.append(call.recorded)

        assert in_threads(32, work) == []
    assert len(answers) == 96
    charged = sum(a.credits_charged for a in answers)
    assert charged >= 96
    assert balance(cli, byok, "plat") == 1050 - charged
    totals = usage(cli, byok, "plat")["totals"]
    assert totals["calls"] == 96 and totals["credits_charged"] == charged


def test_busy_timeout_bounds_the_wait_for_another_writer(byok):
    """A writer elsewhere holds the vault: with busy_timeout=0.3 the call gives up quickly
    (Conflict, exit 12), instead of holding the server's worker for the default 30 s."""
    import time

    from conftest import WriteLock

    holder = WriteLock(byok["db"])
    holder.take()
    try:
        with Vault.open(byok["db"], master_key=byok["master"], busy_timeout=0.3) as v:
            started = time.monotonic()
            with pytest.raises(byokctl.Conflict) as info:
                v.ask("plat", PROMPT)  # its reservation needs the write lock
            took = time.monotonic() - started
    finally:
        holder.release()
        holder.close()
    assert took < 3, took
    assert info.value.code == byokctl.ExitCode.CONFLICT
    assert not [q for q in byok["emulator"].requests if q.method == "POST"]  # never sent
    with pytest.raises(byokctl.UsageError):
        Vault.open(byok["db"], busy_timeout=-1)


@pytest.mark.parametrize(("kwargs", "what"), [({"timeout": 0}, "--timeout"),
                                               ({"retries": -1}, "--retries"),
                                               ({"max_tokens": 0}, "max_tokens")])
def test_client_refuses_bad_limits_before_admitting_anything(byok, api, kwargs, what):
    with pytest.raises(byokctl.UsageError, match=what), api.client("plat", **kwargs):
        pass
    from conftest import connect

    conn = connect(byok["db"])
    assert conn.execute("SELECT count(*) FROM usage").fetchone()[0] == 0
    conn.close()


@pytest.mark.sqlite_only
def test_a_call_reads_the_rows_it_rests_on_once(byok, api):
    """Before its record's transaction, a call reads its rows once, together (the org, the
    platform settings with their MAC, every key it may use): the MAC checks and the opening of
    its secret read none of them again (PostgreSQL: tests/store/test_postgres.py counts its
    round trips)."""
    with api.client("acme"):
        pass  # warm: the vault unlocked
    conn = api._context(None).store.conn
    sent: list[str] = []
    conn.set_trace_callback(sent.append)
    try:
        with api.client("acme") as call:
            before = list(sent)
            call.record(anthropic_answer(byok["emulator"], PROMPT))
    finally:
        conn.set_trace_callback(None)
    assert [s.split(" WHERE")[0] for s in before] == [
        "SELECT * FROM orgs", "SELECT key, value FROM meta", "SELECT * FROM keys"]
    assert [s.split(" SET")[0].split(" (")[0] for s in sent[len(before):]] == [
        "BEGIN IMMEDIATE", "UPDATE keys", "INSERT INTO usage", "INSERT INTO usage_daily",
        "INSERT INTO usage_daily_all", "COMMIT"]  # a plain BYOK record: nothing read first


def test_what_a_request_read_is_forgotten_at_its_first_write(byok, api):
    """The rows a decision was made from stand in for the store only until the context
    writes: a write may change them, so what comes after it reads them again."""
    from byokctl.services.context import UNSEEN
    from byokctl.services.resolution import resolve_for

    ctx = api._context(None)
    resolve_for(ctx, "acme")
    assert ctx.recall("orgs", ("acme",))["slug"] == "acme"
    assert ctx.recall("keys", (byok["org_key"],))["id"] == byok["org_key"]
    with ctx.write():
        assert ctx.recall("orgs", ("acme",)) is UNSEEN  # inside a transaction: never
    assert ctx.recall("orgs", ("acme",)) is UNSEEN  # after it: read again
    assert ctx.recall("keys", (byok["org_key"],)) is UNSEEN
