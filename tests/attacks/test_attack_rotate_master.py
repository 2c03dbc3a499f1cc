"""Attacks on `vault rotate-master` from the hostile review (issue 6/11): the new master key
printed to a stdout that is full, closed or gone must never cost the operator the vault.

With `$BYOKCTL_MASTER_KEY` the rotation only becomes real once the new key has opened the
vault; until then the old key opens it. (SIGKILL at many instants: tests/crosscutting/test_crash.py.)
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys

import pytest
from conftest import REPO, master_key_b64, stored_text, vault_db

from byokctl.services.context import open_context


def put_keys(cli) -> dict[str, str]:
    """An org key per provider and a member's personal key; returns {key id: secret}."""
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    assert cli("member", "add", "acme", "sam@acme.com", "--role", "admin").exit_code == 0
    out = {}
    for provider, prefix, extra in (("anthropic", "sk-ant-api03-", ()), ("openai", "sk-proj-", ()),
                                    ("anthropic", "sk-ant-api03-", ("--member", "sam@acme.com"))):
        secret = prefix + secrets.token_urlsafe(24)
        r = cli("key", "add", "acme", "--provider", provider, *extra, "--from-stdin", "--json",
                input=secret + "\n")
        assert r.exit_code == 0, r.output
        out[json.loads(r.stdout)["id"]] = secret
    return out


def secrets_with(key: str) -> dict[str, str]:
    """Every secret, decrypted by a fresh unlock with this master key (as a new process would)."""
    saved = os.environ.get("BYOKCTL_MASTER_KEY")
    os.environ["BYOKCTL_MASTER_KEY"] = key
    try:
        ctx = open_context(None)
        try:
            vault = ctx.vault()
            return {r["id"]: vault.open(r) for r in ctx.store.all("SELECT * FROM keys")}
        finally:
            ctx.close()
    finally:
        if saved is None:
            del os.environ["BYOKCTL_MASTER_KEY"]
        else:
            os.environ["BYOKCTL_MASTER_KEY"] = saved


@pytest.fixture
def env_keys(cli, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, str]]:
    old = master_key_b64()
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", old)
    assert cli("init").exit_code == 0
    return old, put_keys(cli)


def rotate(stdout: object, *, shell: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "byokctl", "vault", "rotate-master"]
    if shell is not None:
        cmd = ["sh", "-c", f'exec "$0" -m byokctl vault rotate-master {shell}', sys.executable]
    return subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=REPO,
                          env=dict(os.environ), timeout=60)


def assert_old_key_still_rules(cli, old: str, keys: dict[str, str], r) -> None:  # noqa: ANN001
    assert r.returncode == 12, r.stderr
    assert "could not be printed" in r.stderr and "old master key still opens" in r.stderr
    assert "Traceback" not in r.stderr
    assert secrets_with(old) == keys
    st = json.loads(cli("vault", "status", "--json").stdout)
    assert st["unlocked"] is True and st["rotation_pending"] is False
    assert cli("vault", "check").exit_code == 0


def test_rotate_master_to_a_full_stdout_keeps_the_old_key(cli, env_keys) -> None:
    old, keys = env_keys
    with open("/dev/full", "w") as full:
        r = rotate(full)
    assert_old_key_still_rules(cli, old, keys, r)


def test_rotate_master_to_a_closed_stdout_keeps_the_old_key(cli, env_keys) -> None:
    old, keys = env_keys
    r = rotate(None, shell=">&-")
    assert_old_key_still_rules(cli, old, keys, r)


def test_rotate_master_to_a_pipe_whose_reader_is_gone_keeps_the_old_key(cli, env_keys) -> None:
    old, keys = env_keys
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader exited before a byte was written
    try:
        r = rotate(write_end)
    finally:
        os.close(write_end)
    assert_old_key_still_rules(cli, old, keys, r)


def test_the_printed_key_takes_over_at_its_first_use(cli, env_keys, monkeypatch) -> None:
    old, keys = env_keys
    r = rotate(subprocess.PIPE)
    assert r.returncode == 0, r.stderr
    new = r.stdout.strip()
    assert len(base64.b64decode(new)) == 32 and new != old and new not in r.stderr
    # Printed but not used yet: the old key still opens, and status says a rotation waits.
    assert secrets_with(old) == keys
    assert json.loads(cli("vault", "status", "--json").stdout)["rotation_pending"] is True
    assert secrets_with(new) == keys  # first use: the data keys are re-wrapped under it
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", new)
    assert cli("vault", "status").exit_code == 0
    actions = [e["action"] for e in json.loads(cli("audit", "log", "--json").stdout)]
    assert actions[:2] == ["vault.rotate_master_finish", "vault.rotate_master"]  # newest first
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", new)
    assert json.loads(cli("vault", "status", "--json").stdout)["rotation_pending"] is False
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", old)
    r2 = cli("org", "create", "gamma")
    assert r2.exit_code == 10, r2.output  # and from then on the old one is useless
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", new)
    assert cli("vault", "check").exit_code == 0
    text = stored_text(vault_db())
    assert new.encode() not in text and old.encode() not in text


def test_a_second_rotation_before_the_first_key_was_used(cli, env_keys) -> None:
    old, keys = env_keys
    first = rotate(subprocess.PIPE).stdout.strip()
    second = rotate(subprocess.PIPE).stdout.strip()
    assert first and second and first != second
    assert secrets_with(old) == keys  # the old key held throughout
    assert secrets_with(second) == keys  # the latest printed key takes over
    with pytest.raises(Exception, match="does not open"):
        secrets_with(first)


def test_a_rekey_while_the_rotation_is_pending_keeps_both_keys_working(cli, env_keys) -> None:
    """A data key made under the old key meanwhile is still reached by the new key: the
    pending record wraps the old master key itself, not a list of data keys."""
    old, keys = env_keys
    new = rotate(subprocess.PIPE).stdout.strip()
    assert cli("vault", "rekey").exit_code == 0  # with the old key, before the new one is used
    assert secrets_with(old) == keys
    assert secrets_with(new) == keys
    with pytest.raises(Exception, match="does not open"):
        secrets_with(old)
