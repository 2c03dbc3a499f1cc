"""Secret hygiene: a distinctive secret never reaches the vault's files in plaintext, any
command's output, the audit log or argv; rotate and remove purge the old ciphertext."""

from __future__ import annotations

import json
import os
import pty
import secrets
import select
import sqlite3
import string
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, master_key_b64, run_proc

ALPHABET = string.ascii_letters + string.digits


def distinctive(prefix: str = "sk-ant-api03-") -> str:
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(40))


def vault_files(db: Path) -> dict[str, bytes]:
    """Raw bytes of the vault and its WAL/SHM companions (those that exist)."""
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db) + suffix)
        if p.exists():
            out[p.name] = p.read_bytes()
    return out


def assert_absent(db: Path, *needles: bytes) -> None:
    for name, data in vault_files(db).items():
        for needle in needles:
            assert needle not in data, f"found in {name}"


def ciphertext(db: Path, key_id: str) -> bytes:
    conn = sqlite3.connect(db)
    try:
        return bytes(conn.execute("SELECT ciphertext FROM keys WHERE id = ?", (key_id,)).fetchone()[0])
    finally:
        conn.close()


class Outputs:
    """Every stdout/stderr a test saw, to check a secret was never among them."""

    def __init__(self, cli) -> None:
        self.cli = cli
        self.seen: list[str] = []

    def __call__(self, *args: str, input: str | None = None, code: int = 0):
        r = self.cli(*args, input=input)
        self.seen += [r.stdout, r.stderr]
        assert r.exit_code == code, r.output
        return r

    def assert_never(self, *texts: str) -> None:
        for out in self.seen:
            for text in texts:
                assert text not in out
                assert text[-12:] not in out  # not even a long tail of it


@pytest.fixture
def acme_with_interviewer(cli, acme) -> Path:
    """`acme` (conftest) with an interviewer, int@acme.com; the vault's path."""
    assert cli("member", "add", "acme", "int@acme.com", "--role", "interviewer").exit_code == 0
    return acme


@pytest.mark.sqlite_only
def test_secret_never_in_files_output_or_audit_and_old_ciphertext_is_purged(cli, acme_with_interviewer):
    db = acme_with_interviewer
    s1, s2 = distinctive(), distinctive()
    run = Outputs(cli)
    k = json.loads(run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
                       input=s1 + "\n").stdout)
    run("key", "add", "acme", "--provider", "anthropic", "--member", "int@acme.com",
        "--from-stdin", "--as", "int@acme.com", input=s1)
    run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=s1, code=12)
    run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json", input=s1, code=12)
    run("key", "list")
    run("key", "list", "acme", "--json")
    assert_absent(db, s1.encode())
    ct1 = ciphertext(db, k["id"])

    # An idle reader in another connection keeps SQLite from deleting the WAL when the
    # command's own connection closes: the purge must come from byokctl itself.
    holder = sqlite3.connect(db)
    holder.execute("SELECT count(*) FROM keys").fetchall()
    try:
        run("key", "rotate", k["id"], "--no-test", "--from-stdin", input=s2)
        run("key", "rotate", k["id"], "--from-stdin", "--json", input="sk-proj-" + s2[13:], code=7)
        ct2 = ciphertext(db, k["id"])
        files = vault_files(db)
        assert any(ct2 in data for data in files.values())  # we are reading the right bytes
        assert_absent(db, s1.encode(), s2.encode(), ct1)

        run("key", "remove", k["id"], "--yes", "--json")
        assert_absent(db, s1.encode(), s2.encode(), ct1, ct2)
    finally:
        holder.close()
    run("key", "list", "--json")
    run.assert_never(s1, s2)

    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT action, before, after FROM audit WHERE action LIKE 'key.%'").fetchall()
    finally:
        conn.close()
    assert [r[0] for r in rows] == ["key.add", "key.add", "key.rotate", "key.remove"]
    text = "\n".join(str(field) for row in rows for field in row)
    assert "…" + s2[-4:] in text  # the hints are there: these are the right rows
    for s in (s1, s2):
        assert s not in text and s[-12:] not in text


