"""SPEC §4's exit-code table, pinned: the enum, the JSON labels, and each code reached through
the CLI where this code base can reach it without a provider."""

import json

import pytest

from byokctl.errors import ERROR_CLASSES, ExitCode

SPEC_TABLE = {
    0: "ok", 1: "internal", 2: "usage", 3: "not-found", 4: "denied", 5: "plan-gate", 6: "no-key",
    7: "key-rejected", 8: "rate-limited", 9: "insufficient", 10: "vault-locked",
    11: "provider-down", 12: "conflict", 13: "integrity",
}


def test_enum_matches_the_spec_table():
    assert {int(c): c.label for c in ExitCode} == SPEC_TABLE


def test_every_error_code_has_one_exception_class():
    assert set(ERROR_CLASSES) == {c for c in ExitCode if c not in (ExitCode.OK, ExitCode.INTERNAL)}
    for code, cls in ERROR_CLASSES.items():
        assert cls("x").code is code


def _err(r):
    return json.loads(r.stderr)["error"]


def test_ok(cli, vault):
    assert cli("org", "list").exit_code == ExitCode.OK


def test_usage_is_clicks_own(cli, vault):
    r = cli("org", "create", "acme", "--bogus", "--json")
    assert r.exit_code == ExitCode.USAGE
    assert _err(r)["code"] == "usage" and "--bogus" in _err(r)["message"]


def test_not_found(cli, vault):
    r = cli("org", "show", "ghost", "--json")
    assert r.exit_code == ExitCode.NOT_FOUND and _err(r)["code"] == "not-found"


def test_plan_gate(cli, vault):
    cli("org", "create", "acme", "--plan", "free")
    r = cli("org", "set-provider", "acme", "openai", "--yes", "--json")
    assert r.exit_code == ExitCode.PLAN_GATE and _err(r)["code"] == "plan-gate"


def test_conflict(cli, vault):
    cli("org", "create", "acme")
    r = cli("org", "create", "acme", "--json")
    assert r.exit_code == ExitCode.CONFLICT and _err(r)["code"] == "conflict"


def test_vault_locked(cli, vault, isolated):
    isolated.entries.clear()  # the keyring entry holding the master key is gone
    r = cli("org", "create", "acme", "--json")
    assert r.exit_code == ExitCode.VAULT_LOCKED and _err(r)["code"] == "vault-locked"
    assert "BYOKCTL_MASTER_KEY" in _err(r)["message"]


@pytest.mark.sqlite_only
def test_integrity_for_a_file_that_is_not_a_vault(cli, home):
    home.mkdir(parents=True)
    (home / "vault.db").write_bytes(b"this is not sqlite" * 100)
    r = cli("org", "list", "--json")
    assert r.exit_code == ExitCode.INTEGRITY and _err(r)["code"] == "integrity"


def test_internal_error_shows_no_text_or_traceback(cli, vault, monkeypatch):
    from byokctl.services import orgs

    def boom(*a, **k):
        raise RuntimeError("sk-ant-api03-SECRETSECRETSECRET must never print")

    monkeypatch.setattr(orgs, "list_orgs", boom)
    r = cli("org", "list")
    assert r.exit_code == ExitCode.INTERNAL
    assert "RuntimeError" in r.stderr and "SECRET" not in r.output and "Traceback" not in r.output


def test_debug_shows_the_error_text_but_never_a_key(cli, vault, monkeypatch):
    from byokctl.services import orgs

    def boom(*a, **k):
        raise RuntimeError("upstream said: bad key sk-ant-api03-SECRETSECRETSECRET")

    monkeypatch.setattr(orgs, "list_orgs", boom)
    monkeypatch.setenv("BYOKCTL_DEBUG", "1")
    r = cli("org", "list")
    assert r.exit_code == ExitCode.INTERNAL
    assert "upstream said: bad key" in r.stderr and "SECRET" not in r.output


def test_ctrl_c_exits_130_without_traceback(cli, vault, monkeypatch):
    from byokctl.services import orgs

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(orgs, "list_orgs", interrupted)
    r = cli("org", "list")
    assert r.exit_code == 130
    assert "Interrupted" in r.stderr and "Traceback" not in r.output


# -- the process itself: `python -m byokctl` ends with a hard exit (byokctl/__main__.py) -------

def _seed(n: int) -> None:
    """n orgs, written in this process (the vault's master key is in its in-memory keyring)."""
    from byokctl.services import orgs
    from byokctl.services.context import open_context

    ctx = open_context(None)
    try:
        for i in range(n):
            orgs.create(ctx, f"org-{i:04d}", name="An org with a long enough name " * 2,
                        plan="free", credits=0)
    finally:
        ctx.close()


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_a_real_process_delivers_all_its_output_and_its_status(vault, monkeypatch):
    """More output than a pipe holds (64 KiB), from a process that skips the interpreter's
    teardown: every byte arrives, and the exit status is the command's."""
    from conftest import run_proc

    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # stdout buffered, as for users
    _seed(600)
    slugs = [f"org-{i:04d}" for i in range(600)]
    r = run_proc("org", "list", "--json")  # reading needs no master key
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) > 65536
    assert [o["slug"] for o in json.loads(r.stdout)] == slugs
    r = run_proc("org", "list")  # the table
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()[1:]] == slugs
    r = run_proc("org", "show", "nope")
    assert (r.returncode, r.stdout) == (ExitCode.NOT_FOUND, "")
    assert r.stderr.startswith("error: No org 'nope'")


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_a_reader_that_stops_early_is_no_error(vault):
    """`byokctl org list | head -1`: exit 0, and no "Exception ignored ... BrokenPipeError"."""
    import subprocess
    import sys

    from conftest import REPO

    _seed(600)
    r = subprocess.run(["bash", "-c", f'"{sys.executable}" -m byokctl org list | head -1; '
                       'echo "status=${PIPESTATUS[0]}" >&2'], capture_output=True, text=True,
                       cwd=REPO, timeout=60)
    assert r.stdout.startswith("slug") and r.stdout.count("\n") == 1
    assert r.stderr == "status=0\n"
