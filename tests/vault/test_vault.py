"""The vault: master-key sources and their failures, rotate-master (with crashes), rekey (with
interruptions, including kill -9), and `vault check` naming broken rows."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, connect, master_key_b64, run, run_proc, vault_db

from byokctl.errors import Integrity
from byokctl.services import integrity, vaultops
from byokctl.services import keys as keys_service
from byokctl.services.context import open_context
from byokctl.vault import master as mk

# ---- helpers ------------------------------------------------------------------------------------

def put_key(org: str, provider: str = "anthropic") -> tuple[str, str]:
    """Store a fresh org key with `key add --from-stdin`; returns (key id, secret)."""
    prefix = "sk-ant-api03-" if provider == "anthropic" else "sk-proj-"
    secret = prefix + secrets.token_urlsafe(24)
    r = run("key", "add", org, "--provider", provider, "--from-stdin", "--json", input=secret + "\n")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["id"], secret


def reveal_all() -> dict[str, str]:
    """Every stored secret, decrypted by a fresh unlock (as a new process would)."""
    ctx = open_context(None)
    try:
        vault = ctx.vault()
        return {r["id"]: vault.open(r) for r in ctx.store.all("SELECT * FROM keys")}
    finally:
        ctx.close()


def db_rows(db: Path, sql: str, params: tuple = ()) -> list[tuple]:
    conn = connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def vault_id(db: Path) -> str:
    return db_rows(db, "SELECT value FROM meta WHERE key = 'vault_id'")[0][0]


def with_keys(cli, n: int) -> dict[str, str]:
    """n org keys: acme and beta first, then org2, org3, ... (one key per org and provider)."""
    orgs = ["acme", "beta", *(f"org{i}" for i in range(2, (n + 1) // 2))]
    for org in orgs:
        assert cli("org", "create", org, "--plan", "growth").exit_code == 0
    return dict(put_key(orgs[i // 2], ("anthropic", "openai")[i % 2]) for i in range(n))


def audit_text(db: Path) -> str:
    return json.dumps(db_rows(db, "SELECT * FROM audit"))


# ---- master-key sources -------------------------------------------------------------------------

def test_init_with_the_os_keyring(cli, isolated, home: Path) -> None:
    r = cli("init", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["master_source"] == "keyring"
    entry = isolated.entries[("byokctl", f"vault-{doc['vault_id']}")]
    assert len(base64.b64decode(entry)) == 32
    assert entry not in r.output
    st = json.loads(cli("vault", "status", "--json").stdout)
    assert st["unlocked"] is True and st["master_source"] == "keyring"
    assert cli("org", "create", "acme").exit_code == 0


def test_missing_keyring_entry_is_vault_locked_but_reads_work(cli, vault: Path, isolated) -> None:
    assert cli("org", "create", "acme").exit_code == 0
    isolated.entries.clear()
    r = cli("org", "create", "beta")
    assert r.exit_code == 10, r.output
    assert "No master key for this vault in the OS keyring" in r.stderr
    assert "BYOKCTL_MASTER_KEY" in r.stderr  # names the fix
    r = cli("org", "list", "--json")
    assert r.exit_code == 0, r.output
    assert [o["slug"] for o in json.loads(r.stdout)] == ["acme"]
    assert cli("audit", "log", "--json").exit_code == 0
    st = cli("vault", "status", "--json")
    assert st.exit_code == 0 and json.loads(st.stdout)["unlocked"] is False


def test_init_refuses_two_master_key_sources(cli, tmp_path: Path, isolated) -> None:
    """$BYOKCTL_MASTER_KEY and --master-key-file together: one would be silently ignored."""
    kf = tmp_path / "master.key"
    r = cli("init", "--master-key-file", str(kf), env={"BYOKCTL_MASTER_KEY": master_key_b64()})
    assert r.exit_code == 2, r.output
    assert "Both $BYOKCTL_MASTER_KEY and --master-key-file were given" in r.stderr
    assert not kf.exists() and isolated.entries == {}
    assert not (Path(os.environ["BYOKCTL_HOME"]) / "vault.db").exists()


def test_init_with_a_master_key_file(cli, tmp_path: Path, isolated) -> None:
    kf = tmp_path / "keys" / "master.key"
    r = cli("init", "--master-key-file", str(kf), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["master_source"] == "file"
    assert stat.S_IMODE(kf.stat().st_mode) == 0o600
    assert len(base64.b64decode(kf.read_text())) == 32
    assert isolated.entries == {}  # the keyring was not used
    assert cli("org", "create", "acme").exit_code == 0

    kf.chmod(0o644)
    r = cli("org", "create", "beta")
    assert r.exit_code == 10, r.output
    assert f"chmod 600 {kf}" in r.stderr
    assert cli("org", "list").exit_code == 0

    kf.chmod(0o600)
    kf.rename(kf.with_name("elsewhere"))
    r = cli("org", "create", "beta")
    assert r.exit_code == 10, r.output
    assert "is missing; restore it" in r.stderr
    assert cli("org", "list").exit_code == 0


def test_init_with_the_environment_key(cli, monkeypatch: pytest.MonkeyPatch, isolated) -> None:
    key = master_key_b64()
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", key)
    r = cli("init", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["master_source"] == "env"
    assert isolated.entries == {}
    assert cli("org", "create", "acme").exit_code == 0

    monkeypatch.delenv("BYOKCTL_MASTER_KEY")
    r = cli("org", "create", "beta")
    assert r.exit_code == 10, r.output
    assert "set $BYOKCTL_MASTER_KEY" in r.stderr

    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())  # some other vault's key
    r = cli("org", "create", "beta", "--json")
    assert r.exit_code == 10, r.output
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "vault-locked" and "does not open this vault" in err["message"]

    monkeypatch.setenv("BYOKCTL_MASTER_KEY", "not base64!")
    r = cli("org", "create", "beta")
    assert r.exit_code == 10, r.output
    assert "not base64 of 32 bytes" in r.stderr and "not base64!" not in r.stderr

    for args in (("org", "list"), ("audit", "log"), ("vault", "status")):
        assert cli(*args).exit_code == 0, args
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", key)
    assert cli("org", "create", "beta").exit_code == 0


# ---- rotate-master ------------------------------------------------------------------------------

def test_rotate_master_keyring(cli, vault: Path, isolated) -> None:
    keys = with_keys(cli, 3)
    user = f"vault-{vault_id(vault)}"
    old = isolated.entries[("byokctl", user)]
    r = cli("vault", "rotate-master", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["master_source"] == "keyring" and doc["master_key"] is None and doc["data_keys"] == 2
    new = isolated.entries[("byokctl", user)]
    assert new != old and ("byokctl", user + ".next") not in isolated.entries
    assert new not in r.output
    assert reveal_all() == keys
    isolated.entries[("byokctl", user)] = old  # the old key no longer opens the vault
    assert cli("org", "create", "gamma").exit_code == 10
    isolated.entries[("byokctl", user)] = new
    text = audit_text(vault)
    assert "vault.rotate_master" in text and old not in text and new not in text
    assert cli("vault", "check").exit_code == 0


def test_rotate_master_key_file(cli, tmp_path: Path) -> None:
    kf = tmp_path / "master.key"
    assert cli("init", "--master-key-file", str(kf)).exit_code == 0
    keys = with_keys(cli, 2)
    old = kf.read_text()
    r = cli("vault", "rotate-master")
    assert r.exit_code == 0, r.output
    assert str(kf) in r.stdout
    assert kf.read_text() != old and stat.S_IMODE(kf.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("master")) == [
        "master.key", "master.key.head"]  # the audit head kept beside the key
    assert reveal_all() == keys
    assert kf.read_text().strip() not in audit_text(vault_db())


def test_rotate_master_env_prints_the_new_key_once(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    old = master_key_b64()
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", old)
    assert cli("init").exit_code == 0
    keys = with_keys(cli, 2)
    r = cli("vault", "rotate-master", "--json")
    assert r.exit_code == 0, r.output
    new = json.loads(r.stdout)["master_key"]
    assert len(base64.b64decode(new)) == 32 and new != old
    assert "$BYOKCTL_MASTER_KEY" in r.stderr and new not in r.stderr
    assert cli("org", "create", "gamma").exit_code == 0  # the old key opens until the new is used
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", new)
    assert reveal_all() == keys
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", old)
    assert cli("org", "create", "delta").exit_code == 10  # the new key was used: the old is useless
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", new)
    r = cli("vault", "rotate-master")  # people get the bare key on stdout
    assert r.exit_code == 0, r.output
    newer = r.stdout.strip()
    assert len(base64.b64decode(newer)) == 32 and newer not in r.stderr
    assert new not in audit_text(vault_db())


def test_rotate_master_with_an_env_override_moves_the_vault_to_env(
    cli, vault: Path, isolated, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = with_keys(cli, 2)
    user = f"vault-{vault_id(vault)}"
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", isolated.entries[("byokctl", user)])  # e.g. in CI
    r = cli("vault", "rotate-master", "--json")
    assert r.exit_code == 0, r.output
    new = json.loads(r.stdout)["master_key"]
    assert "OS keyring" in r.stderr and "only $BYOKCTL_MASTER_KEY will" in r.stderr
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", new)
    assert json.loads(cli("vault", "status", "--json").stdout)["master_source"] == "env"
    assert reveal_all() == keys
    monkeypatch.delenv("BYOKCTL_MASTER_KEY")
    r = cli("org", "create", "gamma")
    assert r.exit_code == 10 and "set $BYOKCTL_MASTER_KEY" in r.stderr


def test_rotate_master_when_the_keyring_refuses_changes_nothing(
    cli, vault: Path, isolated, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = with_keys(cli, 2)
    before = dict(isolated.entries)
    wrapped = db_rows(vault, "SELECT wrapped FROM data_keys ORDER BY id")

    def refuse(service: str, username: str, password: str) -> None:
        raise RuntimeError("keyring locked")

    monkeypatch.setattr(isolated, "set_password", refuse)
    r = cli("vault", "rotate-master")
    assert r.exit_code == 10, r.output
    assert "could not store the new master key" in r.stderr and "nothing was changed" in r.stderr
    assert isolated.entries == before
    assert db_rows(vault, "SELECT wrapped FROM data_keys ORDER BY id") == wrapped
    assert reveal_all() == keys


class Crash(BaseException):
    """Stands in for the process dying at that instant."""


def crash(*_args: object, **_kw: object) -> None:
    raise Crash


def rotate_in_process() -> None:
    ctx = open_context(None)
    try:
        vaultops.rotate_master(ctx)
    finally:
        ctx.close()


def test_keyring_crash_after_commit_recovers_from_the_next_slot(
    cli, vault: Path, isolated, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = with_keys(cli, 2)
    user = f"vault-{vault_id(vault)}"
    old = isolated.entries[("byokctl", user)]
    with monkeypatch.context() as m, pytest.raises(Crash):
        m.setattr(mk, "promote", crash)  # dies between the commit and the swap
        rotate_in_process()
    staged = isolated.entries[("byokctl", user + ".next")]
    assert isolated.entries[("byokctl", user)] == old and staged != old
    # The next command opens the vault with the staged key and finishes the swap.
    r = cli("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    assert isolated.entries[("byokctl", user)] == staged
    assert ("byokctl", user + ".next") not in isolated.entries
    assert reveal_all() == keys


def test_keyring_crash_before_commit_keeps_the_old_key(cli, vault: Path, isolated,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    keys = with_keys(cli, 2)
    user = f"vault-{vault_id(vault)}"
    old = isolated.entries[("byokctl", user)]
    from byokctl.services import vaultkeys

    with monkeypatch.context() as m, pytest.raises(Crash):
        m.setattr(vaultkeys, "rewrap", crash)  # dies inside the transaction
        rotate_in_process()
    assert isolated.entries[("byokctl", user)] == old
    assert ("byokctl", user + ".next") not in isolated.entries  # the rolled-back key was dropped
    assert reveal_all() == keys
    # A stale staged key (the process died before it could even clean up) is harmless.
    isolated.entries[("byokctl", user + ".next")] = master_key_b64()
    assert cli("org", "create", "gamma").exit_code == 0
    assert isolated.entries[("byokctl", user)] == old


def test_key_file_crash_after_commit_recovers_from_the_next_file(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kf = tmp_path / "master.key"
    assert cli("init", "--master-key-file", str(kf)).exit_code == 0
    keys = with_keys(cli, 2)
    old = kf.read_text()
    with monkeypatch.context() as m, pytest.raises(Crash):
        m.setattr(mk, "promote", crash)
        rotate_in_process()
    staged = kf.with_name("master.key.next")
    assert kf.read_text() == old and stat.S_IMODE(staged.stat().st_mode) == 0o600
    new = staged.read_text()
    r = cli("vault", "check")
    assert r.exit_code == 0, r.output
    assert kf.read_text() == new and not staged.exists()
    assert reveal_all() == keys


# ---- rekey --------------------------------------------------------------------------------------

def data_keys(db: Path) -> list[tuple]:
    return db_rows(db, "SELECT id, purpose, state FROM data_keys ORDER BY id")


def test_rekey_reencrypts_every_secret_under_a_new_data_key(cli, vault: Path) -> None:
    keys = with_keys(cli, 5)
    before = {r[0]: (r[1], r[2]) for r in db_rows(vault, "SELECT id, nonce, ciphertext FROM keys")}
    r = cli("vault", "rekey", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["reencrypted"] == 5 and doc["keys"] == 5 and doc["resumed"] is False
    assert doc["retired_data_key_ids"] == [1]
    assert data_keys(vault) == [(2, "mac", "active"), (doc["data_key_id"], "secrets", "active")]
    after = {r[0]: (r[1], r[2], r[3]) for r in
             db_rows(vault, "SELECT id, nonce, ciphertext, data_key_id FROM keys")}
    for key_id, (nonce, ct, dk) in after.items():
        assert dk == doc["data_key_id"] and (nonce, ct) != before[key_id]
    assert reveal_all() == keys
    entry = json.loads(cli("audit", "log", "--action", "vault.rekey", "--json").stdout)[0]
    assert entry["after"]["reencrypted"] == 5 and entry["after"]["keys"] == 5
    assert r.stderr == ""  # no progress bar when stderr is not a terminal
    assert cli("vault", "check").exit_code == 0


def test_rekey_interrupted_leaves_every_secret_readable_and_a_rerun_finishes(cli, vault: Path) -> None:
    keys = with_keys(cli, 7)

    def stop_after_first_batch(done: int, total: int) -> None:
        if done >= 2:
            raise KeyboardInterrupt

    ctx = open_context(None)
    with pytest.raises(KeyboardInterrupt):
        vaultops.rekey(ctx, stop_after_first_batch, batch_size=2)
    ctx.close()
    dks = data_keys(vault)
    next_id = next(i for i, p, s in dks if s == "next")
    moved = db_rows(vault, "SELECT count(*) FROM keys WHERE data_key_id = ?", (next_id,))[0][0]
    assert moved == 2  # one batch committed, the rest untouched
    assert reveal_all() == keys
    st = json.loads(cli("vault", "status", "--json").stdout)
    assert st["rekey_in_progress"] is True
    r = cli("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rekey_in_progress"] is True
    # keys added meanwhile are swept up too
    assert cli("org", "create", "late").exit_code == 0
    extra_id, extra = put_key("late")
    r = cli("vault", "rekey", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["resumed"] is True and doc["data_key_id"] == next_id and doc["reencrypted"] == 6
    assert data_keys(vault) == [(2, "mac", "active"), (next_id, "secrets", "active")]
    assert reveal_all() == {**keys, extra_id: extra}
    assert json.loads(cli("vault", "status", "--json").stdout)["rekey_in_progress"] is False


KILLER = textwrap.dedent("""
    import os, signal, sys
    from byokctl.services import vaultops
    from byokctl.services.context import open_context
    where, n = sys.argv[1], int(sys.argv[2])
    ctx = open_context(None)
    vault = ctx.vault()
    if where == "seal":  # die inside a batch's transaction, after n seals
        calls = []
        real = vault.seal
        def seal(*a, **kw):
            calls.append(1)
            if len(calls) > n:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*a, **kw)
        vault.seal = seal
    def progress(done, total):
        if where == "progress" and done >= n:
            os.kill(os.getpid(), signal.SIGKILL)
    vaultops.rekey(ctx, progress, batch_size=2)