def test_error_paths_never_echo_the_secret(cli, acme_with_interviewer, monkeypatch):
    run = Outputs(cli)
    bad = {
        "openai": distinctive("sk-ant-api03-"),  # an Anthropic key offered as OpenAI
        "anthropic": distinctive("sk-ant-admin01-"),  # an admin key
    }
    for provider, secret in bad.items():
        for extra in ((), ("--json",)):
            run("key", "add", "acme", "--provider", provider, "--from-stdin", *extra,
                input=secret, code=7)
    spaced = distinctive() + " " + distinctive()
    run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=spaced, code=7)
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    locked = distinctive()
    run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
        input=locked, code=10)
    run.assert_never(*bad.values(), spaced, locked)


@pytest.mark.parametrize("argv", [
    ("key", "add", "acme", "--provider", "anthropic", "{s}"),
    ("key", "add", "{s}", "--provider", "anthropic"),
    ("key", "add", "--platform", "--provider", "anthropic", "{s}", "--json"),
    ("key", "add", "acme", "--provider", "anthropic", "--from-env", "{s}"),
    ("key", "add", "acme", "--provider", "anthropic", "--from-env={s}"),
    ("key", "add", "acme", "--provider", "{s}"),
    ("key", "add", "acme", "--provider", "anthropic", "--member", "{s}"),
    ("key", "rotate", "key_abcdefghij", "{s}"),
    ("key", "rotate", "{s}"),
    ("key", "remove", "{s}", "--yes"),
    ("key", "list", "{s}"),
    ("key", "{s}"),
])
def test_secret_on_argv_is_refused_and_not_echoed(cli, acme_with_interviewer, argv):
    secret = distinctive()
    r = cli(*(a.replace("{s}", secret) for a in argv))
    assert r.exit_code == 2, r.output
    assert "command-line argument" in r.stderr and "--from-stdin" in r.stderr
    assert secret not in r.output and secret[-12:] not in r.output
    assert r.stdout == ""
    assert_absent(acme_with_interviewer, secret.encode())


