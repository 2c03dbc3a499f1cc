"""Storage that refuses writes, from the hostile review (issue 6/11): a full disk, a read-only
mount, a read-only vault file or directory. Each says so with exit 12 (conflict: the command
could not be carried out, the file is intact), never "internal error" and never "restore it
from a backup"; commands that only read keep working where the storage still allows reads.

The full disk and the read-only mount are real: a small tmpfs mounted by the test (we are
root). A read-only file or directory means nothing to root, so those commands run as root
without the capabilities that override file modes (`setpriv --bounding-set -dac_override...`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs; needs root")


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "mnt"
    mnt.mkdir(mode=0o700)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> Path:
    """Write into `directory` until its file system has no byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    st = os.statvfs(directory)
    assert st.f_bavail == 0
    return filler


def remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True)


def vault_with_a_key(cli, db: Path) -> str:
    assert cli("--db", str(db), "init").exit_code == 0
    assert cli("--db", str(db), "org", "create", "acme", "--plan", "growth").exit_code == 0
    secret = "sk-ant-api03-" + secrets.token_urlsafe(24)
    r = cli("--db", str(db), "key", "add", "acme", "--provider", "anthropic", "--from-stdin",
            input=secret + "\n")
    assert r.exit_code == 0, r.output
    return secret


def assert_says(r, words: str) -> None:  # noqa: ANN001
    err = getattr(r, "stderr", "")
    code = getattr(r, "exit_code", getattr(r, "returncode", None))
    assert code == 12, err
    assert words in err and "the file is intact" in err
    assert "internal error" not in err and "backup" not in err and "Traceback" not in err


def intact(cli, db: Path, secret: str) -> None:
    r = cli("--db", str(db), "vault", "check", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["keys_checked"] == 1
    r = cli("--db", str(db), "org", "list", "--json")
    assert [o["slug"] for o in json.loads(r.stdout)] == ["acme"]  # nothing half-written
    assert secret not in r.output


def test_a_full_disk_says_so(cli, tmpfs: Path, env_key) -> None:
    db = tmpfs / "vault.db"
    secret = vault_with_a_key(cli, db)
    filler = fill(tmpfs)
    for args in (("org", "create", "beta"), ("credits", "add", "acme", "5"), ("vault", "rekey"),
                 ("key", "list")):
        r = cli("--db", str(db), *args)
        assert_says(r, "the disk holding it is full; free some space")
    filler.unlink()
    intact(cli, db, secret)


def test_a_full_disk_under_the_key_file_says_so(cli, tmpfs: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYOKCTL_MASTER_KEY", raising=False)
    db, kf = tmp_path / "v" / "vault.db", tmpfs / "master.key"
    assert cli("--db", str(db), "init", "--master-key-file", str(kf)).exit_code == 0
    before = kf.read_text()
    filler = fill(tmpfs)
    r = cli("--db", str(db), "vault", "rotate-master")
    assert_says(r, "the disk holding it is full")
    assert str(tmpfs) in r.stderr  # names the key file's disk, not the vault's
    assert kf.read_text() == before  # and no temp file left behind on the full disk
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "master.key", "master.key.head"]
    filler.unlink()
    assert cli("--db", str(db), "vault", "check").exit_code == 0


def test_a_read_only_mount_says_so_and_still_reads(cli, tmpfs: Path, env_key) -> None:
    db = tmpfs / "vault.db"
    secret = vault_with_a_key(cli, db)
    remount(tmpfs, "ro")
    try:
        for args in (("org", "create", "beta"), ("vault", "rotate-master")):
            assert_says(cli("--db", str(db), *args), "mounted read-only; remount it read-write")
        for args in (("org", "list"), ("key", "list"), ("audit", "verify"), ("vault", "check")):
            r = cli("--db", str(db), *args)
            assert r.exit_code == 0, r.output
        intact(cli, db, secret)
    finally:
        remount(tmpfs, "rw")
    assert cli("--db", str(db), "org", "create", "beta").exit_code == 0


def without_dac(*args: str) -> subprocess.CompletedProcess[str]:
    """byokctl as root without the capabilities that override file modes."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    return subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner",
                           sys.executable, "-m", "byokctl", *args], capture_output=True,
                          text=True, cwd=REPO, env=dict(os.environ), timeout=60)


def test_a_read_only_vault_file_says_so(cli, tmp_path: Path, env_key) -> None:
    db = tmp_path / "v" / "vault.db"
    secret = vault_with_a_key(cli, db)
    db.chmod(0o400)
    r = without_dac("--db", str(db), "org", "create", "beta")
    assert_says(r, f"{db} is read-only for you; run `chmod u+w {db}`")
    r = without_dac("--db", str(db), "org", "list")
    assert r.returncode == 0, r.stderr
    db.chmod(0o600)
    intact(cli, db, secret)


def test_a_read_only_vault_directory_says_so(cli, tmp_path: Path, env_key) -> None:
    db = tmp_path / "v" / "vault.db"
    secret = vault_with_a_key(cli, db)
    for side in ("-wal", "-shm"):  # as after the last connection closed cleanly
        Path(f"{db}{side}").unlink(missing_ok=True)
    db.parent.chmod(0o500)
    try:
        r = without_dac("--db", str(db), "org", "create", "beta")
        assert_says(r, f"{db.parent} is read-only for you; run `chmod u+w {db.parent}`")
        r = without_dac("--db", str(db), "org", "list", "--json")
        assert r.returncode == 0, r.stderr
    finally:
        db.parent.chmod(0o700)
    intact(cli, db, secret)


def test_output_to_a_full_device_says_so(cli, tmp_path: Path, env_key) -> None:
    db = tmp_path / "v" / "vault.db"
    vault_with_a_key(cli, db)
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "byokctl", "--db", str(db), "org", "list"],
                           stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO,
                           env=dict(os.environ), timeout=60)
    assert r.returncode == 12, r.stderr
    assert "The output could not be written (No space left on device)" in r.stderr
    assert "internal error" not in r.stderr and str(db) not in r.stderr
