"""Attacks by another local user from the hostile review (issue 6/11): a vault or key file in
a directory others may write to, and -wal/-shm/-journal or key files planted by another uid.

The other user is real: uid/gid 65534 (nobody), through `setpriv`. Their files live under a
scratch directory in /tmp that nobody can traverse (mode 0711), since pytest's own tmp tree
is 0700 and reachable by root alone.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import master_key_b64

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to act as a second user")


def as_nobody(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           "sh", "-c", script], capture_output=True, text=True, timeout=30)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory of ours that the other user may pass through, but not list or write."""
    root = Path(tempfile.mkdtemp(prefix="byokctl-attack-", dir="/tmp"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root)


def plant(directory: Path, name: str, content: str = "") -> Path:
    """The other user creates `name` (0666, theirs) while `directory` is open to them; the
    directory is then made private again, as its owner would find it later."""
    mode = stat.S_IMODE(directory.stat().st_mode)
    directory.chmod(0o777)
    try:
        r = as_nobody(f"umask 0; printf %s '{content}' > '{directory / name}'")
        assert r.returncode == 0, r.stderr
    finally:
        directory.chmod(mode)
    planted = directory / name
    assert planted.stat().st_uid == NOBODY and stat.S_IMODE(planted.stat().st_mode) == 0o666
    return planted


def add_key(cli, db: Path) -> str:
    secret = "sk-ant-api03-" + secrets.token_urlsafe(24)
    assert cli("--db", str(db), "org", "create", "acme", "--plan", "growth").exit_code == 0
    r = cli("--db", str(db), "key", "add", "acme", "--provider", "anthropic", "--from-stdin",
            input=secret + "\n")
    assert r.exit_code == 0, r.output
    return secret


# ---- the vault's directory ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770, 0o730])
def test_init_in_a_directory_others_may_write_is_refused(cli, shared: Path, env_key, mode: int) -> None:
    d = shared / "v"
    d.mkdir()
    d.chmod(mode)
    r = cli("--db", str(d / "vault.db"), "init")
    assert r.exit_code == 13, r.output
    assert "writable by other users" in r.stderr and f"chmod 700 {d}" in r.stderr
    assert list(d.iterdir()) == []  # nothing was created there


def test_init_in_tmp_itself_is_refused(cli, env_key) -> None:
    db = Path("/tmp") / f"byokctl-{secrets.token_hex(6)}.db"
    r = cli("--db", str(db), "init")
    assert r.exit_code == 13, r.output
    assert "writable by other users" in r.stderr and not db.exists()


def test_an_existing_vault_whose_directory_became_writable_is_refused(cli, shared: Path,
                                                                      env_key) -> None:
    d = shared / "v"
    d.mkdir(mode=0o700)
    db = d / "vault.db"
    assert cli("--db", str(db), "init").exit_code == 0
    add_key(cli, db)
    d.chmod(0o1777)
    for args in (("org", "list"), ("key", "list"), ("vault", "check")):
        r = cli("--db", str(db), *args)
        assert r.exit_code == 13, r.output
        assert "writable by other users" in r.stderr and "Traceback" not in r.output
    d.chmod(0o700)
    assert cli("--db", str(db), "vault", "check").exit_code == 0


def test_a_vault_directory_owned_by_another_user_is_refused(cli, shared: Path, env_key) -> None:
    d = shared / "v"
    d.mkdir(mode=0o700)
    db = d / "vault.db"
    assert cli("--db", str(db), "init").exit_code == 0
    os.chown(d, NOBODY, NOBODY)
    r = cli("--db", str(db), "org", "list")
    assert r.exit_code == 13, r.output
    assert "belongs to another user (uid 65534)" in r.stderr


# ---- files planted beside the vault -------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
def test_a_side_file_planted_by_another_user_is_refused_and_never_written(
        cli, shared: Path, env_key, suffix: str) -> None:
    """A 0666 -wal of theirs would receive our pages (ciphertexts, wrapped data keys) for them
    to read, or feed us pages they patched."""
    d = shared / "v"
    d.mkdir(mode=0o700)
    db = d / "vault.db"
    assert cli("--db", str(db), "init").exit_code == 0
    secret = add_key(cli, db)
    planted = plant(d, db.name + suffix)
    for args in (("org", "create", "beta"), ("org", "list"), ("key", "list"), ("vault", "check")):
        r = cli("--db", str(db), *args)
        assert r.exit_code == 13, r.output
        assert f"{planted} belongs to another user (uid 65534)" in r.stderr
        assert f"rm {planted}" in r.stderr
    assert planted.stat().st_size == 0  # nothing of ours went into their file
    planted.unlink()  # the fix the message names
    r = cli("--db", str(db), "key", "list", "--json")
    assert r.exit_code == 0 and secret not in r.output
    assert [k["org"] for k in json.loads(r.stdout)] == ["acme"]


def test_a_side_file_of_ours_open_to_others_is_refused(cli, shared: Path, env_key) -> None:
    d = shared / "v"
    d.mkdir(mode=0o700)
    db = d / "vault.db"
    assert cli("--db", str(db), "init").exit_code == 0
    wal = Path(f"{db}-wal")
    wal.touch()
    wal.chmod(0o644)
    r = cli("--db", str(db), "org", "list")
    assert r.exit_code == 13 and f"chmod 600 {wal}" in r.stderr, r.output
    wal.chmod(0o600)
    assert cli("--db", str(db), "org", "list").exit_code == 0


def test_a_vault_file_open_to_others_is_refused(cli, shared: Path, env_key) -> None:
    d = shared / "v"
    d.mkdir(mode=0o700)
    db = d / "vault.db"
    assert cli("--db", str(db), "init").exit_code == 0
    db.chmod(0o644)
    r = cli("--db", str(db), "org", "list")
    assert r.exit_code == 13 and f"chmod 600 {db}" in r.stderr, r.output


# ---- the master key file -------------------------------------------------------------------------

@pytest.fixture
def key_file_vault(cli, shared: Path) -> tuple[Path, Path]:
    keys = shared / "keys"
    keys.mkdir(mode=0o700)
    kf = keys / "master.key"
    r = cli("init", "--master-key-file", str(kf))
    assert r.exit_code == 0, r.output
    return keys, kf


def test_a_planted_temp_file_never_receives_the_new_master_key(cli, key_file_vault) -> None:
    keys, kf = key_file_vault
    keys.chmod(0o711)  # others may open a file here by name (but not list or create)
    for name in ("master.key.tmp", "master.key.next.tmp"):
        plant(keys, name)
    r = cli("vault", "rotate-master")
    assert r.exit_code == 0, r.output
    for name in ("master.key.tmp", "master.key.next.tmp"):
        assert (keys / name).stat().st_size == 0  # the new key did not go into their files
    st = kf.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
    stolen = as_nobody(f"cat '{kf}'")
    assert stolen.returncode != 0 and stolen.stdout == ""
    assert cli("vault", "check").exit_code == 0


def test_a_key_file_of_another_user_is_refused(cli, key_file_vault) -> None:
    _keys, kf = key_file_vault
    os.chown(kf, NOBODY, NOBODY)
    r = cli("vault", "check")
    assert r.exit_code == 10, r.output
    assert f"The master key file {kf} belongs to another user (uid 65534)" in r.stderr


def test_a_planted_next_key_file_is_refused(cli, key_file_vault) -> None:
    """A `.next` of theirs, holding a key they know, is never taken for a staged rotation."""
    keys, kf = key_file_vault
    planted = plant(keys, "master.key.next", master_key_b64())
    r = cli("vault", "check")
    assert r.exit_code == 10, r.output
    assert f"{planted} belongs to another user" in r.stderr


def test_a_key_file_in_a_directory_others_may_write_is_refused(cli, key_file_vault) -> None:
    keys, _kf = key_file_vault
    keys.chmod(0o1777)
    r = cli("vault", "check")
    assert r.exit_code == 10, r.output
    assert f"chmod 700 {keys}" in r.stderr
    keys.chmod(0o700)
    assert cli("vault", "check").exit_code == 0


def test_init_with_a_key_file_in_tmp_is_refused(cli) -> None:
    kf = Path("/tmp") / f"byokctl-{secrets.token_hex(6)}.key"
    r = cli("init", "--master-key-file", str(kf))
    assert r.exit_code == 10, r.output
    assert "writable by other users" in r.stderr and not kf.exists()
