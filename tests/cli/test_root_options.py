"""`--json`, `-q/--quiet` and `--db` where people type them: before or after the subcommand."""

from __future__ import annotations

import json

import pytest
from conftest import ANTHROPIC_TEST_KEY, master_key_b64, run_proc


def test_json_before_the_subcommand_is_the_commands_own(cli, acme):
    before = cli("--json", "org", "list")
    after = cli("org", "list", "--json")
    assert before.exit_code == 0, before.output
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert [o["slug"] for o in json.loads(before.stdout)] == ["acme"]


def test_json_before_the_subcommand_shapes_errors_too(cli, vault):
    r = cli("--json", "org", "show", "nosuch")
    assert r.exit_code == 3
    assert json.loads(r.stderr)["error"]["code"] == "not-found"


def test_json_is_not_kept_from_one_run_to_the_next(cli, acme):
    assert cli("--json", "org", "list").stdout.startswith("[")
    assert not cli("org", "list").stdout.startswith("[")


@pytest.mark.parametrize("where", ["before", "after"])
def test_db_before_or_after_the_subcommand(cli, tmp_path, monkeypatch, where):
    """--db names the vault wherever it is given; $BYOKCTL_DB points elsewhere meanwhile."""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    one, other = tmp_path / "one.db", tmp_path / "other.db"
    for db, slug in ((one, "first"), (other, "second")):
        assert cli("init", "--db", str(db)).exit_code == 0
        assert cli("org", "create", slug, "--db", str(db)).exit_code == 0
    monkeypatch.setenv("BYOKCTL_DB", str(one))
    args = ["--db", str(other), "org", "list", "--json"] if where == "before" else \
        ["org", "list", "--json", "--db", str(other)]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    assert [o["slug"] for o in json.loads(r.stdout)] == ["second"]


def test_db_after_the_subcommand_wins_over_one_before(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    one, other = tmp_path / "one.db", tmp_path / "other.db"
    for db, slug in ((one, "first"), (other, "second")):
        cli("init", "--db", str(db))
        cli("org", "create", slug, "--db", str(db))
    r = cli("--db", str(one), "org", "list", "--db", str(other), "--json")
    assert [o["slug"] for o in json.loads(r.stdout)] == ["second"]


def test_a_password_in_db_after_the_subcommand_is_refused_unrepeated(cli):
    r = cli("org", "list", "--db", "postgresql://ops:hunter2@db.example.com/byok")
    assert r.exit_code == 2
    assert "carries a password" in r.stderr and "hunter2" not in r.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_drops_status_lines_never_data(cli, acme, emulator, where):
    """`ask -q`: the answer (data, stdout) stays; the summary line (status, stderr) goes."""
    url = emulator.anthropic_base_url
    assert cli("org", "set-provider", "acme", "anthropic", "--base-url", url, "--yes").exit_code == 0
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=ANTHROPIC_TEST_KEY)
    assert r.exit_code == 0, r.output
    loud = cli("ask", "acme", "hello", "--no-stream")
    assert loud.exit_code == 0, loud.output
    assert "tokens" in loud.stderr and loud.stdout.strip()
    args = ["-q", "ask", "acme", "hello", "--no-stream"] if where == "before" else \
        ["ask", "acme", "hello", "--no-stream", "-q"]
    quiet = cli(*args)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout == loud.stdout  # the emulator answers the same prompt the same way
    assert "tokens" not in quiet.stderr


def test_quiet_keeps_data(cli, acme):
    """What a command answers is data, on stdout: `-q` never drops it."""
    assert cli("org", "set-provider", "acme", "anthropic", "--yes").exit_code == 0
    assert cli("plan", "set", "acme", "starter").exit_code == 0
    r = cli("org", "show", "acme", "-q")
    assert r.exit_code == 0, r.output
    assert "acme" in r.stdout and "starter" in r.stdout
    r = cli("org", "list", "-q")
    assert r.exit_code == 0 and "acme" in r.stdout


def test_root_options_after_the_subcommand_in_a_real_process(vault):
    """The argv pre-scan (secret guard, JSON errors) sees them as the parser does."""
    r = run_proc("org", "show", "nosuch", "-q", "--json")
    assert r.returncode == 3
    assert json.loads(r.stderr)["error"]["code"] == "not-found"
