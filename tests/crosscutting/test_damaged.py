"""Damaged or foreign vault files: a file cut short (mid-page, anywhere in it), garbage, an
empty file, a vault written by a newer byokctl, and a vault opened with another vault's
master key (from $BYOKCTL_MASTER_KEY and from the keyring). Every command, whether it reads,
needs secrets or writes, fails with one clear sentence and the right exit code (or, with a
foreign key, works where it needs no secret), and leaves the file byte for byte as it was,
with no -wal/-shm beside it. (tests/store/test_store.py covers the opening checks themselves on
the smallest such files.)"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import master_key_b64

from byokctl import store

# (arguments, what they need): every kind of command, from a plain read to a rekey
COMMANDS = [
    (("org", "list"), "read"),
    (("audit", "log"), "read"),
    (("vault", "status"), "read"),
    (("key", "list"), "read"),
    (("credits", "show", "acme"), "read"),
    (("vault", "check"), "secrets"),
    (("audit", "verify"), "secrets"),
    (("credits", "add", "acme", "5"), "write"),
    (("org", "create", "zeta"), "write"),
    (("member", "add", "acme", "new@acme.com", "--role", "admin"), "write"),
    (("vault", "rekey"), "write"),
    (("vault", "rotate-master"), "write"),
    (("ask", "acme", "hello"), "write"),  # a usage record, even for a call that never happened
]


def build_vault(cli, path: Path) -> None:
    """A vault with orgs, members, keys and audit entries, whole in its main file (the WAL
    checkpointed away), so that a copy of the file alone is the complete vault."""
    assert cli("--db", str(path), "init").exit_code == 0
    lines = ['[platform]\nprovider = "anthropic"\nmodel = "haiku"\n[[platform.keys]]\n'
             'provider = "anthropic"\nfrom_env = "PLATFORM_KEY"\n']
    env = {"PLATFORM_KEY": f"sk-ant-api03-{secrets.token_urlsafe(24)}"}
    for org in ("acme", "beta", "gamma"):
        lines.append(f'[orgs.{org}]\nplan = "growth"\ncredits = 50\n[orgs.{org}.members]\n'
                     + "".join(f'"m{i}@{org}.com" = "interviewer"\n' for i in range(15)))
        for i in range(15):  # enough rows for the tables to span a dozen pages
            env[f"K_{org}_{i}"] = f"sk-ant-api03-{secrets.token_urlsafe(24)}"
            lines.append(f'[[orgs.{org}.keys]]\nprovider = "anthropic"\n'
                         f'member = "m{i}@{org}.com"\nfrom_env = "K_{org}_{i}"\n')
    (path.parent / "setup.toml").write_text("".join(lines))
    r = cli("--db", str(path), "apply", str(path.parent / "setup.toml"), env=env)
    assert r.exit_code == 0, r.output
    (path.parent / "setup.toml").unlink()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.fixture
def whole(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A complete vault (master key in $BYOKCTL_MASTER_KEY) in a directory of its own."""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    path = tmp_path / "good" / "vault.db"
    path.parent.mkdir()
    build_vault(cli, path)
    return path


def untouched(path: Path, before: bytes, listing: list[str]) -> None:
    assert path.read_bytes() == before, "the file was modified"
    assert sorted(p.name for p in path.parent.iterdir()) == listing  # no -wal/-shm left behind


def refused(cli, path: Path, code: int, words: str) -> None:
    """Every command fails with `code` and one sentence containing `words`; file untouched."""
    before, listing = path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    for args, _needs in COMMANDS:
        r = cli("--db", str(path), *args, "--json")
        assert r.exit_code == code, (args, r.output)
        assert r.stdout == ""
        err = json.loads(r.stderr)["error"]
        assert words in err["message"], (args, err)
        assert "Traceback" not in r.stderr and "\n" not in err["message"]
        r = cli("--db", str(path), *args)
        assert r.exit_code == code, (args, r.output)
        assert r.stderr.startswith("error: ") and words in r.stderr and r.stderr.count("\n") == 1
        untouched(path, before, listing)


# ---- files cut short, garbage, empty ------------------------------------------------------------

