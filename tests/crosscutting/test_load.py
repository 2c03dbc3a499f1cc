"""Many processes writing at once: credits added, keys added and rotated in different slots of
one org, and platform-mode asks charging the same org, all started together. Every write
lands, credits add up to the unit, the audit chain verifies with contiguous sequence numbers,
and no process ever shows a user "database is locked". A writer that holds the file's lock is
waited for; one that holds it past the busy timeout gets a clear conflict error (exit 12)."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import OPENAI_TEST_KEY, REPO, master_key_b64

from byokctl import store
from byokctl.services.context import open_context

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out

# Each worker imports byokctl, says it is ready, waits for the common start signal, then runs
# its commands one after another through the real CLI entry point, in-process.
WORKER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from byokctl.cli import app
    if os.environ.get("PRELOAD_OPENAI"):
        import openai  # noqa: F401 - so the start signal is not spent importing it
    jobs = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[1] + ".ready").touch()
    while not Path(sys.argv[2]).exists():
        time.sleep(0.001)
    codes = []
    for job in jobs:
        os.environ.update(job.get("env", {}))
        code = app(args=job["args"], standalone_mode=False)
        codes.append(code if isinstance(code, int) else 0)
    Path(sys.argv[1] + ".codes").write_text(json.dumps(codes))
""")

CREDIT_WORKERS, ADDS = 8, 10
KEY_WORKERS, ROTATIONS = 4, 8
ASK_WORKERS, ASKS = 4, 4
START = 10_000


def secret(provider: str) -> str:
    return ("sk-ant-api03-" if provider == "anthropic" else "sk-proj-") + secrets.token_urlsafe(24)


