"""Whole-vault listings at size: `audit log`, `key list`, `org list` and `export` stream their
rows (memory flat in the vault's size, output byte for byte what it was), `export` is linear,
and `usage show` totals what its groups show."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from byokctl.cli import render
from byokctl.lazy import Pairs, Rows
from byokctl.services import export as exporting
from byokctl.services.context import open_context

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out

ANT = "sk-ant-api03-" + "k" * 40


def seed(cli) -> None:  # noqa: ANN001
    """One org with two members, an org key and a personal key: the rows copied below."""
    assert cli("org", "create", "seed", "--plan", "growth").exit_code == 0
    for email in ("a@seed.example", "b@seed.example"):
        assert cli("member", "add", "seed", email, "--role", "interviewer").exit_code == 0
    for extra in ((), ("--member", "a@seed.example")):
        r = cli("key", "add", "seed", "--provider", "anthropic", *extra, "--from-stdin", input=ANT + "\n")
        assert r.exit_code == 0, r.output


def grow(db: Path, n_orgs: int, audit_per_org: int = 20) -> None:
    """`n_orgs` copies of the seed org (members, keys) and `audit_per_org` audit entries each,
    written straight into the file: the read paths never check a row's MAC."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    tables = {t: [dict(r) for r in conn.execute(f"SELECT * FROM {t} WHERE org = 'seed'")]  # noqa: S608
              for t in ("members", "keys")}
    org = dict(conn.execute("SELECT * FROM orgs WHERE slug = 'seed'").fetchone())
    seq = conn.execute("SELECT max(seq) FROM audit").fetchone()[0]
    with conn:
        for i in range(n_orgs):
            slug = f"o{i:05d}"
            rows = {"orgs": [{**org, "slug": slug, "name": f"Org {i}"}],
                    "members": [{**m, "org": slug, "email": m["email"].replace("seed", slug)}
                                for m in tables["members"]],
                    "keys": [{**k, "id": f"key_{slug}{j}", "org": slug,
                              "member": k["member"] and k["member"].replace("seed", slug)}
                             for j, k in enumerate(tables["keys"])]}
            for table, found in rows.items():
                cols = list(found[0])
                conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES "  # noqa: S608
                                 f"({', '.join('?' * len(cols))})", [tuple(r.values()) for r in found])
            entries = []
            for _ in range(audit_per_org):
                seq += 1
                entries.append((seq, "2026-11-01T10:00:00.000000Z", "bench", "credits.add", slug, slug,
                                json.dumps({"credits": seq}), json.dumps({"credits": seq + 5}), "x" * 64))
            conn.executemany("INSERT INTO audit (seq, ts, actor, action, org, target, before, after, "
                             "mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", entries)
    conn.close()


