"""Provider faults through the CLI: `ask` and `key test` against the emulator, for both
providers, streaming and not, under every fallback policy. Each fault must end in the right exit
code within the configured --timeout/--retries, with one clean line on stderr, one usage record
per call saying what happened, the key's status updated as SPEC §3 step 4 says, and credits
spent only when a platform call succeeded. The only fallback is SPEC §3's: `provider-error`
retries once on platform mode after a 401/403/429, never after a 5xx, a network failure or a
malformed answer.

The adapter-level mapping (every status, redaction, retry counting) is in providers/test_providers.py;
this is the same ground seen from the command line, with the vault's bookkeeping.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import EMULATOR_KEYS, master_key_b64, run

from byokctl.errors import ExitCode

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out

PROVIDERS = ("anthropic", "openai")
MODELS = {"anthropic": "haiku", "openai": "gpt-5-nano"}
POLICIES = ("never", "missing-key", "provider-error")
PROMPT = "Tell me about faults"
# The platform's own key is on the same provider as the org's (the harder case: a fault keyed
# to the org's secret must not touch it, and a 5xx must not move the org onto it anyway).
PLATFORM_KEYS = {"anthropic": "sk-ant-api03-platform-" + "P1a2T3f4" * 4,
                 "openai": "sk-proj-platform-" + "P1a2T3f4" * 4}
CREDITS = 50


@dataclass(frozen=True)
class Fault:
    """One row of the table: what the emulator does to the org key's requests, the options
    `ask` runs with, and what must follow."""

    name: str
    inject: dict
    code: ExitCode
    status_after: str          # the org key's status afterwards ("active": unchanged)
    retries: int = 0
    timeout: float = 5.0
    attempts: dict = field(default_factory=lambda: {True: 1, False: 1})  # by stream
    min_seconds: float = 0.0   # wall-time floor (retry-after, stalls)
    max_seconds: float = 4.0   # wall-time ceiling, generous for a loaded CI box
    falls_back: bool = False   # a refusal that `provider-error` may retry on platform
    mid_stream: bool = False   # a stream shows its first piece of text before the fault

    def __str__(self) -> str:
        return self.name


FAULTS = [
    # A rejected key is never retried, whatever --retries says.
    Fault("401", {"status": 401}, ExitCode.KEY_REJECTED, "invalid", retries=2, falls_back=True),
    Fault("403", {"status": 403}, ExitCode.KEY_REJECTED, "invalid", retries=2, falls_back=True),
    # 429 without retry-after: --retries 0 fails fast on the first answer.
    Fault("429", {"status": 429}, ExitCode.RATE_LIMITED, "rate-limited", retries=0,
          max_seconds=3, falls_back=True),
    # 429 with a short retry-after: honoured once (--retries 1), then given up.
    Fault("429-retry-after", {"status": 429, "retry_after": 0.2}, ExitCode.RATE_LIMITED,
          "rate-limited", retries=1, attempts={True: 2, False: 2}, min_seconds=0.2,
          falls_back=True),
    Fault("500", {"status": 500}, ExitCode.PROVIDER_DOWN, "active", retries=0),
    # 529 (overloaded, with a retry-after as Anthropic sends it) and --retries 1: retried once,
    # then exit 11. (The backoff without retry-after is timed in the stall test below.)
    Fault("529", {"status": 529, "retry_after": 0.1}, ExitCode.PROVIDER_DOWN, "active",
          retries=1, attempts={True: 2, False: 2}, min_seconds=0.1),
    # Not JSON for the API: never retried (a retry would not make it the API).
    Fault("malformed", {"malformed": True}, ExitCode.PROVIDER_DOWN, "active", retries=2,
          mid_stream=True),
    # Reset after the first piece of text: a stream already showed text, so no retry; a whole
    # answer cut in half is retried once (and cut again).
    Fault("reset", {"reset_mid_stream": True}, ExitCode.PROVIDER_DOWN, "active", retries=1,
          attempts={True: 1, False: 2}, mid_stream=True),
    # A stall past --timeout: cut off at the timeout, not at the stall.
    Fault("stall", {"stall": 30}, ExitCode.PROVIDER_DOWN, "active", retries=0, timeout=0.3,
          min_seconds=0.3, max_seconds=3),
]


# ---- the vault and its bookkeeping -------------------------------------------------------------

@dataclass
class Setup:
    provider: str
    org_key: str
    platform_key: str
    db: Path


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, tuple[Path, str, str, str]]:
    """Per provider, a vault built once: acme (growth, BYOK on that provider, CREDITS credits)
    with an org key; the platform on the same provider with its own key. Each test copies it."""
    built = {}
    for provider in PROVIDERS:
        db = tmp_path_factory.mktemp(f"faults-{provider}") / "vault.db"
        env = {"BYOKCTL_DB": str(db), "BYOKCTL_MASTER_KEY": master_key_b64(),
               "BYOKCTL_ACTOR": "tester"}

        def ok(*args: str, input: str | None = None, env: dict = env) -> str:
            r = run(*args, input=input, env=env)
            assert r.exit_code == 0, r.output
            return r.stdout

        ok("init")
        ok("org", "create", "acme", "--plan", "growth", "--credits", str(CREDITS))
        org_key = json.loads(ok("key", "add", "acme", "--provider", provider, "--from-stdin",
                                "--json", input=EMULATOR_KEYS[provider]))["id"]
        platform_key = json.loads(ok("key", "add", "--platform", "--provider", provider,
                                     "--from-stdin", "--json", input=PLATFORM_KEYS[provider]))["id"]
        built[provider] = (db, env["BYOKCTL_MASTER_KEY"], org_key, platform_key)
    return built


@pytest.fixture
def build(cli, templates, tmp_path, monkeypatch, emulator):
    """`build(provider, policy)`: a copy of the provider's template vault, with acme's provider
    setting (fallback `policy`) and the platform default both pointed at this test's emulator."""

    def make(provider: str, policy: str) -> Setup:
        template, master, org_key, platform_key = templates[provider]
        db = tmp_path / "vault.db"
        shutil.copy2(template, db)
        monkeypatch.setenv("BYOKCTL_DB", str(db))
        monkeypatch.setenv("BYOKCTL_MASTER_KEY", master)
        emulator.allow_key(PLATFORM_KEYS[provider], provider)
        url = emulator.base_url(provider)
        r = cli("org", "set-provider", "acme", provider, "--model", MODELS[provider], "--base-url",
                url, "--fallback", policy, "--yes")
        assert r.exit_code == 0, r.output
        r = cli("platform", "set-default", provider, "--model", MODELS[provider], "--base-url", url)
        assert r.exit_code == 0, r.output
        return Setup(provider, org_key, platform_key, db)

    return make