def test_no_option_takes_the_secret():
    """The only ways in are the prompt, stdin and an environment variable's NAME: the options
    that take a value are exactly these (a new one must be added here, deliberately)."""
    from typer.main import get_group

    from byokctl.cli.key import app

    valued = {
        name: sorted(o for p in command.params if not getattr(p, "is_flag", False)
                     and p.param_type_name == "option" for o in p.opts)
        for name, command in get_group(app).commands.items()
    }
    assert valued == {
        "add": ["--as", "--base-url", "--from-env", "--member", "--provider", "--retries",
                "--timeout"],
        "list": ["--as", "--provider"],
        "test": ["--as", "--base-url", "--retries", "--timeout"],
        "rotate": ["--as", "--from-env", "--retries", "--timeout"],
        "remove": ["--as"],
        "approve-endpoint": ["--as", "--base-url"],  # a URL, never a secret
        "revoke-endpoint": ["--as", "--base-url"],
    }


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_real_process_output_and_files(tmp_path):
    """The same through `python -m byokctl`, with the master key in the environment (CI)."""
    env = {"BYOKCTL_MASTER_KEY": master_key_b64(), "BYOKCTL_HOME": str(tmp_path / "proc")}
    secret, new = distinctive(), distinctive()
    outputs: list[str] = []

    def proc(*args: str, input: str | None = None, code: int = 0, extra: dict | None = None):
        p = run_proc(*args, env={**env, **(extra or {})}, input=input)
        outputs.extend([p.stdout, p.stderr])
        assert p.returncode == code, p.stdout + p.stderr
        return p

    proc("init")
    proc("org", "create", "acme", "--plan", "growth")
    k = json.loads(proc("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
                        input=secret + "\n").stdout)
    proc("key", "add", "acme", "--provider", "openai", "--from-env", "ACME_OPENAI",
         extra={"ACME_OPENAI": "sk-proj-" + secret[13:]})
    proc("key", "list")
    proc("key", "list", "--json")
    proc("key", "add", "acme", "--provider", "anthropic", secret, code=2)
    proc("key", "add", "acme", "--provider", "anthropic", secret, "--json", code=2)
    proc("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=secret, code=12)
    proc("key", "add", "--platform", "--provider", "anthropic", input="", code=2)  # no TTY
    proc("key", "rotate", k["id"], "--no-test", "--from-env", "NEW_KEY", "--json",
         extra={"NEW_KEY": new})
    proc("key", "remove", k["id"], "--yes")
    for out in outputs:
        for s in (secret, new, "sk-proj-" + secret[13:]):
            assert s not in out and s[-12:] not in out
    assert "Traceback" not in "".join(outputs)
    assert_absent(tmp_path / "proc" / "vault.db", secret.encode(), new.encode(),
                  ("sk-proj-" + secret[13:]).encode())


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_hidden_prompt_does_not_echo(tmp_path):
    """On a terminal the key is asked for with echo off, and still never printed."""
    home = tmp_path / "tty"
    env = {**os.environ, "BYOKCTL_MASTER_KEY": master_key_b64(), "BYOKCTL_HOME": str(home)}
    for args in (("init",), ("org", "create", "acme", "--plan", "growth")):
        assert run_proc(*args, env=env).returncode == 0
    secret = distinctive()
    pid, fd = pty.fork()
    if pid == 0:  # the child: its controlling terminal is the pty
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, "-m", "byokctl", "key", "add", "acme",
                                   "--provider", "anthropic"], env)
    transcript = b""

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal transcript
        deadline = time.monotonic() + timeout
        while marker not in transcript and time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                transcript += chunk

    read_until(b"(input hidden): ")  # the trailing space is written by getpass, echo off
    assert b"Anthropic API key" in transcript, transcript
    os.write(fd, secret.encode() + b"\n")
    read_until(b"Added Anthropic key")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, transcript
    assert b"Added Anthropic key" in transcript
    assert secret.encode() not in transcript and secret[-12:].encode() not in transcript
    listed = json.loads(run_proc("key", "list", "--json", env=env).stdout)
    assert listed[0]["hint"] == "…" + secret[-4:]


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.sqlite_only
def test_purge_waits_briefly_for_a_reader_then_says_so(cli, acme_with_interviewer):
    """A reader in another process that holds an old snapshot blocks the WAL purge: the
    rotation still succeeds, quickly, and says the purge is deferred."""
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=distinctive())
    key_id = json.loads(r.stdout)["id"]
    reader = sqlite3.connect(acme_with_interviewer, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM keys").fetchall()  # holds this snapshot open
    try:
        started = time.monotonic()
        r = cli("key", "rotate", key_id, "--no-test", "--from-stdin", "--json", input=distinctive())
        assert r.exit_code == 0, r.output
        assert time.monotonic() - started < 10
        assert json.loads(r.stdout)["purged"] is False
        assert "next checkpoint" in r.stderr
    finally:
        reader.execute("COMMIT")
        reader.close()


def _vault_bytes(home):
    return b"".join(f.read_bytes() for f in home.iterdir() if f.name.startswith("vault.db"))


@pytest.mark.sqlite_only
@pytest.mark.parametrize("how", ["org delete", "member remove"])
def test_cascaded_deletes_purge_the_ciphertext(cli, vault, home, how):
    """Deleting an org or a member removes their keys by cascade; the ciphertext leaves the
    file and the WAL then and there, as it does for `key remove` -- even while another process
    keeps the vault open (the last connection's close would otherwise hide a missing purge)."""
    from byokctl.services.context import open_context

    other = sqlite3.connect(vault)  # another process's idle connection keeps the WAL alive
    other.execute("SELECT count(*) FROM orgs").fetchone()
    cli("org", "create", "acme", "--plan", "growth")
    cli("member", "add", "acme", "ann@acme.com", "--role", "admin")
    secret = "sk-ant-api03-" + "cascade" * 6
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "ann@acme.com",
            "--from-stdin", "--json", input=secret)
    assert r.exit_code == 0, r.output
    ctx = open_context(str(vault))
    ct = ctx.store.scalar("SELECT ciphertext FROM keys")
    ctx.close()
    assert ct in _vault_bytes(home)
    args = ("org", "delete", "acme", "--yes") if how == "org delete" else (
        "member", "remove", "acme", "ann@acme.com", "--yes")
    assert cli(*args).exit_code == 0
    assert ct not in _vault_bytes(home)
    other.close()


