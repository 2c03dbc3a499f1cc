"""Many writers on many machines share one PostgreSQL vault: nothing is lost or forked.

Two "machines" (separate homes, the same database URL and master key) run 16 processes at
once: 12 grant credits in a loop through the services, 4 ask in platform mode through the
real CLI (reservations, the charge and the usage record). Every credit lands, every entry is
in the one audit chain, and `audit verify` and `vault check` find it whole.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import OPENAI_TEST_KEY, REPO, master_key_b64, run

pytestmark = pytest.mark.slow  # 16 processes, each loading byokctl and psycopg

START = 1000
ADDERS, ADDS, ASKERS = 12, 25, 4

ADDER = textwrap.dedent("""
    import sys
    from byokctl.services import credits
    from byokctl.services.context import open_context

    ctx = open_context(sys.argv[1])
    for i in range(int(sys.argv[2])):
        credits.add(ctx, "acme", int(sys.argv[3]))
    ctx.close()
""")


def test_sixteen_writers_on_two_machines_lose_nothing(pg_url, emulator, tmp_path, monkeypatch):
    key = master_key_b64()
    machines = []
    for name in ("a", "b"):
        home = tmp_path / name
        home.mkdir(mode=0o700)
        machines.append({**os.environ, "BYOKCTL_HOME": str(home), "BYOKCTL_DB": pg_url,
                         "BYOKCTL_MASTER_KEY": key, "BYOKCTL_ACTOR": f"ops-{name}"})
    monkeypatch.setenv("BYOKCTL_DB", pg_url)
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", key)
    for argv in (("init",), ("org", "create", "acme", "--credits", str(START)),
                 ("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url",
                  emulator.openai_base_url)):
        r = run(*argv)
        assert r.exit_code == 0, r.output
    r = run("key", "add", "--platform", "--provider", "openai", "--from-stdin", input=OPENAI_TEST_KEY)
    assert r.exit_code == 0, r.output

    procs = []
    for i in range(ADDERS):
        procs.append(subprocess.Popen(
            [sys.executable, "-c", ADDER, pg_url, str(ADDS), str(i % 3 + 1)], env=machines[i % 2],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO))
    for i in range(ASKERS):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "byokctl", "ask", "acme", f"question {i}", "--json"],
            env=machines[i % 2], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO))
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    added = sum(ADDS * (i % 3 + 1) for i in range(ADDERS))
    charged = sum(json.loads(out)["credits_charged"] for out, _ in outs[ADDERS:])
    assert charged >= ASKERS

    balance = json.loads(run("credits", "show", "acme", "--json").stdout)
    assert (balance["balance"], balance.get("shortfall", 0)) == (START + added - charged, 0)
    entries = json.loads(run("audit", "log", "--org", "acme", "--action", "credits.add", "--json",
                             "--limit", "10000").stdout)
    assert len(entries) == ADDERS * ADDS
    assert {e["actor"] for e in entries} == {"ops-a", "ops-b"}
    usage = json.loads(run("usage", "show", "acme", "--json").stdout)
    assert usage["totals"]["calls"] == ASKERS and usage["totals"]["credits_charged"] == charged
    verify = run("audit", "verify", "--json")
    assert verify.exit_code == 0, verify.output
    assert json.loads(verify.stdout)["checked"] >= ADDERS * ADDS + ASKERS
    check = run("vault", "check")
    assert check.exit_code == 0, check.output