def cut(at: str, size: int, page: int) -> int:
    return {
        "inside-the-header": 60,
        "mid-first-page": page // 2,
        "mid-page-in-the-middle": (size // page // 2) * page + page // 3,
        "at-a-page-boundary": (size // page // 2) * page,
        "mid-last-page": size - page // 2,
        "one-byte-short": size - 1,
    }[at]


@pytest.mark.parametrize("at", ["inside-the-header", "mid-first-page", "mid-page-in-the-middle",
                                "at-a-page-boundary", "mid-last-page", "one-byte-short"])
def test_a_truncated_vault_is_refused_by_every_command_and_left_as_it_is(
        cli, whole: Path, tmp_path: Path, at: str) -> None:
    data = whole.read_bytes()
    page = int.from_bytes(data[16:18], "big")  # the page size, from the file's header
    assert len(data) >= 12 * page  # the cuts below land in different pages
    path = tmp_path / "cut" / "vault.db"
    path.parent.mkdir()
    path.write_bytes(data[:cut(at, len(data), page)])
    refused(cli, path, 13, "is not a usable byokctl vault")
    if at in ("mid-last-page", "one-byte-short"):  # SQLite alone would read the cut page as zeros
        r = cli("--db", str(path), "audit", "log")
        assert "it was cut short" in r.stderr and f"{page}-byte pages" in r.stderr


@pytest.mark.parametrize("content", [b"", os.urandom(3 * 4096)], ids=["empty", "garbage"])
def test_empty_and_garbage_files_are_refused_by_every_command(cli, tmp_path: Path,
                                                              content: bytes) -> None:
    path = tmp_path / "vault.db"
    path.write_bytes(content)
    refused(cli, path, 13, "is not a usable byokctl vault")


def test_a_whole_vault_from_a_newer_byokctl_is_refused_and_not_migrated(cli, whole: Path) -> None:
    conn = sqlite3.connect(whole)
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_LATEST + 1}")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    refused(cli, whole, 13, f"written by a newer byokctl (schema {store.SCHEMA_LATEST + 1}")
    r = cli("--db", str(whole), "org", "list")
    assert "upgrade byokctl" in r.stderr


# ---- another vault's master key -----------------------------------------------------------------

def foreign_key_refused(cli, path: Path, where: str) -> None:
    """Commands that need no secret still work; the others are vault-locked (10), naming the
    key's source and the fix; the file is untouched either way."""
    before, listing = path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    for args, needs in COMMANDS:
        if args[0] == "ask":
            continue  # below
        r = cli("--db", str(path), *args, "--json")
        if needs == "read":
            assert r.exit_code == 0, (args, r.output)
            json.loads(r.stdout)
        else:
            assert r.exit_code == 10, (args, r.output)
            err = json.loads(r.stderr)["error"]
            assert err["code"] == "vault-locked"
            assert f"The master key from {where} does not open this vault ({path})" in err["message"]
            assert "$BYOKCTL_MASTER_KEY" in err["message"]
        untouched(path, before, listing)
    status = json.loads(cli("--db", str(path), "vault", "status", "--json").stdout)
    assert status["unlocked"] is False and "does not open this vault" in status["locked_reason"]
    # `ask` records every call it refuses (SPEC §3); this one costs nothing and changes nothing else
    tables = dump(path)
    r = cli("--db", str(path), "ask", "acme", "hello", "--json")
    assert r.exit_code == 10, r.output
    assert json.loads(r.stderr)["error"]["code"] == "vault-locked"
    after = dump(path)
    assert after.pop("usage") == [("acme", "platform", "vault-locked", 0)]
    # and the record's day totals: one call, an error, nothing spent
    [(_, org, mode, _, _, *sums)] = after.pop("usage_daily")
    assert (org, mode, sums) == ("acme", "platform", [1, 1, 0, 0, 0.0, 0])
    [(_, mode, _, _, *sums)] = after.pop("usage_daily_all")
    assert (mode, sums) == ("platform", [1, 1, 0, 0, 0.0, 0])
    tables.pop("usage")
    assert tables.pop("usage_daily") == tables.pop("usage_daily_all") == []
    assert after == tables


def dump(path: Path) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = {n: conn.execute(f"SELECT * FROM {n}").fetchall() for n in names}  # noqa: S608
        tables["usage"] = conn.execute(
            "SELECT org, mode, outcome, credits_charged FROM usage").fetchall()
        return tables
    finally:
        conn.close()


def test_a_vault_opened_with_another_vaults_key_from_the_environment(
        cli, whole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other" / "vault.db"
    other.parent.mkdir()
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", key := master_key_b64())
    assert cli("--db", str(other), "init").exit_code == 0
    assert cli("--db", str(other), "vault", "check").exit_code == 0  # the key is a real vault's
    foreign_key_refused(cli, whole, "$BYOKCTL_MASTER_KEY")
    assert os.environ["BYOKCTL_MASTER_KEY"] == key


def test_a_vault_opened_with_another_vaults_key_from_the_keyring(cli, tmp_path: Path,
                                                                 isolated) -> None:
    """A copy of a vault (a restored backup, say) shares the original's keyring entry; once
    the copy rotates its master key, the entry no longer opens the original."""
    path = tmp_path / "a" / "vault.db"
    path.parent.mkdir()
    build_vault(cli, path)
    copy = tmp_path / "b" / "vault.db"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    copy.chmod(0o600)  # copyfile leaves the umask's mode, which a vault refuses
    r = cli("--db", str(copy), "vault", "rotate-master")
    assert r.exit_code == 0, r.output
    vault_id = dict(dump(path)["meta"])["vault_id"]
    assert [e for e in isolated.entries if not e[1].endswith(".head")] == [
        ("byokctl", f"vault-{vault_id}")]  # one shared key entry (beside the audit head's)
    foreign_key_refused(cli, path, f"the OS keyring (byokctl/vault-{vault_id})")
    assert cli("--db", str(copy), "vault", "check").exit_code == 0  # the copy is fine