@pytest.mark.parametrize("args", [
    ["org", "create", "acme", "--name", "sk-ant-api03-" + "n" * 30],
    ["org", "create", "sk-proj-" + "s" * 30],
    ["member", "add", "acme", "sk-ant-api03-" + "m" * 30, "--role", "admin"],
    ["credits", "add", "acme", "5", "--reason=sk-ant-api03-" + "r" * 30],
    ["ask", "acme", "sk-ant-api03-" + "p" * 30],
])
def test_any_command_refuses_a_key_on_argv_without_echoing_it(cli, vault, args):
    secret = next(a.split("=", 1)[-1] for a in args if "sk-" in a)
    r = cli(*args)
    assert r.exit_code == 2
    assert "command-line argument" in r.stderr and secret not in r.output
    from byokctl.services.context import open_context

    ctx = open_context(str(vault))
    assert ctx.store.scalar("SELECT count(*) FROM audit") == 1  # only vault.init
    ctx.close()


@pytest.mark.sqlite_only
def test_rekey_purges_the_retired_data_key_from_the_files(cli, vault, home):
    """After `vault rekey` the old wrapped data key and the old ciphertext are gone from the
    file and the WAL, even while another connection keeps the vault open."""
    from byokctl.services.context import open_context

    other = sqlite3.connect(vault)
    other.execute("SELECT count(*) FROM orgs").fetchone()
    cli("org", "create", "acme", "--plan", "growth")
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin",
            input="sk-ant-api03-" + "rekey" * 8)
    assert r.exit_code == 0, r.output
    ctx = open_context(str(vault))
    old_ct = ctx.store.scalar("SELECT ciphertext FROM keys")
    old_dk = ctx.store.scalar("SELECT wrapped FROM data_keys WHERE purpose = 'secrets'")
    ctx.close()
    assert cli("vault", "rekey").exit_code == 0
    data = _vault_bytes(home)
    assert old_ct not in data and old_dk not in data
    other.close()


def test_a_master_key_object_never_shows_the_key():
    """Its repr is what a debugger, a log line or an f-string would print."""
    import base64
    import os

    from byokctl.vault.master import MasterKey

    raw = os.urandom(32)
    m = MasterKey(raw, "env", "$BYOKCTL_MASTER_KEY")
    for text in (repr(m), str(m), f"{m}", repr([m]), repr(m._replace(pending=True))):
        assert repr(raw)[2:-1] not in text and base64.b64encode(raw).decode() not in text
        assert "source='env'" in text


@pytest.mark.parametrize("args", [
    # the old guard stood down whenever any argument was `emulator`, a valid slug
    ["org", "create", "emulator", "--name", "{s}"],
    ["member", "add", "emulator", "{s}@x.io", "--role", "admin"],
    ["emulator", "{s}"],
    ["emulator", "--valid-key", "{s}"],
    ["emulator", "serve", "--valid-key", "anthropic:sk-ant-api03-" + "t" * 30, "{s}"],
    ["emulator", "serve", "--port={s}"],
    # NAME=value is not an option, so the old guard never looked past the `=`
    ["key", "add", "acme", "--provider", "anthropic", "ANTHROPIC_API_KEY={s}"],
    ["key", "add", "acme", "--provider", "anthropic", "--from-env", "KEY={s}"],
    ["ask", "acme", "why does {s} fail?"],
    ["--db", "emulator", "org", "list", "X={s}"],
])
def test_no_argument_lets_a_key_on_argv_be_echoed(cli, acme_with_interviewer, args):
    secret = distinctive()
    argv = [a.replace("{s}", secret) for a in args]
    for extra in ([], ["--json"]):
        r = cli(*argv, *extra)
        assert r.exit_code == 2, r.output
        assert "command-line argument" in r.stderr, r.output
        assert secret not in r.output and secret[-12:] not in r.output
    assert "emulator" not in cli("org", "list").stdout  # nothing was created
    assert_absent(acme_with_interviewer, secret.encode())


def test_a_word_that_merely_contains_sk_dash_is_no_key(cli, acme_with_interviewer):
    r = cli("org", "create", "risk-assessment-team-one", "--name", "Risk-assessment-team-one")
    assert r.exit_code == 0, r.output


def test_emulator_test_keys_on_argv_are_never_echoed_in_an_error(cli):
    key = "sk-ant-api03-" + "v" * 30
    for argv in (["emulator", "serve", "--valid-key", key, "--port", "99999"],
                 ["emulator", "serve", f"--valid-key=anthropic:{key}", "--fail", "200"],
                 ["emulator", "serve", "--valid-key", key, "--bogus"]):
        r = cli(*argv)
        assert r.exit_code == 2, r.output
        assert key not in r.output and key[-12:] not in r.output
