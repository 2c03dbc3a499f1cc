"""Audit rollback, from the hostile review (issue 6/11): cutting the log's tail and putting an
older chain head back, or restoring a whole older copy of the vault (a rotated-out secret
comes back), passes `audit verify`, because each is self-consistent. An anchor kept outside
the file catches both: `audit anchor` / `audit verify --anchor FILE`, and the copy of the head
kept automatically beside a key file or in the keyring, checked at every unlock.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

import pytest
from conftest import audit_rows, connect, master_key_b64


def vault_path() -> Path | str:
    """The vault under test: its file, or (with --engine postgresql) its database URL."""
    return os.environ.get("BYOKCTL_DB") or Path(os.environ["BYOKCTL_HOME"]) / "vault.db"


def snapshot(db: Path | str, to: Path) -> Path:
    """A copy of the vault as a backup tool would take it: the file (with any side files), or
    a `pg_dump` of the database."""
    to.mkdir(mode=0o700)
    if isinstance(db, str):
        _pg_tool("pg_dump", "--format=custom", f"--file={to / 'vault.dump'}", db)
        return to
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{db}{suffix}").exists():
            shutil.copy2(f"{db}{suffix}", to / f"vault.db{suffix}")
    return to


def restore(copy: Path, db: Path | str) -> None:
    """Put the copy back: the file, or the database's tables (`pg_restore --clean`)."""
    if isinstance(db, str):
        _pg_tool("pg_restore", "--clean", "--if-exists", "--no-owner", f"--dbname={db}",
                 str(copy / "vault.dump"))
        return
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
        if (copy / f"vault.db{suffix}").exists():
            shutil.copy2(copy / f"vault.db{suffix}", f"{db}{suffix}")


