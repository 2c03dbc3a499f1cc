"""`byokctl demo`: the whole flow, offline, leaving nothing behind."""

import json
import os

import pytest
from conftest import run_proc


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_demo_runs_the_whole_flow_offline_and_leaves_no_trace(home, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYOKCTL_MASTER")}
    env["TMPDIR"] = str(tmp_path / "tmp")
    os.makedirs(env["TMPDIR"])
    r = run_proc("demo", env=env)
    assert r.returncode == 0, r.stderr
    for seen in ("$ byokctl ask acme", "fallback: gate-lapsed", "BYOK grace grant active",
                 "Audit log OK", "billed by Anthropic"):
        assert seen in r.stdout + r.stderr, seen
    assert "sk-ant-api03-demo" not in r.stdout + r.stderr
    assert not home.exists(), "the demo must not touch the user's own vault"
    assert os.listdir(env["TMPDIR"]) == [], "the throwaway vault is removed"


def test_demo_json_and_keep(cli, tmp_path):
    keep = tmp_path / "kept"
    r = cli("demo", "--keep", str(keep), "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    commands = [s["command"] for s in doc["steps"]]
    assert "byokctl resolve acme" in commands and doc["vault"] == str(keep / "vault.db")
    asks = [s["output"] for s in doc["steps"] if s["command"].startswith("byokctl ask")]
    assert [a["mode"] for a in asks] == ["byok", "platform"]
    assert asks[1]["fallback_reason"] == "gate-lapsed" and asks[1]["credits_charged"] >= 1
    assert (keep / "vault.db").exists()
    r = cli("demo", "--keep", str(keep))
    assert r.exit_code == 12 and "already exists" in r.stderr
