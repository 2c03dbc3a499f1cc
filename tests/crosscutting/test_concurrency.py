"""Several processes asking at once in platform mode lose no credit and never see a lock."""

import json
import subprocess
import sys

import pytest
from conftest import OPENAI_TEST_KEY, REPO, master_key_b64, vault_db

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out

PROCESSES = 6
START = 1000


def test_concurrent_asks_charge_exactly(cli, emulator, monkeypatch, home):
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    cli("org", "create", "acme", "--credits", str(START))
    r = cli("key", "add", "--platform", "--provider", "openai", "--from-stdin", input=OPENAI_TEST_KEY)
    assert r.exit_code == 0, r.output
    cli("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url",
        emulator.openai_base_url)

    procs = [
        subprocess.Popen([sys.executable, "-m", "byokctl", "ask", "acme", f"question {i}", "--json"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        for i in range(PROCESSES)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err.lower()
    charged = sum(json.loads(out)["credits_charged"] for out, _ in outs)
    assert charged >= PROCESSES  # at least one credit per call
    balance = json.loads(cli("credits", "show", "acme", "--json").stdout)["balance"]
    assert balance == START - charged
    from byokctl.services.context import open_context

    ctx = open_context(str(vault_db()))
    assert ctx.store.scalar("SELECT count(*) FROM usage WHERE outcome = 'ok'") == PROCESSES
    assert ctx.store.scalar("SELECT sum(credits_charged) FROM usage") == charged
    ctx.close()
    assert cli("audit", "verify").exit_code == 0