def peak_rss_mb(db: Path, *args: str) -> float:
    """The peak RSS of `byokctl --db DB ARGS` run as its own process, its stdout discarded."""
    env = {k: v for k, v in os.environ.items() if k != "BYOKCTL_MASTER_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "byokctl", "--db", str(db), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read() if proc.stderr else ""
    return usage.ru_maxrss / 1024


@pytest.fixture
def sized(cli, vault, tmp_path: Path) -> tuple[Path, Path]:
    """(a vault of 200 orgs, one of 2,000): copies of the same vault, grown."""
    seed(cli)
    small, big = tmp_path / "small.db", tmp_path / "big.db"
    conn = sqlite3.connect(vault)
    for dest in (small, big):
        conn.execute("VACUUM INTO ?", (str(dest),))
        dest.chmod(0o600)
    conn.close()
    grow(small, 200)
    grow(big, 2_000)
    return small, big


LISTINGS = [("audit", "log"), ("audit", "log", "--json"), ("key", "list"), ("key", "list", "--json"),
            ("org", "list", "--json"), ("export",), ("export", "--json")]


def test_whole_vault_listings_keep_memory_flat_in_the_vaults_size(sized) -> None:
    small, big = sized  # 4,200 vs 42,000 audit entries, 400 vs 4,000 keys
    for args in LISTINGS:
        base, grown = peak_rss_mb(small, *args), peak_rss_mb(big, *args)
        # Holding every row (as before) costs tens of MB more at 10x the size.
        assert grown <= base * 1.1 + 4, f"{' '.join(args)}: {base:.0f} MB -> {grown:.0f} MB"


def test_export_is_linear_in_the_vaults_size(sized) -> None:
    small, big = sized

    def seconds(db: Path) -> float:
        best = float("inf")
        for _ in range(3):
            ctx = open_context(db)
            try:
                started = time.perf_counter()
                snap = exporting.snapshot(ctx)
                for _piece in exporting.toml_chunks(snap):
                    pass
                best = min(best, time.perf_counter() - started)
            finally:
                ctx.close()
        return best

    ratio = seconds(big) / seconds(small)
    assert ratio < 25, f"10x the orgs and keys took {ratio:.0f}x as long (quadratic: ~100x)"


def test_export_reads_each_table_once_whatever_the_number_of_orgs(sized) -> None:
    counts = []
    for db in sized:
        ctx = open_context(db)
        statements: list[str] = []
        ctx.store.conn.set_trace_callback(statements.append)
        try:
            snap = exporting.snapshot(ctx)
            text = exporting.to_toml(snap)
        finally:
            ctx.close()
        assert text.count("\nplan = ") == (201 if db == sized[0] else 2_001)
        counts.append(len(statements))
    assert counts[0] == counts[1], counts  # not a query per org


def json_out(data: object, monkeypatch: pytest.MonkeyPatch) -> str:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    render.emit(True, data, "")
    return out.getvalue()


VALUES = [[], [1, 2.5, None, True], [{"a\x1b[31m": [1, {"b": "x\u202e\x9b"}], "c": {}}, []],
          {}, {"k": "v"}]


@pytest.mark.parametrize("value", VALUES)
def test_a_streamed_json_document_is_byte_for_byte_the_whole_one(value, monkeypatch) -> None:
    whole = json_out(value, monkeypatch)
    lazy = Rows(iter(value)) if isinstance(value, list) else Pairs(iter(value.items()))
    assert json_out(lazy, monkeypatch) == whole
    nested = {"platform": {"keys": value}, "orgs": lazy.__class__(iter(
        value if isinstance(value, list) else value.items()))}
    assert json_out(nested, monkeypatch) == json_out({"platform": {"keys": value}, "orgs": value},
                                                     monkeypatch)


def test_a_piped_table_from_a_generator_is_aligned_on_its_widest_row(monkeypatch) -> None:
    """Rows read once, the widest last and past the in-memory spool: the same layout as
    a table of a list (columns as wide as their widest cell, whitespace folded)."""
    n = 60_000  # ~5 MB of cells: spooled to a temporary file
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    rows = ((i, f"name\t{i}", None) for i in range(n))
    render.table(["id", "name", "extra"], [*rows, ("last", "w" * 90 + "\x1b", "x")], title="T")
    lines = out.getvalue().split("\n")
    width = len("w" * 90 + "\\x1b")
    assert lines[0] == "T"
    assert lines[1] == "id".ljust(5) + "  " + "name".ljust(width) + "  extra"
    assert lines[2] == "0".ljust(5) + "  " + "name 0"
    assert lines[-2] == "last   " + "w" * 90 + "\\x1b  x"
    assert len(lines) == n + 4 and lines[-1] == ""


def test_usage_totals_are_the_sum_of_the_groups(cli, vault) -> None:
    from byokctl.services import usage

    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    ctx = open_context(vault)
    try:
        with ctx.store.tx() as conn:
            usage.insert_many(conn, (usage.Record(
                org="acme", actor="t", mode="byok", outcome="ok" if i % 7 else "rate-limited",
                provider=("anthropic", "openai")[i % 2], member=f"m{i % 3}@acme.com",
                input_tokens=i, output_tokens=2 * i, cost_usd=i * 0.000123, credits_charged=i % 4)
                for i in range(500)))
    finally:
        ctx.close()
    for by in ("provider", "member", "day"):
        doc = json.loads(cli("usage", "show", "acme", "--by", by, "--json").stdout)
        assert doc["totals"]["calls"] == 500 and doc["totals"]["errors"] == 72
        for m in ("input_tokens", "output_tokens", "credits_charged"):
            assert doc["totals"][m] == sum(r[m] for r in doc["rows"])
        assert doc["totals"]["cost_usd"] == round(sum(i * 0.000123 for i in range(500)), 6)
    ctx = open_context(vault)
    statements: list[str] = []
    ctx.store.conn.set_trace_callback(statements.append)
    try:
        usage.show(ctx, None, since=None, until=None, by="provider")
    finally:
        ctx.close()
    assert sum("FROM usage" in s for s in statements) == 1, statements  # one scan of the records
    empty = json.loads(cli("usage", "show", "acme", "--since", "2000-01-01", "--until", "2000-01-02",
                           "--json").stdout)
    assert empty["rows"] == [] and empty["totals"] == {
        "calls": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0,
        "credits_charged": 0}


def test_env_names_stay_unique_once_the_names_taken_move_out_of_memory() -> None:
    taken = exporting.Taken()
    try:
        names = [exporting.env_name(f"o{i}", None, "anthropic", taken)
                 for i in range(exporting.Taken.IN_MEMORY + 500)]
        assert names[0] in taken and names[-1] in taken and "BYOKCTL_KEY_NOPE" not in taken
        # past the move, a name taken before it and one taken after it are both still taken
        assert exporting.env_name("o0", None, "anthropic", taken) == "BYOKCTL_KEY_O0_ANTHROPIC_2"
        again = exporting.env_name(f"o{len(names) - 1}", None, "anthropic", taken)
        assert again == names[-1] + "_2"
        assert exporting.env_name("o0", None, "anthropic", taken) == "BYOKCTL_KEY_O0_ANTHROPIC_3"
    finally:
        taken.close()


@pytest.mark.parametrize("args", [("audit", "log", "--json"), ("key", "list", "--json"), ("export",)])
def test_a_slow_reader_of_a_listing_never_holds_the_vault_open(sized, args) -> None:
    """Streamed rows are spooled before they are written: a reader that does not keep up
    (`| less`) must not keep the store's read transaction open, or the WAL purge after a
    rotate or a remove (which drops old ciphertext from the disk) could not finish."""
    _small, big = sized
    conn = sqlite3.connect(big, timeout=5)
    assert conn.execute("PRAGMA journal_mode = wal").fetchone()[0] == "wal"  # as byokctl opens it
    conn.execute("PRAGMA busy_timeout = 100")
    with conn:  # a WAL that is not empty: the listing's snapshot is then one a purge must wait for
        conn.execute("UPDATE orgs SET credits = credits + 1 WHERE slug = 'o00001'")
    env = {k: v for k, v in os.environ.items() if k != "BYOKCTL_MASTER_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "byokctl", "--db", str(big), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None and proc.stdout.read(1)  # it has begun to write
        time.sleep(0.3)  # and has filled the pipe: its output is far past a pipe's buffer
        with conn:  # a write after its snapshot, as a `key rotate` would make, then the purge
            conn.execute("UPDATE orgs SET credits = credits + 1 WHERE slug = 'o00000'")
        deadline, busy = time.monotonic() + 30, 1
        while busy and time.monotonic() < deadline:
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            time.sleep(0.2)
        still_writing = proc.poll() is None
        conn.close()
        assert still_writing, "the output fitted in the pipe: the test proves nothing"
        assert busy == 0, "the listing held its read transaction while its reader lagged"
    finally:
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0 and len(out) > 1 << 20