""")


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.sqlite_only
@pytest.mark.parametrize(("where", "n"), [("progress", 0), ("progress", 4), ("seal", 3)],
                         ids=["after-new-key", "after-two-batches", "inside-a-batch"])
def test_rekey_killed_with_sigkill_then_rerun(cli, monkeypatch: pytest.MonkeyPatch, where: str,
                                              n: int) -> None:
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())  # shared with the subprocesses
    assert cli("init").exit_code == 0
    keys = with_keys(cli, 7)
    db = Path(os.environ["BYOKCTL_HOME"]) / "vault.db"
    proc = subprocess.run([sys.executable, "-c", KILLER, where, str(n)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert any(s == "next" for _, _, s in data_keys(db))
    assert reveal_all() == keys
    r = run_proc("vault", "check")
    assert r.returncode == 0, r.stderr
    r = run_proc("vault", "rekey", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["resumed"] is True
    assert [s for _, p, s in data_keys(db) if p == "secrets"] == ["active"]
    assert reveal_all() == keys


def test_a_process_unlocked_before_a_rekey_seals_under_the_new_data_key(cli, vault: Path) -> None:
    keys = with_keys(cli, 2)
    ctx = open_context(None)  # e.g. a long `apply` that unlocked before the rekey ran
    try:
        early = ctx.vault()
        assert cli("vault", "rekey").exit_code == 0  # retires the data key `early` knows
        assert cli("org", "create", "late").exit_code == 0
        with ctx.write() as conn:  # what `key add` does: seal inside the write transaction
            dk, nonce, ct = early.seal("sk-ant-api03-" + "x" * 30, key_id="key_late", scope="org",
                                       org="late", member=None, provider="anthropic", version=1)
            conn.execute(
                "INSERT INTO keys (id, scope, org, provider, data_key_id, nonce, ciphertext, hint, "
                "fingerprint, created_at) VALUES ('key_late', 'org', 'late', 'anthropic', ?, ?, ?, "
                "'…xxxx', ?, 'now')", (dk, nonce, ct, early.fingerprint("sk-ant-api03-" + "x" * 30)))
            integrity.seal(ctx, "keys", ("key_late",))  # as `key add` MACs its row
    finally:
        ctx.close()
    assert reveal_all() == {**keys, "key_late": "sk-ant-api03-" + "x" * 30}
    assert cli("vault", "check").exit_code == 0


def test_rekey_stops_on_a_broken_row_naming_it(cli, vault: Path) -> None:
    keys = with_keys(cli, 4)
    ids = sorted(keys)
    conn = connect(vault)
    conn.execute("UPDATE keys SET ciphertext = ? WHERE id = ?", (b"\x00" * 40, ids[2]))
    conn.commit()
    conn.close()
    r = cli("vault", "rekey")
    assert r.exit_code == 13, r.output
    assert ids[2] in r.stderr and "vault rekey` again" in r.stderr
    del keys[ids[2]]
    readable = {k: v for k, v in reveal_all_but(ids[2]).items()}
    assert readable == keys
    conn = connect(vault)
    conn.execute("DELETE FROM keys WHERE id = ?", (ids[2],))
    conn.commit()
    conn.close()
    r = cli("vault", "rekey", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["resumed"] is True
    assert reveal_all() == keys


def reveal_all_but(skip: str) -> dict[str, str]:
    ctx = open_context(None)
    try:
        vault = ctx.vault()
        return {r["id"]: vault.open(r) for r in ctx.store.all("SELECT * FROM keys WHERE id != ?", (skip,))}
    finally:
        ctx.close()


# ---- vault check --------------------------------------------------------------------------------

def test_check_clean_vault(cli, vault: Path) -> None:
    with_keys(cli, 3)
    r = cli("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    assert doc["keys_checked"] == 3 and doc["checked"] == 3 + doc["audit_checked"]
    r = cli("vault", "check")
    assert r.exit_code == 0 and "Vault OK: 3 secrets decrypted" in r.stdout


def test_check_names_a_row_carrying_another_rows_ciphertext(cli, vault: Path) -> None:
    keys = with_keys(cli, 4)
    acme = sorted(k for k, _ in db_rows(vault, "SELECT id, org FROM keys WHERE org = 'acme'"))
    beta = sorted(k for k, _ in db_rows(vault, "SELECT id, org FROM keys WHERE org = 'beta'"))
    victim, source = beta[0], acme[0]
    conn = connect(vault)
    conn.execute("UPDATE keys SET nonce = (SELECT nonce FROM keys WHERE id = ?), "
                 "ciphertext = (SELECT ciphertext FROM keys WHERE id = ?) WHERE id = ?",
                 (source, source, victim))
    conn.commit()
    conn.close()
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["keys_checked"] == 4
    assert doc["problems"] == [{"key_id": victim, "problem": doc["problems"][0]["problem"]}]
    assert "cannot be decrypted" in doc["problems"][0]["problem"]
    err = json.loads(r.stderr)["error"]
    assert err["code"] == "integrity" and victim in err["message"]
    assert keys[source] not in r.output  # the secret is never shown
    r = cli("vault", "check")
    assert r.exit_code == 13 and victim in r.stdout and victim in r.stderr
    # The other keys keep working; only the copied-onto row is refused.
    others = reveal_all_but(victim)
    assert others == {k: v for k, v in keys.items() if k != victim}
    ctx = open_context(None)
    try:
        assert keys_service.reveal(ctx, source) == keys[source]
        with pytest.raises(Integrity, match=victim):
            keys_service.reveal(ctx, victim)
    finally:
        ctx.close()
    listed = cli("key", "list", "--json")
    assert listed.exit_code == 0, listed.output
    assert sorted(k["id"] for k in json.loads(listed.stdout)) == sorted(keys)
    assert cli("org", "create", "gamma").exit_code == 0
    # The fix the message names works: a new secret for the broken row.
    r = cli("key", "rotate", victim, "--from-stdin", "--no-test", input=keys[victim] + "\n")
    assert r.exit_code == 0, r.output
    assert cli("vault", "check").exit_code == 0
    assert reveal_all() == keys


@pytest.mark.sqlite_only
def test_check_reports_every_bad_row_and_audit_tampering(cli, vault: Path) -> None:
    keys = with_keys(cli, 4)
    ids = sorted(keys)
    assert cli("org", "create", "gamma").exit_code == 0
    conn = connect(vault)
    ct = bytearray(conn.execute("SELECT ciphertext FROM keys WHERE id = ?", (ids[0],)).fetchone()[0])
    ct[10] ^= 1  # one flipped bit
    conn.execute("UPDATE keys SET ciphertext = ? WHERE id = ?", (bytes(ct), ids[0]))
    conn.execute("UPDATE keys SET org = 'gamma' WHERE id = ?", (ids[1],))  # moved to another org
    conn.execute("UPDATE keys SET fingerprint = 'fp_0000000000000000' WHERE id = ?", (ids[2],))
    # a ciphertext turned into text that is not even UTF-8: reported, no crash
    conn.execute("UPDATE keys SET ciphertext = CAST(x'ff00fe' AS TEXT) WHERE id = ?", (ids[3],))
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    conn.commit()
    conn.close()
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    problems = json.loads(r.stdout)["problems"]
    named = [p.get("key_id", p.get("seq")) for p in problems]
    assert named == [ids[0], ids[1], ids[2], ids[3], 2]
    assert "fingerprint" in problems[2]["problem"]
    message = json.loads(r.stderr)["error"]["message"]
    assert all(str(n) in message for n in named)


@pytest.mark.sqlite_only
def test_check_reads_a_row_with_text_that_is_not_utf8_and_checks_the_rest(cli, vault: Path) -> None:
    keys = with_keys(cli, 4)
    ids = sorted(keys)
    conn = connect(vault)
    conn.execute("UPDATE keys SET org = CAST(x'ff00fe' AS TEXT) WHERE id = ?", (ids[1],))
    conn.commit()
    conn.close()
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    doc = json.loads(r.stdout)
    assert doc["keys_checked"] == 4
    assert [p.get("key_id") for p in doc["problems"]] == [ids[1]]
    assert "cannot be decrypted" in doc["problems"][0]["problem"]


def test_a_personal_key_of_a_member_with_a_non_ascii_email_checks_and_rekeys(cli, vault: Path) -> None:
    """Its associated data escapes the accent (json.dumps), unlike SQLite's JSON: the bulk
    paths of `vault check` and `rekey` must still open it."""
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    assert cli("member", "add", "acme", "zoë@acme.com", "--role", "staffing").exit_code == 0
    secret = "sk-ant-api03-" + secrets.token_urlsafe(24)
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "zoë@acme.com",
            "--from-stdin", "--json", input=secret + "\n")
    assert r.exit_code == 0, r.output
    key_id = json.loads(r.stdout)["id"]
    r = cli("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["keys_checked"] == 1
    assert cli("vault", "rekey").exit_code == 0
    assert reveal_all() == {key_id: secret}
    assert cli("vault", "check").exit_code == 0


@pytest.mark.sqlite_only
def test_check_reports_damaged_storage_the_secrets_and_audit_do_not_touch(cli, vault: Path) -> None:
    """A scribbled page of the usage table: no secret or audit entry is on it, so only the
    file's own check (quick_check) can see it, and `vault check` names the file."""
    with_keys(cli, 2)
    conn = connect(vault)
    conn.execute("INSERT INTO usage (ts, org, actor, mode, outcome) VALUES ('2026-01-01', 'acme', "
                 "'tester', 'byok', 'ok')")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'usage'").fetchone()[0]
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    data = bytearray(vault.read_bytes())
    data[(root - 1) * page + 8:(root - 1) * page + 24] = b"\xff" * 16  # cell pointers scribbled
    vault.write_bytes(bytes(data))
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    doc = json.loads(r.stdout)
    assert doc["keys_checked"] == 2 and doc["audit_checked"] > 0
    assert doc["problems"] and all(p.get("file") == str(vault) for p in doc["problems"])
    assert "storage damaged" in doc["problems"][0]["problem"]
    assert "Traceback" not in r.output