def _pg_tool(tool: str, *args: str) -> None:
    import subprocess

    from pg_server import _bindir

    bindir = _bindir()
    assert bindir is not None, "the PostgreSQL client tools are not installed"
    done = subprocess.run([str(bindir / tool), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def add_key(cli) -> tuple[str, str]:
    secret = "sk-ant-api03-" + secrets.token_urlsafe(24)
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=secret + "\n")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["id"], secret


def rotate_key(cli, key_id: str) -> str:
    secret = "sk-ant-api03-" + secrets.token_urlsafe(24)
    r = cli("key", "rotate", key_id, "--from-stdin", "--no-test", input=secret + "\n")
    assert r.exit_code == 0, r.output
    return secret


def save_anchor(cli, path: Path) -> dict:
    r = cli("audit", "anchor", "--json")
    assert r.exit_code == 0, r.output
    path.write_text(r.stdout)
    return json.loads(r.stdout)


@pytest.fixture
def env_acme_vault(cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    return vault_path()


def test_audit_anchor_prints_the_verified_head(cli, env_acme_vault: Path) -> None:
    doc = json.loads(cli("audit", "anchor", "--json").stdout)
    last = audit_rows(env_acme_vault)[-1]
    assert doc == {"seq": last["seq"], "mac": last["mac"], "ts": last["ts"]}
    r = cli("audit", "anchor")
    assert r.exit_code == 0 and f"seq: {last['seq']}" in r.stdout and last["mac"] in r.stdout


def test_a_cut_tail_with_an_older_head_put_back_fails_against_the_anchor(
        cli, env_acme_vault: Path, tmp_path: Path) -> None:
    conn = connect(env_acme_vault)
    old_head = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'audit_head%'").fetchall()
    cut_after = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    conn.close()
    key_id, _ = add_key(cli)
    rotate_key(cli, key_id)
    anchor = save_anchor(cli, tmp_path / "anchor.json")
    # The attack: drop the entries after `cut_after` and put the head of that time back.
    conn = connect(env_acme_vault)
    conn.execute("DELETE FROM audit WHERE seq > ?", (cut_after,))
    conn.executemany("UPDATE meta SET value = ? WHERE key = ?", [(v, k) for k, v in old_head])
    conn.commit()
    conn.close()
    assert cli("audit", "verify").exit_code == 0  # self-consistent: nothing inside can tell
    r = cli("audit", "verify", "--anchor", str(tmp_path / "anchor.json"), "--json")
    assert r.exit_code == 13, r.output
    problems = json.loads(r.stdout)["problems"]
    assert problems == [{"seq": anchor["seq"], "problem": "the anchored entry is gone: the log "
                         "was cut, or an older copy of the vault was put back"}]
    assert f"Audit entry {anchor['seq']}" in r.stderr


def test_an_older_copy_of_the_vault_fails_against_the_anchor(cli, env_acme_vault: Path,
                                                             tmp_path: Path) -> None:
    key_id, old_secret = add_key(cli)
    backup = snapshot(env_acme_vault, tmp_path / "backup")
    rotate_key(cli, key_id)  # the old secret leaked, say, and was rotated out
    save_anchor(cli, tmp_path / "anchor.json")
    restore(backup, env_acme_vault)  # ...and an older copy of the file brings it back
    assert cli("audit", "verify").exit_code == 0
    r = cli("audit", "verify", "--anchor", str(tmp_path / "anchor.json"))
    assert r.exit_code == 13, r.output
    assert "the anchored entry is gone" in r.stderr and old_secret not in r.output


def test_an_anchor_of_the_same_seq_from_another_history_fails(cli, env_acme_vault: Path,
                                                              tmp_path: Path) -> None:
    backup = snapshot(env_acme_vault, tmp_path / "backup")
    assert cli("org", "create", "beta").exit_code == 0
    anchor = save_anchor(cli, tmp_path / "anchor.json")
    restore(backup, env_acme_vault)
    assert cli("org", "create", "gamma").exit_code == 0  # a different entry at the same seq
    assert audit_rows(env_acme_vault)[-1]["seq"] == anchor["seq"]
    r = cli("audit", "verify", "--anchor", str(tmp_path / "anchor.json"))
    assert r.exit_code == 13 and "the anchored entry was replaced" in r.stderr, r.output


def test_the_anchor_holds_while_the_log_grows(cli, env_acme_vault: Path, tmp_path: Path) -> None:
    save_anchor(cli, tmp_path / "anchor.json")
    add_key(cli)
    r = cli("audit", "verify", "--anchor", str(tmp_path / "anchor.json"))
    assert r.exit_code == 0, r.output
    anchor = json.loads((tmp_path / "anchor.json").read_text())
    (tmp_path / "anchor.txt").write_text(f"seq: {anchor['seq']}\nmac: {anchor['mac']}\n")
    assert cli("audit", "verify", "--anchor", str(tmp_path / "anchor.txt")).exit_code == 0


@pytest.mark.parametrize("text", ["", "{}", "not an anchor", '{"seq": "x", "mac": 1}'])
def test_a_file_that_is_no_anchor_is_a_usage_error(cli, env_acme_vault: Path, tmp_path: Path,
                                                   text: str) -> None:
    (tmp_path / "a.json").write_text(text)
    r = cli("audit", "verify", "--anchor", str(tmp_path / "a.json"))
    assert r.exit_code == 2 and "holds no audit anchor" in r.stderr, r.output
    r = cli("audit", "verify", "--anchor", str(tmp_path / "missing.json"))
    assert r.exit_code == 2 and "Cannot read the anchor file" in r.stderr, r.output


# ---- the head kept automatically beside the master key --------------------------------------------

def test_an_older_copy_is_refused_at_unlock_with_a_key_file(cli, tmp_path: Path) -> None:
    kf = tmp_path / "keys" / "master.key"
    assert cli("init", "--master-key-file", str(kf)).exit_code == 0
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    key_id, old_secret = add_key(cli)
    db = vault_path()
    backup = snapshot(db, tmp_path / "backup")
    rotate_key(cli, key_id)
    head = kf.with_name("master.key.head")
    last = audit_rows(db)[-1]
    assert head.read_text().strip() == f"{last['seq']}:{last['mac']}"
    assert oct(head.stat().st_mode & 0o777) == "0o600"
    restore(backup, db)
    for args in (("org", "list"), ("key", "list"), ("audit", "log")):  # never unlock: no check
        assert cli(*args).exit_code == 0, args
    for args in (("org", "create", "beta"), ("key", "test", key_id), ("vault", "status")):
        r = cli(*args)  # every command that unlocks the vault refuses it, naming the fix
        if args[-1] == "status":
            assert "no longer reaches" in r.stdout, r.output  # status reports it, as locked
            continue
        assert r.exit_code == 13, r.output
        assert f"no longer reaches entry {last['seq']} recorded in {head}" in r.stderr
        assert f"delete {head}" in r.stderr and old_secret not in r.output
    for args in (("vault", "check", "--json"), ("audit", "verify", "--json")):
        r = cli(*args)  # the checkers report it among their problems
        assert r.exit_code == 13, r.output
        problem = json.loads(r.stdout)["problems"][-1]
        assert problem["seq"] == last["seq"] and f"recorded in {head}" in problem["problem"]
    head.unlink()  # the operator restored this copy on purpose
    assert cli("vault", "check").exit_code == 0
    assert head.exists()  # ...and anchoring starts again from this copy's head


def test_a_cut_tail_is_refused_at_unlock_with_the_keyring(cli, vault: Path, isolated) -> None:
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    conn = connect(vault)
    old_head = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'audit_head%'").fetchall()
    cut_after = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    conn.close()
    add_key(cli)
    vid = dict(connect(vault).execute("SELECT key, value FROM meta").fetchall())["vault_id"]
    last = audit_rows(vault)[-1]
    assert isolated.entries[("byokctl", f"vault-{vid}.head")] == f"{last['seq']}:{last['mac']}"
    conn = connect(vault)
    conn.execute("DELETE FROM audit WHERE seq > ?", (cut_after,))
    conn.executemany("UPDATE meta SET value = ? WHERE key = ?", [(v, k) for k, v in old_head])
    conn.commit()
    conn.close()
    r = cli("key", "list", "--json")  # never unlocks: no keyring round trip, no check
    assert r.exit_code == 0, r.output
    r = cli("org", "create", "beta")
    assert r.exit_code == 13, r.output
    assert f"byokctl/vault-{vid}.head" in r.stderr and "keyring del byokctl" in r.stderr
    r = cli("vault", "check")
    assert r.exit_code == 13 and f"no longer reaches entry {last['seq']}" in r.stdout, r.output
