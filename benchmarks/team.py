"""The team vault: the same vault on SQLite and on PostgreSQL, side by side, and many writers.

    python benchmarks/team.py [--scale 0.01] [--runs 5] [--writers 16] [--changes 60] [--check]

The scale benchmark's generated vault (benchmarks/scale.py, cached) is copied into a database
on a throwaway PostgreSQL server (tests/pg_server.py: initdb in a temp dir, socket only) with
`byokctl vault copy`, then the same per-org commands run on both as whole processes (median of
--runs after a warm-up). Goals, from issue 8/11:
- per-org commands on PostgreSQL within 1.5x of the same command on SQLite;
- `usage show --by provider` over every record within 0.1 s on either engine, once the day
  totals exist (the query itself, in process: a whole process adds its start-up, ~0.1 s);
- 16 writers in separate processes sustain at least 500 credit changes per second on
  PostgreSQL, with every one landing (the balance is checked).
With --check, exit 1 if a goal fails. The server's fsync is off, as in the tests: the figures
compare the engines' work, not a disk's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import scale  # noqa: E402 - the generated vault and the process timer
from common import byokctl  # noqa: E402
from pg_server import PostgresServer  # noqa: E402

RATIO_GOAL = 1.5
USAGE_GOAL_S = 0.1
WRITES_GOAL = 500  # credit changes per second

PER_ORG = [("org show X", ["org", "show", "X"]), ("key list X", ["key", "list", "X"]),
           ("resolve X", ["resolve", "X"]), ("usage show X --by day", ["usage", "show", "X", "--by", "day"]),
           ("audit log --org X --limit 50", ["audit", "log", "--org", "X", "--limit", "50"])]

QUERY = textwrap.dedent("""
    import statistics, sys, time
    from byokctl.services.context import open_context
    ctx = open_context(sys.argv[1])
    times = []
    for _ in range(int(sys.argv[2])):
        t = time.perf_counter()
        ctx.store.usage.grouped_totals("provider", org=None, since=None, until=None)
        times.append(time.perf_counter() - t)
    print(statistics.median(times))
""")

WRITER = textwrap.dedent("""
    import sys, time
    from byokctl.services import credits
    from byokctl.services.context import open_context
    ctx = open_context(sys.argv[1])
    ctx.vault()
    start = float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))  # all writers begin together
    for _ in range(int(sys.argv[2])):
        credits.add(ctx, "writers", 1)
    print(time.time())
""")


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    scale.run_once(argv, env)  # warm-up
    return statistics.median(scale.run_once(argv, env).seconds for _ in range(runs))


def measure(n_orgs: int, runs: int, writers: int, changes: int, cache: Path) -> list[dict]:
    built = scale.cached(cache, n_orgs, progress=True)
    work = Path(tempfile.mkdtemp(prefix="byokctl-team-"))
    work.chmod(0o700)
    (work / "home").mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BYOKCTL_")}
    env.update(BYOKCTL_HOME=str(work / "home"), BYOKCTL_MASTER_KEY=built.master_b64,
               BYOKCTL_ACTOR="bench", NO_COLOR="1")
    server = PostgresServer()
    rows: list[dict] = []
    try:
        url = server.database()
        lite = str(work / "vault.db")
        subprocess.run(["cp", str(built.db), lite], check=True)
        os.chmod(lite, 0o600)
        started = time.monotonic()
        subprocess.run([*byokctl(), "--db", lite, "vault", "copy", "--to", url], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        rows.append({"name": "vault copy SQLite -> PostgreSQL (checks included)",
                     "result": f"{time.monotonic() - started:.1f} s", "goal": "-", "status": "report"})
        x = scale.slug(n_orgs // 2)
        for name, args in PER_ORG:
            argv = [a.replace("X", x) if a == "X" else a for a in args]
            t_lite = timed([*byokctl(), "--db", lite, *argv], env, runs)
            t_pg = timed([*byokctl(), *argv], {**env, "BYOKCTL_DB": url}, runs)
            ratio = t_pg / t_lite
            rows.append({"name": name, "result": f"SQLite {t_lite * 1000:.0f} ms, PostgreSQL "
                         f"{t_pg * 1000:.0f} ms: {ratio:.2f}x", "goal": f"<= {RATIO_GOAL}x SQLite",
                         "status": "PASS" if ratio <= RATIO_GOAL else "FAIL"})
        for engine, db in (("SQLite", lite), ("PostgreSQL", url)):
            out = subprocess.run([sys.executable, "-c", QUERY, db, str(max(runs, 5))], env=env,
                                 capture_output=True, text=True, check=True).stdout
            q = float(out)
            whole = timed([*byokctl(), "--db", db, "usage", "show", "--by", "provider"], env, runs) \
                if engine == "SQLite" else \
                timed([*byokctl(), "usage", "show", "--by", "provider"], {**env, "BYOKCTL_DB": db}, runs)
            rows.append({"name": f"usage show --by provider (all), {engine}",
                         "result": f"query {q * 1000:.1f} ms; whole process {whole * 1000:.0f} ms "
                                   f"({built.counts.get('usage', '?'):,} records)",
                         "goal": f"query <= {USAGE_GOAL_S * 1000:.0f} ms",
                         "status": "PASS" if q <= USAGE_GOAL_S else "FAIL"})
        rows.append(_writers(url, env, writers, changes))
    finally:
        server.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return rows


def _writers(url: str, env: dict[str, str], writers: int, changes: int) -> dict:
    penv = {**env, "BYOKCTL_DB": url}
    subprocess.run([*byokctl(), "org", "create", "writers", "--credits", "0"], env=penv, check=True,
                   stdout=subprocess.DEVNULL)
    start = time.time() + 3.0  # every writer has loaded byokctl and unlocked by then
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, str(changes), str(start)], env=penv,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(writers)]
    ends = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        if p.returncode:
            raise SystemExit(f"a writer failed: {err.strip()}")
        ends.append(float(out))
    wall = max(ends) - start
    total = writers * changes
    balance = json.loads(subprocess.run([*byokctl(), "credits", "show", "writers", "--json"], env=penv,
                                        capture_output=True, text=True, check=True).stdout)["balance"]
    rate = total / wall
    landed = balance == total
    return {"name": f"{writers} writers, credit changes on PostgreSQL",
            "result": f"{total:,} in {wall:.2f} s: {rate:,.0f}/s; balance {balance:,} of {total:,}",
            "goal": f">= {WRITES_GOAL}/s, every one landing",
            "status": "PASS" if rate >= WRITES_GOAL and landed else "FAIL"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=0.01, help="1.0 = 10,000 orgs (default 0.01)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--changes", type=int, default=60, help="credit changes per writer")
    ap.add_argument("--cache", type=Path, default=scale.default_cache())
    ap.add_argument("--check", action="store_true", help="exit 1 if a goal fails")
    args = ap.parse_args(argv)
    rows = measure(max(1, int(10_000 * args.scale)), args.runs, args.writers, args.changes, args.cache)
    print("| measurement | result | goal | status |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['result']} | {r['goal']} | {r['status']} |")
    return 1 if args.check and any(r["status"] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