def rows(db: Path, sql: str) -> list[dict]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def statuses(cli) -> dict[str, str]:
    r = cli("key", "list", "--json")
    assert r.exit_code == 0, r.output
    return {k["id"]: k["status"] for k in json.loads(r.stdout)}


def balance(cli) -> int:
    r = cli("credits", "show", "acme", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["balance"]


def calls_with(emulator, secret: str, endpoint: str) -> int:
    return sum(1 for q in emulator.requests if q.key_hint == secret[-4:] and q.endpoint == endpoint)


def release_stalls(emulator) -> None:
    """The emulator logs a request once its answer is decided, so a stalled one shows up only
    when the stall ends: stopping the emulator ends every stall at once (then give the woken
    handlers a moment to log)."""
    emulator.stop()
    before, deadline = -1, time.monotonic() + 2
    while time.monotonic() < deadline and len(emulator.requests) != before:
        before = len(emulator.requests)
        time.sleep(0.05)


def assert_one_clean_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def assert_chain_intact(cli) -> None:
    r = cli("audit", "verify", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True


# ---- ask: fault × provider × stream × fallback policy ------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_ask_under_a_fault(cli, build, emulator, fault, provider, stream, policy):
    s = build(provider, policy)
    org_secret, platform_secret = EMULATOR_KEYS[provider], PLATFORM_KEYS[provider]
    emulator.inject(key=org_secret, endpoint="completions", **fault.inject)
    fallback = fault.falls_back and policy == "provider-error"

    args = ["ask", "acme", PROMPT, "--timeout", f"{fault.timeout:g}", "--retries", str(fault.retries)]
    started = time.monotonic()
    r = cli(*args, *([] if stream else ["--no-stream"]))
    elapsed = time.monotonic() - started

    # Exit code and what the user sees.
    assert "Traceback" not in r.output
    if fallback:
        assert r.exit_code == 0, r.output
        assert "retrying once on platform credits" in r.stderr
        assert "Emulated" in r.stdout and "fallback: provider-error" in r.stderr
    else:
        assert r.exit_code == fault.code, r.output
        line = assert_one_clean_line(r.stderr)
        assert ("Anthropic" if provider == "anthropic" else "OpenAI") in line
        if stream and fault.mid_stream:
            assert r.stdout.startswith("Emulated")  # text shown before the fault stays shown
        else:
            assert r.stdout.strip() == ""

    # Within the configured timeout and retries.
    assert fault.min_seconds <= elapsed < fault.max_seconds, elapsed
    if "stall" in fault.inject:
        release_stalls(emulator)
    assert calls_with(emulator, org_secret, "completions") == fault.attempts[stream]
    assert calls_with(emulator, platform_secret, "completions") == (1 if fallback else 0)

    # One usage record per call: the failed BYOK one, then the platform retry if any.
    used = rows(s.db, "SELECT mode, outcome, key_id, fallback_reason, credits_charged FROM usage "
                      "ORDER BY id")
    expected = [{"mode": "byok", "outcome": fault.code.label, "key_id": s.org_key,
                 "fallback_reason": None, "credits_charged": 0}]
    if fallback:
        expected.append({"mode": "platform", "outcome": "ok", "key_id": s.platform_key,
                         "fallback_reason": "provider-error", "credits_charged": 1})
    assert used == expected

    # The key's status, and credits only for a platform call that succeeded.
    assert statuses(cli) == {s.org_key: fault.status_after, s.platform_key: "active"}
    assert balance(cli) == CREDITS - (1 if fallback else 0)
    assert_chain_intact(cli)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_ask_json_error_under_a_fault_is_one_json_line(cli, build, emulator, provider):
    """With --json the failure is one JSON object on stderr naming the exit code."""
    build(provider, "never")
    emulator.inject(key=EMULATOR_KEYS[provider], status=529)
    r = cli("ask", "acme", PROMPT, "--retries", "0", "--json")
    assert r.exit_code == ExitCode.PROVIDER_DOWN, r.output
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert json.loads(r.stderr)["error"]["code"] == "provider-down"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retries_end_at_the_deadline_of_the_whole_call(cli, build, emulator, provider):
    """--retries 1 against a stall: --timeout is the deadline of the whole call (issue 6/11),
    so the first attempt uses all of it and no retry is made that the deadline leaves no time
    for; never the 30 s stall."""
    s = build(provider, "provider-error")
    emulator.inject(key=EMULATOR_KEYS[provider], stall=30)
    started = time.monotonic()
    r = cli("ask", "acme", PROMPT, "--no-stream", "--timeout", "0.4", "--retries", "1")
    elapsed = time.monotonic() - started
    assert r.exit_code == ExitCode.PROVIDER_DOWN, r.output
    assert "did not answer within 0.4 s (--timeout" in assert_one_clean_line(r.stderr)
    assert "attempts" not in r.stderr
    assert 0.4 <= elapsed < 3, elapsed
    release_stalls(emulator)
    assert calls_with(emulator, EMULATOR_KEYS[provider], "completions") == 1
    assert balance(cli) == CREDITS and statuses(cli)[s.org_key] == "active"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_fallback_is_one_retry_only_even_if_the_platform_fails_too(cli, build, emulator, provider):
    """provider-error retries once on platform mode: when the platform key is rejected as well,
    the command fails with the platform's refusal; nothing loops and no credit is spent."""
    s = build(provider, "provider-error")
    emulator.inject(status=401)  # every key, the platform's too
    r = cli("ask", "acme", PROMPT, "--retries", "2")
    assert r.exit_code == ExitCode.KEY_REJECTED, r.output
    assert "retrying once on platform credits" in r.stderr
    assert "Traceback" not in r.output
    assert calls_with(emulator, EMULATOR_KEYS[provider], "completions") == 1
    assert calls_with(emulator, PLATFORM_KEYS[provider], "completions") == 1
    used = rows(s.db, "SELECT mode, outcome, fallback_reason FROM usage ORDER BY id")
    assert used == [{"mode": "byok", "outcome": "key-rejected", "fallback_reason": None},
                    {"mode": "platform", "outcome": "key-rejected",
                     "fallback_reason": "provider-error"}]
    assert statuses(cli) == {s.org_key: "invalid", s.platform_key: "invalid"}
    assert balance(cli) == CREDITS


# ---- key test: fault × provider -----------------------------------------------------------------

TEST_RESULTS = {ExitCode.KEY_REJECTED: "rejected", ExitCode.RATE_LIMITED: "rate-limited",
                ExitCode.PROVIDER_DOWN: "unreachable"}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_key_test_under_a_fault(cli, build, emulator, fault, provider):
    s = build(provider, "provider-error")
    org_secret = EMULATOR_KEYS[provider]
    emulator.inject(key=org_secret, endpoint="models", **fault.inject)
    started = time.monotonic()
    r = cli("key", "test", s.org_key, "--timeout", f"{fault.timeout:g}", "--retries",
            str(fault.retries))
    elapsed = time.monotonic() - started

    assert r.exit_code == fault.code, r.output  # key test never falls back: it tests this key
    assert r.stdout == ""
    assert_one_clean_line(r.stderr)
    assert fault.min_seconds <= elapsed < fault.max_seconds, elapsed
    if "stall" in fault.inject:
        release_stalls(emulator)
    # list models is never streamed: a reset cuts a whole answer, which is retried
    assert calls_with(emulator, org_secret, "models") == fault.attempts[False]
    assert calls_with(emulator, PLATFORM_KEYS[provider], "models") == 0

    [tested] = [k for k in json.loads(cli("key", "list", "--json").stdout) if k["id"] == s.org_key]
    assert tested["status"] == fault.status_after
    assert rows(s.db, "SELECT count(*) AS n FROM usage") == [{"n": 0}]  # a test is not usage
    [entry] = rows(s.db, "SELECT after FROM audit WHERE action = 'key.test'")
    assert json.loads(entry["after"])["test_result"] == TEST_RESULTS[fault.code]
    assert balance(cli) == CREDITS
    assert_chain_intact(cli)