def start_together(tmp_path: Path,
                   plans: list[tuple[list[dict], dict[str, str]]]) -> tuple[list[dict], float]:
    """Start one worker process per plan (its jobs, extra env); release them all at once once
    every one has imported byokctl; wait for them. Returns each one's exit codes and stderr,
    and the seconds from the release to the last one's end."""
    go = tmp_path / "go"
    procs = []
    for n, (jobs, env) in enumerate(plans):
        jobfile = tmp_path / f"worker{n}.json"
        jobfile.write_text(json.dumps(jobs))
        procs.append((jobfile, subprocess.Popen(
            [sys.executable, "-c", WORKER, str(jobfile), str(go)], cwd=REPO, text=True,
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    deadline = time.monotonic() + 60
    while not all(Path(f"{jobfile}.ready").exists() for jobfile, _ in procs):
        assert time.monotonic() < deadline, "the workers did not start"
        assert all(p.poll() is None for _, p in procs), [p.stderr.read() for _, p in procs if p.poll()]
        time.sleep(0.01)
    go.touch()
    released = time.monotonic()
    results = []
    for jobfile, p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append({"codes": json.loads(Path(f"{jobfile}.codes").read_text()), "stderr": err})
    return results, time.monotonic() - released


def test_many_writers_at_once_lose_nothing(cli, emulator, monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    assert cli("org", "create", "acme", "--plan", "growth", "--credits", str(START)).exit_code == 0
    r = cli("key", "add", "--platform", "--provider", "openai", "--from-stdin",
            input=OPENAI_TEST_KEY + "\n")
    assert r.exit_code == 0, r.output
    r = cli("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url",
            emulator.openai_base_url)
    assert r.exit_code == 0, r.output
    # key workers: each rotates its own existing org/member key and adds one new personal key
    owned, last = [], {}
    for w in range(KEY_WORKERS):
        for email in (f"a{w}@acme.com", f"b{w}@acme.com"):
            assert cli("member", "add", "acme", email, "--role", "interviewer").exit_code == 0
        r = cli("key", "add", "acme", "--provider", "anthropic", "--member", f"a{w}@acme.com",
                "--from-stdin", "--json", input=secret("anthropic") + "\n")
        assert r.exit_code == 0, r.output
        owned.append(json.loads(r.stdout)["id"])
    seq_before = json.loads(cli("audit", "log", "--limit", "1", "--json").stdout)[0]["seq"]

    plans: list[tuple[list[dict], dict[str, str]]] = []
    amounts = [[100 * w + i + 1 for i in range(ADDS)] for w in range(CREDIT_WORKERS)]
    for w in range(CREDIT_WORKERS):
        plans.append(([{"args": ["credits", "add", "acme", str(n), "--json"]} for n in amounts[w]],
                      {}))
    for w in range(KEY_WORKERS):
        jobs = []
        added = secret("openai")
        jobs.append({"args": ["key", "add", "acme", "--provider", "openai", "--member",
                              f"b{w}@acme.com", "--from-env", "S", "--json"], "env": {"S": added}})
        for _ in range(ROTATIONS):
            last[owned[w]] = secret("anthropic")
            jobs.append({"args": ["key", "rotate", owned[w], "--from-env", "S", "--no-test",
                                  "--json"], "env": {"S": last[owned[w]]}})
        last[f"b{w}@acme.com"] = added
        plans.append((jobs, {}))
    for w in range(ASK_WORKERS):
        plans.append(([{"args": ["ask", "acme", f"worker {w} question {i}", "--json",
                                 "--retries", "0"]} for i in range(ASKS)],
                      {"PRELOAD_OPENAI": "1"}))
    results, took = start_together(tmp_path, plans)
    print(f"\n{len(plans)} processes started together, {sum(len(j) for j, _ in plans)} "
          f"commands, all done in {took:.1f} s")

    for res in results:
        assert set(res["codes"]) == {0}, res
        assert "locked" not in res["stderr"].lower() and "internal error" not in res["stderr"]

    ctx = open_context(None)
    try:
        s = ctx.store
        charged, asks = s.one("SELECT sum(credits_charged), count(*) FROM usage WHERE "
                              "outcome = 'ok' AND mode = 'platform'")
        assert asks == ASK_WORKERS * ASKS and charged >= asks
        added = sum(map(sum, amounts))
        assert s.scalar("SELECT credits FROM orgs WHERE slug = 'acme'") == START + added - charged
        grants = [json.loads(a)["added"] for (a,) in s.all(
            "SELECT after FROM audit WHERE action = 'credits.add' AND seq > ?", (seq_before,))]
        assert sorted(grants) == sorted(n for ws in amounts for n in ws)
        vault = ctx.vault()
        for key_id in owned:
            row = s.one("SELECT * FROM keys WHERE id = ?", (key_id,))
            assert vault.open(row) == last[key_id] and row["version"] == 1 + ROTATIONS
        for w in range(KEY_WORKERS):
            row = s.one("SELECT * FROM keys WHERE member = ? AND provider = 'openai'",
                        (f"b{w}@acme.com",))
            assert vault.open(row) == last[f"b{w}@acme.com"]
        counts = dict(s.all("SELECT action, count(*) FROM audit WHERE seq > ? GROUP BY action",
                            (seq_before,)))
        assert counts == {"credits.add": CREDIT_WORKERS * ADDS, "key.add": KEY_WORKERS,
                          "key.rotate": KEY_WORKERS * ROTATIONS}
        seqs = [q for (q,) in s.all("SELECT seq FROM audit ORDER BY seq")]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        ctx.close()
    r = cli("audit", "verify", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True
    assert cli("vault", "check").exit_code == 0


# ---- a writer holding the file -------------------------------------------------------------------

HOLD = 3.0


@pytest.mark.sqlite_only  # holds the file's own lock (PostgreSQL: tests/store/test_postgres.py)
def test_a_write_waits_for_another_writer_to_release_the_file(cli, monkeypatch, home: Path) -> None:
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    assert cli("org", "create", "acme", "--credits", "10").exit_code == 0
    holder = sqlite3.connect(home / "vault.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program writing, e.g. a backup tool or `sqlite3`
    held = time.monotonic()
    writer = subprocess.Popen([sys.executable, "-m", "byokctl", "credits", "add", "acme", "5",
                               "--json"], cwd=REPO, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader = subprocess.run([sys.executable, "-m", "byokctl", "credits", "show", "acme", "--json"],
                            cwd=REPO, text=True, capture_output=True, timeout=30)
    assert reader.returncode == 0, reader.stderr  # a reader is not held up (WAL): done meanwhile
    assert json.loads(reader.stdout)["balance"] == 10
    time.sleep(max(0.0, HOLD - (time.monotonic() - held)))
    assert writer.poll() is None  # still waiting for the lock
    holder.execute("COMMIT")
    released = time.monotonic()
    holder.close()
    out, err = writer.communicate(timeout=30)
    finished = time.monotonic()
    assert writer.returncode == 0, err
    assert err == ""
    assert json.loads(out)["balance"] == 15
    assert finished >= released and finished - held >= HOLD
    print(f"\nwriter waited {finished - held:.2f} s behind a {HOLD:.0f} s lock, then succeeded")


@pytest.mark.sqlite_only  # holds the file's own lock (PostgreSQL: tests/store/test_postgres.py)
def test_a_lock_held_past_the_busy_timeout_is_a_clear_conflict(cli, monkeypatch, home: Path) -> None:
    """(The real timeout is 30 s; shortened here so the test does not wait that long.)"""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    assert cli("org", "create", "acme", "--credits", "10").exit_code == 0
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(home / "vault.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        for args in (("credits", "add", "acme", "5"), ("org", "create", "beta"), ("vault", "rekey")):
            r = cli(*args, "--json")
            assert r.exit_code == 12, r.output
            err = json.loads(r.stderr)["error"]
            assert err["code"] == "conflict"
            assert err["message"] == (
                f"The vault {home / 'vault.db'} is busy: another process has held its lock for "
                "over 0.2 seconds; let it finish (or stop it) and run the command again")
            r = cli(*args)
            assert r.exit_code == 12 and r.stdout == ""
            assert r.stderr.startswith("error: The vault ") and r.stderr.count("\n") == 1
            assert "locked" not in r.stderr and "internal" not in r.stderr
        assert cli("org", "list").exit_code == 0  # reads go on
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert json.loads(cli("credits", "show", "acme", "--json").stdout)["balance"] == 10
    assert cli("credits", "add", "acme", "5").exit_code == 0


@pytest.mark.sqlite_only  # holds the file's own lock (PostgreSQL: tests/store/test_postgres.py)
def test_an_exclusive_lock_is_reported_as_busy_not_as_a_damaged_file(cli, monkeypatch,
                                                                      home: Path) -> None:
    """A connection in exclusive locking mode keeps even readers out: that is a busy vault,
    never "not a usable byokctl vault ... restore it from a backup"."""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(home / "vault.db", isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("UPDATE meta SET value = value WHERE key = 'vault_id'")
    try:
        for args in (("org", "list"), ("credits", "add", "acme", "5")):
            r = cli(*args, "--json")
            assert r.exit_code == 12, r.output
            assert "is busy" in json.loads(r.stderr)["error"]["message"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert cli("org", "list").exit_code == 0