def test_check_reports_a_file_check_that_raises_on_damage(tmp_path: Path) -> None:
    """SQLite may raise 'database disk image is malformed' from quick_check instead of listing
    the damage; `vault check` reports that as a storage problem rather than failing."""
    from byokctl.services.vaultops import _storage_problems
    from byokctl.store.filecheck import FileCheck

    db = tmp_path / "v.db"
    connect(db).close()
    check = FileCheck(db)
    check.conn.close()
    check.error = sqlite3.DatabaseError("database disk image is malformed")
    [problem] = _storage_problems(str(db), check)
    assert problem.to_json() == {"file": str(db),
                                 "problem": "storage damaged: database disk image is malformed"}
    check.error = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        _storage_problems(str(db), check)


def test_a_vault_s_row_macs_are_the_plain_hash_and_its_memo_only_remembers_matches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """envelope.Vault.row_mac / row_intact answer what rowmac.mac / matches answer, whatever
    the vault remembers: a changed value (one Python finds equal, too), another table,
    another MAC or a missing one never match because the same row matched before, and the
    memo stays bounded."""
    from byokctl.vault import envelope, rowmac
    from byokctl.vault.master import MasterKey

    monkeypatch.setattr(envelope, "INTACT_ROWS_KEPT", 8)
    v = envelope.Vault("v", MasterKey(b"\0" * 32, "env", "$X"), {1: os.urandom(32)}, 1, None,
                       os.urandom(32))
    row = ["acme", "Acme", "growth", 5, 0, "anthropic", None, None, "never", 5.0, None, None,
           "2026-01-01T00:00:00Z"]
    mac = v.row_mac("orgs", row)
    assert mac == rowmac.mac(v.row_key, "orgs", row)
    for _ in range(2):  # made, then remembered
        assert v.row_intact("orgs", row, mac)
    assert rowmac.matches(v.row_key, "orgs", row, mac)
    forged = [*row[:3], 10**6, *row[4:]]
    assert not v.row_intact("orgs", forged, mac)
    assert not v.row_intact("members", row, mac)
    assert not v.row_intact("orgs", row, mac[:-1] + ("0" if mac[-1] != "0" else "1"))
    assert not v.row_intact("orgs", row, None)
    assert not v.row_intact("orgs", [b"\xff"], mac)  # a value no row byokctl wrote holds
    # Equal in Python, not in the MAC: the memo must not take one for the other.
    for at, other in ((3, 5.0), (3, True), (9, 5), (4, False), (4, -0.0)):
        assert not v.row_intact("orgs", [*row[:at], other, *row[at + 1:]], mac), (at, other)
    for n in range(20):  # many rows: the memo is cleared when full, the answers stay right
        other = [f"org{n}", *row[1:]]
        assert v.row_intact("orgs", other, v.row_mac("orgs", other))
        assert len(v._intact_rows) <= 8
    assert v.row_intact("orgs", row, mac) and not v.row_intact("orgs", forged, mac)
