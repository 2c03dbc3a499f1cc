"""`emulator serve --key KEY=BEHAVIOUR`, as a user runs it: one emulator process serving good,
rejected, rate-limited, failing and stalling keys, each tested from the vault with `key test
--base-url` (the real SDKs); the example keys of its --help pass `key add`; the keys given on
its command line are the only ones the argv guard lets through, and never echoed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest
from conftest import REPO

ANTHROPIC = {"ok": "sk-ant-emu-good-000000", "401": "sk-ant-emu-gone-000000",
             "403": "sk-ant-emu-deny-000000", "429": "sk-ant-emu-busy-000000",
             "500": "sk-ant-emu-down-000000", "529": "sk-ant-emu-full-000000",
             "stall": "sk-ant-emu-slow-000000"}
OPENAI_OK = "sk-emu-openai-good-0000"
EXIT = {"ok": 0, "401": 7, "403": 7, "429": 8, "500": 11, "529": 11, "stall": 11}
RESULT = {"ok": "ok", "401": "rejected", "403": "rejected", "429": "rate-limited",
          "500": "unreachable", "529": "unreachable", "stall": "unreachable"}


@pytest.fixture
def served():
    """`byokctl emulator serve --key ...` in its own process; its base URLs."""
    args = [a for behaviour, key in ANTHROPIC.items() for a in ("--key", f"{key}={behaviour}")]
    proc = subprocess.Popen([sys.executable, "-m", "byokctl", "emulator", "serve", "--json", *args,
                             f"--key=openai:{OPENAI_OK}=ok"], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    while not lines or lines[-1].rstrip() != "}":
        line = proc.stdout.readline()
        assert line, f"serve ended early: {proc.stderr.read()}"
        lines.append(line)
    yield json.loads("".join(lines))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    for key in (*ANTHROPIC.values(), OPENAI_OK):
        assert key not in err


@pytest.mark.slow  # a separate emulator process, and a stalled key waited out
def test_one_emulator_serves_every_behaviour_to_key_test(cli, acme, served):
    ids = {}
    for behaviour, key in ANTHROPIC.items():  # one org per key: at most one key per slot
        org = f"org-{behaviour}"
        assert cli("org", "create", org, "--plan", "growth").exit_code == 0
        r = cli("key", "add", org, "--provider", "anthropic", "--from-stdin", "--json",
                input=key + "\n")
        assert r.exit_code == 0, r.output
        ids[behaviour] = json.loads(r.stdout)["id"]
    for behaviour, key_id in ids.items():
        r = cli("key", "test", key_id, "--base-url", served["anthropic_base_url"], "--retries", "0",
                "--timeout", "2", "--json")
        assert r.exit_code == EXIT[behaviour], (behaviour, r.output)
        listed = json.loads(cli("key", "list", f"org-{behaviour}", "--json").stdout)
        assert listed[0]["test_result"] == RESULT[behaviour], behaviour
    r = cli("key", "add", "acme", "--provider", "openai", "--from-stdin", "--test", "--base-url",
            served["openai_base_url"], input=OPENAI_OK + "\n")
    assert r.exit_code == 0, r.output  # `--key=openai:KEY=ok`: the prefix and the key parsed apart


def _help_keys() -> list[str]:
    from byokctl.cli import emulator

    doc = emulator.serve.__doc__ or ""
    found = []
    for line in doc.splitlines():
        if line.strip().startswith("Example:"):
            for value in re.findall(r"--(?:valid-key|key)[ =](\S+)", line):
                value = value.split(":", 1)[1] if value.split(":", 1)[0] in ("anthropic", "openai") \
                    else value
                found.append(value.rpartition("=")[0] if "=" in value else value)
    return found


def test_the_example_keys_in_its_help_pass_key_add(cli, acme):
    r = cli("emulator", "serve", "--help")
    assert r.exit_code == 0, r.output
    keys = _help_keys()
    assert len(keys) >= 4 and all(k in r.stdout for k in keys)
    assert any("--key" in line and "=429" in line for line in r.stdout.splitlines())
    for i, key in enumerate(keys):
        org = f"help-{i}"
        assert cli("org", "create", org).exit_code == 0
        provider = "anthropic" if key.startswith("sk-ant-") else "openai"
        r = cli("key", "add", org, "--provider", provider, "--from-stdin", input=key + "\n")
        assert r.exit_code == 0, (key, r.output)


@pytest.mark.parametrize(("value", "says"), [
    ("sk-ant-emu-good-000000", "KEY=BEHAVIOUR"),
    ("sk-ant-emu-good-000000=teapot", "no behaviour"),
    ("sk-ant-emu-good-000000=200", "no behaviour"),
    ("=ok", "KEY=BEHAVIOUR"),
])
def test_a_bad_key_behaviour_is_refused_without_echoing_the_key(cli, value, says):
    for extra in ([], ["--json"]):
        r = cli("emulator", "serve", "--key", value, *extra)
        assert r.exit_code == 2, r.output
        assert says in r.stderr and "sk-ant-emu-good-000000" not in r.output


def test_a_key_given_twice_with_two_behaviours_is_refused(cli):
    r = cli("emulator", "serve", "--key", "sk-ant-emu-good-000000=ok", "--key",
            "sk-ant-emu-good-000000=429")
    assert r.exit_code == 2 and "two behaviours" in r.stderr, r.output
    assert "sk-ant-emu-good-000000" not in r.output


def test_the_argv_guard_lets_key_values_through_for_emulator_serve_only(cli, acme):
    key = "sk-ant-api03-" + "w" * 30
    for argv in (["emulator", "serve", "--key", f"{key}=ok", "--port", "99999"],
                 ["emulator", "serve", f"--key=anthropic:{key}=429", "--bogus"]):
        r = cli(*argv)
        assert r.exit_code == 2, r.output
        assert "command-line argument" not in r.stderr  # let through to the command...
        assert key not in r.output and key[-12:] not in r.output  # ...and never echoed
    for argv in (["org", "create", "x", "--key", f"{key}=ok"],
                 ["emulator", "--key", f"{key}=ok"],
                 ["emulator", "serve", "--key", "sk-ant-emu-good-000000=ok", f"{key}"]):
        r = cli(*argv)
        assert r.exit_code == 2 and "command-line argument" in r.stderr, r.output
        assert key not in r.output
