"""Attacks on billing from the hostile review (issue 6/11, items 9 and 12): concurrent asks
that outrun the balance or the BYOK budget, a charge larger than the balance, a gateway that
reports made-up token counts, and a key or org removed while a call waits on the provider."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from attack_servers import HostileServer, openai_completion, send_json
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, REPO, add_key, master_key_b64, vault_db

from byokctl.errors import ExitCode
from byokctl.services.context import open_context

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out

PROMPT = "Say hello to the BYOK world"

# Each worker imports byokctl and the SDK, says it is ready, waits for the common start signal,
# then runs one `ask` through the real CLI entry point and writes its exit code.
WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from byokctl.cli import app
    import anthropic, openai  # noqa: F401 - so the start signal is not spent importing them
    me, go, args = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    (me.parent / (me.name + ".ready")).touch()
    while not go.exists():
        time.sleep(0.001)
    code = app(args=args, standalone_mode=False)
    me.write_text(str(code if isinstance(code, int) else 0))
""")


def ask_together(tmp_path: Path, n: int, args: list[str]) -> list[int]:
    """Run `n` processes of `byokctl <args>`, released at the same instant; their exit codes."""
    go = tmp_path / "go"
    procs = []
    for i in range(n):
        me = tmp_path / f"worker{i}"
        procs.append((me, subprocess.Popen(
            [sys.executable, "-c", WORKER, str(me), str(go), json.dumps(args)], cwd=REPO,
            text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    deadline = time.monotonic() + 90
    while not all((me.parent / (me.name + ".ready")).exists() for me, _ in procs):
        assert time.monotonic() < deadline, "the workers did not start"
        assert all(p.poll() is None for _, p in procs), [p.stderr.read() for _, p in procs if p.poll()]
        time.sleep(0.02)
    go.touch()
    codes = []
    for me, p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert "Traceback" not in err, err
        codes.append(int(me.read_text()))
    return codes


@pytest.fixture
def plat(cli, emulator, monkeypatch):
    """A vault whose master key is in the environment (so subprocesses open it), the platform
    on OpenAI gpt-5-nano at the emulator."""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    key = add_key(cli, "--platform", "--provider", "openai", secret=OPENAI_TEST_KEY)
    r = cli("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url",
            emulator.openai_base_url)
    assert r.exit_code == 0, r.output
    return {"emulator": emulator, "key": key, "db": vault_db()}  # a file, or a database URL


def rows(db: Path | str, sql: str, params: tuple = ()) -> list[dict]:
    ctx = open_context(str(db))
    try:
        return [dict(r) for r in ctx.store.all(sql, params)]
    finally:
        ctx.close()


def credits(cli, org: str) -> dict:
    r = cli("credits", "show", org, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_16_concurrent_asks_on_one_credit_serve_exactly_the_admitted_one(cli, plat, tmp_path):
    """Old code: all 16 were served and 15 charged nothing (the balance stopped at zero)."""
    cli("org", "create", "acme", "--credits", "1")
    plat["emulator"].inject(provider="openai", endpoint="completions", stall=1.0)  # all in flight
    codes = ask_together(tmp_path, 16, ["ask", "acme", PROMPT, "--json", "--max-tokens", "16"])
    served = codes.count(0)
    assert served == 1, codes
    assert codes.count(ExitCode.INSUFFICIENT) == 15, codes
    usage = rows(plat["db"], "SELECT outcome, credits_charged FROM usage")
    ok = [u for u in usage if u["outcome"] == "ok"]
    assert len(ok) == served and len(usage) == 16  # the refused ones are recorded too
    assert all(u["credits_charged"] == 0 for u in usage if u["outcome"] != "ok")
    completions = [q for q in plat["emulator"].requests if q.endpoint == "completions"]
    assert len(completions) == served  # a refused call never reached the provider
    c = credits(cli, "acme")
    assert (1 - c["balance"]) + c["shortfall"] == sum(u["credits_charged"] for u in ok)
    assert rows(plat["db"], "SELECT * FROM reservations") == []  # every reservation settled


def test_concurrent_asks_on_five_credits_serve_five(cli, plat, tmp_path):
    cli("org", "create", "acme", "--credits", "5")
    plat["emulator"].inject(provider="openai", endpoint="completions", stall=1.0)
    codes = ask_together(tmp_path, 10, ["ask", "acme", PROMPT, "--json", "--max-tokens", "16"])
    assert codes.count(0) == 5 and codes.count(ExitCode.INSUFFICIENT) == 5, codes
    charged = sum(u["credits_charged"] for u in rows(
        plat["db"], "SELECT credits_charged FROM usage WHERE outcome = 'ok'"))
    c = credits(cli, "acme")
    assert charged == 5 and c == {"org": "acme", "balance": 0, "shortfall": 0}


def test_concurrent_byok_asks_pass_the_budget_by_at_most_one_call(cli, plat, tmp_path):
    """Old code: every call was admitted, the month-to-date cost being read before any ended."""
    from byokctl.services.admission import estimate_usd

    cli("org", "create", "acme", "--plan", "growth")
    add_key(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    r = cli("org", "set-provider", "acme", "anthropic", "--model", "sonnet", "--base-url",
            plat["emulator"].anthropic_base_url, "--yes")
    assert r.exit_code == 0, r.output
    one = estimate_usd("anthropic", "claude-sonnet-5-5", prompt=PROMPT, system=None, max_tokens=200)
    cli("org", "set-budget", "acme", "--monthly-usd", f"{2.5 * one:.6f}")
    plat["emulator"].inject(provider="anthropic", endpoint="completions", stall=1.5)
    codes = ask_together(tmp_path, 8, ["ask", "acme", PROMPT, "--json", "--max-tokens", "200"])
    # The 1st sees $0 reserved, the 2nd one call's worth, the 3rd two (< 2.5): three admitted.
    assert codes.count(0) == 3 and codes.count(ExitCode.INSUFFICIENT) == 5, codes
    spent = sum(u["cost_usd"] for u in rows(
        plat["db"], "SELECT cost_usd FROM usage WHERE outcome = 'ok' AND mode = 'byok'"))
    assert spent <= 2.5 * one + one
    assert rows(plat["db"], "SELECT * FROM reservations") == []


def test_a_charge_larger_than_the_balance_is_kept_as_shortfall_and_paid_first(cli, plat):
    """Old code: a call costing 4 credits on a balance of 1 charged 1 and dropped the rest."""
    cli("org", "create", "acme", "--credits", "1")
    cli("platform", "set-default", "anthropic", "--model", "opus", "--base-url",
        plat["emulator"].anthropic_base_url)
    add_key(cli, "--platform", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    prompt = "word " * 10_000  # 10,000 input tokens at $4/M: $0.04, so at least 4 credits
    r = cli("ask", "acme", prompt, "--json", "--max-tokens", "16")
    assert r.exit_code == 0, r.output
    price = json.loads(r.stdout)["credits_charged"]
    assert price >= 4
    assert f"{price - 1} credits are owed" in r.stderr
    [u] = rows(plat["db"], "SELECT credits_charged FROM usage")
    assert u["credits_charged"] == price  # recorded in full
    assert credits(cli, "acme") == {"org": "acme", "balance": 0, "shortfall": price - 1}
    r = cli("credits", "show", "acme")
    assert f"Shortfall: {price - 1} credits owed" in r.stdout
    assert cli("ask", "acme", PROMPT).exit_code == ExitCode.INSUFFICIENT  # nothing left to spend
    r = cli("credits", "add", "acme", "10", "--json")
    assert r.exit_code == 0, r.output
    g = json.loads(r.stdout)
    assert g["paid_shortfall"] == price - 1 and g["balance"] == 10 - (price - 1) and g["shortfall"] == 0
    assert credits(cli, "acme") == {"org": "acme", "balance": 11 - price, "shortfall": 0}
    assert cli("audit", "verify").exit_code == 0


def test_a_reservation_of_a_killed_process_lapses(cli, plat):
    """A process killed mid-call leaves its reservation; it stops counting at its expiry."""
    cli("org", "create", "acme", "--credits", "1")
    ctx = open_context(str(plat["db"]))
    with ctx.store.tx() as conn:
        conn.execute("INSERT INTO reservations (org, mode, credits, cost_usd, created_at, expires_at)"
                     " VALUES ('acme', 'platform', 1, 0.001, '2026-01-01T00:00:00.000000Z', ?)",
                     ("2999-01-01T00:00:00.000000Z",))
    r = cli("ask", "acme", PROMPT)
    assert r.exit_code == ExitCode.INSUFFICIENT and "reserved 1" in r.stderr
    assert "lapses by 2999-01-01" in r.stderr
    with ctx.store.tx() as conn:
        conn.execute("UPDATE reservations SET expires_at = '2020-01-01T00:00:00.000000Z'")
    ctx.close()
    r = cli("ask", "acme", PROMPT)
    assert r.exit_code == 0, r.output
    assert rows(plat["db"], "SELECT * FROM reservations") == []


@pytest.mark.parametrize("counts", [(-1_000_000_000, 5), (12.5, 5), (10, 1e30), (10, -1),
                                    (10**30, 5), (1e30, 5)])
def test_a_gateway_reporting_bad_token_counts_is_malformed_and_charges_nothing(cli, plat, counts):
    """Old code: -1e9 input tokens recorded -$2000 (unblocking any budget); 1e30 crashed
    after the call and went unrecorded."""
    cli("org", "create", "acme", "--credits", "100")

    def answer(handler, body):
        send_json(handler, openai_completion(body["model"], *counts))

    with HostileServer(answer) as gw:
        cli("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url", gw.url + "/v1")
        r = cli("ask", "acme", PROMPT, "--json", "--retries", "2")
        assert len(gw.requests) == 1  # not retried: the gateway says it already did the work
    assert r.exit_code == ExitCode.PROVIDER_DOWN, r.output
    assert "Traceback" not in r.output and OPENAI_TEST_KEY not in r.output
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "provider-down" and "token" in err["message"]
    [u] = rows(plat["db"], "SELECT * FROM usage")
    assert u["outcome"] == "malformed" and u["credits_charged"] == 0
    assert u["input_tokens"] == 0 and u["output_tokens"] == 0 and u["cost_usd"] == 0
    assert credits(cli, "acme") == {"org": "acme", "balance": 100, "shortfall": 0}


def test_bad_token_counts_in_an_anthropic_stream_are_malformed(cli, plat):
    from attack_servers import sse, start_sse

    cli("org", "create", "acme", "--credits", "100")

    def answer(handler, body):
        start_sse(handler)
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": -1_000_000_000, "output_tokens": 1}}
        sse(handler, "message_start", {"type": "message_start", "message": msg})
        sse(handler, "content_block_start", {"type": "content_block_start", "index": 0,
                                             "content_block": {"type": "text", "text": ""}})
        sse(handler, "content_block_delta", {"type": "content_block_delta", "index": 0,
                                             "delta": {"type": "text_delta", "text": "hi"}})
        sse(handler, "content_block_stop", {"type": "content_block_stop", "index": 0})
        sse(handler, "message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                                       "usage": {"output_tokens": 1}})
        sse(handler, "message_stop", {"type": "message_stop"})

    add_key(cli, "--platform", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    with HostileServer(answer) as gw:
        cli("platform", "set-default", "anthropic", "--model", "haiku", "--base-url", gw.url)
        r = cli("ask", "acme", PROMPT)
    assert r.exit_code == ExitCode.PROVIDER_DOWN, r.output
    [u] = rows(plat["db"], "SELECT * FROM usage")
    assert u["outcome"] == "malformed" and u["credits_charged"] == 0 and u["cost_usd"] == 0
    assert credits(cli, "acme")["balance"] == 100


# -- item 12: the key or the org goes away while the call waits on the provider ---------------

def ask_while(cli, plat, org: str, during) -> tuple[subprocess.CompletedProcess, list]:
    """Start `ask ORG` in a process, held by the emulator; once the request is at the provider
    (it has arrived: the stall that holds it has begun), run `during()`, then let the call
    finish. Returns the process result and the usage rows."""
    reached = threading.Event()
    plat["emulator"].on_arrival = lambda _provider, endpoint: (
        reached.set() if endpoint == "completions" else None)
    plat["emulator"].inject(endpoint="completions", stall=2.0, times=1)
    proc = subprocess.Popen([sys.executable, "-m", "byokctl", "ask", org, PROMPT, "--json"],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reached.wait(30), "the call never reached the provider"
    during()
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), rows(
        plat["db"], "SELECT * FROM usage WHERE org = ?", (org,))


def test_a_key_removed_during_the_call_is_still_recorded(cli, plat):
    """Old code: exit 3 (the key was gone when the call was marked used), no usage record."""
    cli("org", "create", "acme", "--plan", "growth")
    key = add_key(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    cli("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--base-url",
        plat["emulator"].anthropic_base_url, "--yes")

    def remove():
        r = cli("key", "remove", key, "--yes")
        assert r.exit_code == 0, r.output

    p, usage = ask_while(cli, plat, "acme", remove)
    assert p.returncode == 0, p.stderr
    assert f"key {key} was removed while the call ran" in p.stderr
    [u] = usage
    assert u["outcome"] == "ok" and u["key_id"] == key and u["input_tokens"] > 0


def test_a_platform_key_removed_during_the_call_still_charges(cli, plat):
    cli("org", "create", "acme", "--credits", "10")

    def remove():
        assert cli("key", "remove", plat["key"], "--yes").exit_code == 0

    p, [u] = ask_while(cli, plat, "acme", remove)
    assert p.returncode == 0, p.stderr
    assert u["outcome"] == "ok" and u["credits_charged"] == 1
    assert credits(cli, "acme")["balance"] == 9


def test_an_org_deleted_during_the_call_is_still_recorded(cli, plat):
    """Old code: a TypeError after the call (no org row to charge), exit 1, no record.
    Now: the usage record keeps the org's slug, tokens, cost and the credits the call cost;
    there is no balance left to take them from, and stderr says so."""
    cli("org", "create", "acme", "--credits", "10")

    def delete():
        r = cli("org", "delete", "acme", "--yes")
        assert r.exit_code == 0, r.output

    p, usage = ask_while(cli, plat, "acme", delete)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "was deleted while the call ran" in p.stderr
    [u] = usage
    assert u["outcome"] == "ok" and u["org"] == "acme" and u["credits_charged"] == 1
    assert u["cost_usd"] > 0
    assert rows(plat["db"], "SELECT * FROM reservations") == []


def test_an_org_recreated_during_the_call_is_not_charged_for_it(cli, plat):
    cli("org", "create", "acme", "--credits", "10")

    def recreate():
        assert cli("org", "delete", "acme", "--yes").exit_code == 0
        assert cli("org", "create", "acme", "--credits", "3").exit_code == 0

    p, usage = ask_while(cli, plat, "acme", recreate)
    assert p.returncode == 0, p.stderr
    [u] = usage
    assert u["credits_charged"] == 1 and "was deleted while the call ran" in p.stderr
    assert credits(cli, "acme") == {"org": "acme", "balance": 3, "shortfall": 0}
