"""Scale: byokctl on a vault of 10,000 orgs, 100,000 keys, 1,000,000 usage records and 200,000
audit entries, against the same commands on a one-org vault of the same shape.

    python benchmarks/scale.py [--scale 1.0] [--runs 5] [--check] [--cache DIR]

`--scale` multiplies the number of orgs (each has 4 members, 10 keys, 100 usage records and
20 audit entries); `--scale 0.01` is the CI size. The vault is generated through byokctl's own
services (`orgs.create`, `plans.set_plan`, `members.add`, `keys.add` sealing each secret, ...,
each writing its real audit entry), a few hundred orgs per transaction, and cached under
DIR/orgs-N-... (default: the temp dir) so that reruns start at once. A vault a tenth the
size is generated too, for memory.

Every command is timed as a whole process (`byokctl ...`, median of --runs, after one warm-up
run); peak RSS is the child's own (wait4). Goals, from the issue:
- per-org commands within 1.2x of their time on the one-org vault;
- `audit verify` and `vault check` at >= 200,000 entries/keys per second (whole process);
- `vault rekey` of 100,000 keys under 10 s;
- `export` of the whole vault within 2x the time of `org list` + `key list` of it (linear);
- memory flat in the vault's size for commands that walk the whole vault: peak RSS on the
  big vault within 1.2x of its peak on a vault a tenth the size (bounded caches fill up at
  both sizes; a one-org vault would never fill them); this includes the listings that print
  a row per org, key or audit entry (`org list`, `key list`, `audit log`, `export`, with and
  without `--json`), which stream their rows.
The absolute goals (rate, rekey time) and export's are set at full size: below --scale 1 the
start-up of the process dominates them, so they are reported but not judged. With --check, exit 1 if any
judged goal fails.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common import byokctl, compile_bytecode

FULL_ORGS = 10_000
MEMBERS = (("admin", "admin"), ("staff", "staffing"), ("iv1", "interviewer"), ("iv2", "interviewer"))
PROVIDERS = ("anthropic", "openai")
USAGE_PER_ORG = 100
ORGS_PER_TX = 250
APPLY_FULL = 1_000  # orgs in the `apply` file at --scale 1
GENERATOR = 1  # bump when the generated shape changes: old caches are not reused

RATIO_GOAL = 1.2
RATE_GOAL = 200_000  # entries or keys per second
REKEY_GOAL_S = 10.0  # for 100,000 keys
MEMORY_GOAL = 1.2
EXPORT_GOAL = 2.0  # export's time over `org list` + `key list` of the same vault
# Commands that walk the whole vault and print a row per item: streamed, so memory stays flat.
LISTINGS = (["org", "list"], ["org", "list", "--json"], ["key", "list"], ["key", "list", "--json"],
            ["audit", "log"], ["audit", "log", "--json"], ["export"], ["export", "--json"])


# ---- generating the vault -----------------------------------------------------------------------

@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def slug(i: int) -> str:
    return f"org{i:05d}"


def secret(provider: str) -> str:
    body = base64.urlsafe_b64encode(os.urandom(30)).decode()
    return ("sk-ant-api03-" if provider == "anthropic" else "sk-proj-") + body


def generate(path: Path, n_orgs: int, master_b64: str, progress: bool = False) -> dict:
    """A vault at `path` with `n_orgs` orgs, built by byokctl's services; returns its counts."""
    import random

    from byokctl.providers import catalog
    from byokctl.services import credits, keys, members, orgs, plans, usage, vaultops
    from byokctl.services.context import open_context

    rnd = random.Random(n_orgs)
    with environment(BYOKCTL_MASTER_KEY=master_b64, BYOKCTL_ACTOR="bench"):
        vaultops.init(str(path), None)
        ctx = open_context(path)
        try:
            cat = catalog.load()
            with ctx.write():
                slot = keys.prepare_add(ctx, provider="anthropic", platform=True)
                keys.add(ctx, slot, secret("anthropic"))
            started = time.monotonic()
            for lo in range(0, n_orgs, ORGS_PER_TX):
                with ctx.write():  # the services' own transactions nest as savepoints
                    for i in range(lo, min(lo + ORGS_PER_TX, n_orgs)):
                        _org(ctx, slug(i), PROVIDERS[i % 2], orgs, plans, credits, members, keys)
                if progress:
                    done = min(lo + ORGS_PER_TX, n_orgs)
                    print(f"\r  orgs {done}/{n_orgs} ({time.monotonic() - started:.0f} s)",
                          end="", file=sys.stderr, flush=True)
            # 100 `ask` records per org over the last 90 days, as `ask` writes them.
            now = time.time()
            key_of = {(r["org"], r["provider"]): (r["id"], r["fingerprint"])
                      for r in ctx.store.conn.execute(
                          "SELECT id, org, provider, fingerprint FROM keys WHERE scope = 'org'")}
            for lo in range(0, n_orgs, ORGS_PER_TX * 4):
                with ctx.write() as conn:
                    usage.insert_many(conn, (
                        _usage(rnd, cat, slug(i), PROVIDERS[i % 2], key_of, now)
                        for i in range(lo, min(lo + ORGS_PER_TX * 4, n_orgs))
                        for _ in range(USAGE_PER_ORG)))
                if progress:
                    done = min(lo + ORGS_PER_TX * 4, n_orgs)
                    print(f"\r  usage for {done}/{n_orgs} orgs ({time.monotonic() - started:.0f} s)",
                          end="", file=sys.stderr, flush=True)
            if progress:
                print(file=sys.stderr)
            ctx.store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            counts = {t: ctx.store.scalar(f"SELECT count(*) FROM {t}")  # noqa: S608
                      for t in ("orgs", "members", "keys", "usage", "audit")}
        finally:
            ctx.close()
    return counts


def _org(ctx, s: str, provider: str, orgs, plans, credits, members, keys) -> None:  # noqa: ANN001
    """One org through the services, 20 audit entries: create, plan, credits, budget, 4
    members and a role change, 10 keys (2 org, 8 personal), the BYOK provider."""
    orgs.create(ctx, s, name=f"Org {s}", plan="free", credits=0)
    plans.set_plan(ctx, s, "growth")
    credits.add(ctx, s, 1000, reason="bench")
    orgs.set_budget(ctx, s, 250.0)
    emails = [f"{who}@{s}.example" for who, _ in MEMBERS]
    for email, (_, role) in zip(emails, MEMBERS, strict=True):
        members.add(ctx, s, email, role)
    members.set_role(ctx, s, emails[3], "staffing")
    for member in (None, *emails):
        for p in PROVIDERS:
            keys.add(ctx, keys.prepare_add(ctx, provider=p, org=s, member=member), secret(p))
    change = orgs.plan_provider_change(ctx, s, provider, model=None, base_url=None, fallback=None)
    orgs.set_provider(ctx, change, lambda _change: True)


def _usage(rnd, cat, s: str, provider: str, key_of: dict, now: float):  # noqa: ANN001, ANN202
    from byokctl import clock
    from byokctl.services import usage

    model = cat.pinned(provider, None)
    key_id, fp = key_of[(s, provider)]
    tin, tout = rnd.randrange(10, 4000), rnd.randrange(10, 2000)
    ok = rnd.random() > 0.03
    ts = clock.iso(clock.datetime.fromtimestamp(now - rnd.random() * 90 * 86400, clock.UTC))
    return usage.Record(
        org=s, actor="bench", mode="byok", outcome="ok" if ok else "rate-limited",
        member=None if rnd.random() < 0.5 else f"staff@{s}.example", provider=provider,
        model=model.id, key_id=key_id, fingerprint=fp,
        input_tokens=tin if ok else 0, output_tokens=tout if ok else 0,
        cost_usd=model.cost_usd(tin, tout) if ok else 0.0, catalog_version=cat.version,
        latency_ms=rnd.randrange(200, 4000), ts=ts)


@dataclass
class Built:
    db: Path
    master_b64: str
    counts: dict
    seconds: float


def cached(cache: Path, n_orgs: int, progress: bool = False) -> Built:
    """The generated vault for `n_orgs`, from the cache when a complete one is there."""
    from byokctl.store import SCHEMA_LATEST

    where = cache / f"orgs-{n_orgs}-g{GENERATOR}-s{SCHEMA_LATEST}"
    manifest = where / "manifest.json"
    if manifest.exists():
        m = json.loads(manifest.read_text())
        return Built(where / "vault.db", m["master"], m["counts"], m["seconds"])
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True, mode=0o700)
    master = base64.b64encode(os.urandom(32)).decode()
    started = time.monotonic()
    if progress:
        print(f"generating a vault of {n_orgs} orgs in {where}", file=sys.stderr)
    counts = generate(where / "vault.db", n_orgs, master, progress)
    seconds = time.monotonic() - started
    manifest.write_text(json.dumps({"master": master, "counts": counts, "seconds": seconds}))
    return Built(where / "vault.db", master, counts, seconds)


# ---- timing -------------------------------------------------------------------------------------

@dataclass
class Sample:
    seconds: float
    rss_mb: float


# Runs the command and reports its wall time and peak RSS on the fd it is given. Linux counts the pages a
# forked child shares with its parent in the child's peak RSS, so byokctl is forked from this
# small launcher rather than from this (much bigger) process: the peak is byokctl's own.
LAUNCHER = """
import os, sys, time
fd = int(sys.argv[1])
os.set_inheritable(fd, False)
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - start
os.write(fd, f"{elapsed} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}".encode())
"""


def run_once(argv: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> Sample:
    """One whole process: its wall time and its own peak RSS."""
    report_r, report_w = os.pipe()
    try:
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", LAUNCHER, str(report_w), *argv], env=env,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                pass_fds=(report_w,))
            os.close(report_w)
            report_w = -1
            report = os.read(report_r, 200).decode()
            proc.wait()
            if not report:
                raise SystemExit(f"{' '.join(argv[1:])}: the launcher failed ({proc.returncode})")
            elapsed, rss_kb, code = report.split()
            if int(code) not in ok:
                err.seek(0)
                raise SystemExit(f"{' '.join(argv[1:])} failed ({code}): "
                                 f"{err.read().decode(errors='replace').strip()}")
    finally:
        os.close(report_r)
        if report_w != -1:
            os.close(report_w)
    return Sample(float(elapsed), int(rss_kb) / 1024)


def median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.seconds for s in samples), max(s.rss_mb for s in samples))


@dataclass
class Row:
    """One line of the report."""

    name: str
    small: Sample | None  # on the base vault: one org, or a tenth of the size for memory
    big: Sample
    goal: str
    measure: str  # what is compared with the goal: "1.03x", "310,000/s", "7.9 s"
    status: str  # PASS, FAIL, "n/a" (goal set at full size) or "report" (no goal)
    notes: list[str] = field(default_factory=list)
    base: str = "one-org"


@dataclass
class Vaults:
    small: Built
    big: Built
    work: Path  # scratch copies live here

    def env(self, built: Built) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYOKCTL_")}
        env.update(BYOKCTL_HOME=str(self.work / "home"), BYOKCTL_MASTER_KEY=built.master_b64,
                   BYOKCTL_ACTOR="bench", NO_COLOR="1")
        return env

    def copy(self, built: Built, name: str) -> Path:
        dest = self.work / name
        for suffix in ("", "-wal", "-shm"):
            Path(str(dest) + suffix).unlink(missing_ok=True)
        shutil.copyfile(built.db, dest)
        dest.chmod(0o600)  # copyfile leaves the umask's mode, which byokctl refuses for a vault
        return dest


def paired(cmd: list[str], small: tuple[Path, dict], big: tuple[Path, dict], runs: int,
           ok: tuple[int, ...] = (0,)) -> tuple[Sample, Sample]:
    """Median of `runs` on each vault, interleaved (so drift hits both), after a warm-up each."""
    exe = byokctl()
    argv = {side: [*exe, "--db", str(db), *cmd] for side, (db, _) in (("s", small), ("b", big))}
    env = {"s": small[1], "b": big[1]}
    run_once(argv["s"], env["s"], ok), run_once(argv["b"], env["b"], ok)
    got: dict[str, list[Sample]] = {"s": [], "b": []}
    for _ in range(runs):
        for side in ("s", "b"):
            got[side].append(run_once(argv[side], env[side], ok))
    return median(got["s"]), median(got["b"])


def apply_file(prefix: str, n: int) -> str:
    """An `apply` file creating n BYOK orgs with 2 members and an org key each."""
    parts = []
    for j in range(n):
        s = f"{prefix}{j:04d}"
        parts.append(
            f'[orgs.{s}]\nplan = "growth"\ncredits = 100\nprovider = "anthropic"\n'
            f'model = "haiku"\nmembers = {{ "admin@{s}.example" = "admin", '
            f'"dev@{s}.example" = "interviewer" }}\n'
            f'keys = [{{ provider = "anthropic", from_env = "BENCH_APPLY_KEY" }}]\n')
    return "\n".join(parts)


def measure(scale: float, runs: int, cache: Path, progress: bool = False) -> tuple[list[Row], dict]:
    """Generate (or reuse) the vaults, time every command; returns (rows, facts).

    Times compare the big vault with the one-org vault. Memory compares the big vault with
    one a tenth its size: a bounded cache (SQLite's pages, a sort) fills up at both sizes,
    so "flat" means no growth between them, while a one-org vault never fills it."""
    n = max(1, round(FULL_ORGS * scale))
    compile_bytecode()
    small_built = cached(cache, 1, progress)
    mid_built = cached(cache, max(1, n // 10), progress)
    big_built = cached(cache, n, progress)
    x = slug(n // 2)  # an org in the middle of the big vault; the one-org vault's is org00000
    heavy_runs = max(1, min(runs, 3))
    full = scale >= 1
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="byokctl-scale-") as tmp:
        v = Vaults(small_built, big_built, Path(tmp))
        s_env, m_env, b_env = v.env(small_built), v.env(mid_built), v.env(big_built)
        s_db, m_db, b_db = (v.copy(small_built, "small.db"), v.copy(mid_built, "mid.db"),
                            v.copy(big_built, "big.db"))
        mid_label = f"{mid_built.counts['orgs']:,} orgs"

        def org_cmd(label: str, cmd: list[str]) -> None:
            s, b = _paired_org(cmd, s_db, s_env, b_db, b_env, x, runs)
            ratio = b.seconds / s.seconds
            rows.append(Row(label.replace("{X}", "X"), s, b, f"<= {RATIO_GOAL}x one-org",
                            f"{ratio:.2f}x", "PASS" if ratio <= RATIO_GOAL else "FAIL"))

        def memory(label: str, cmd: list[str], m_path: Path, b_path: Path) -> None:
            m, b = paired(cmd, (m_path, m_env), (b_path, b_env), heavy_runs)
            ratio = b.rss_mb / m.rss_mb
            rows.append(Row(f"{label}: memory", m, b, f"peak RSS <= {MEMORY_GOAL}x at 1/10 size",
                            f"{ratio:.2f}x", "PASS" if ratio <= MEMORY_GOAL else "FAIL",
                            base=mid_label))

        org_cmd("org show X", ["org", "show", "{X}"])
        org_cmd("key list X", ["key", "list", "{X}"])
        org_cmd("resolve X", ["resolve", "{X}"])
        org_cmd("usage show X --by day", ["usage", "show", "{X}", "--by", "day"])
        org_cmd("audit log --org X --limit 50", ["audit", "log", "--org", "{X}", "--limit", "50"])

        cmd = ["usage", "show", "--by", "provider"]
        s, b = paired(cmd, (s_db, s_env), (b_db, b_env), heavy_runs)
        rows.append(Row("usage show --by provider (all)", s, b, "-", f"{b.seconds:.2f} s",
                        "report", [f"{big_built.counts['usage']:,} records"]))
        memory("usage show --by provider (all)", cmd, m_db, b_db)

        for label, cmd, items in (
            ("audit verify", ["audit", "verify"], big_built.counts["audit"]),
            ("vault check", ["vault", "check"],
             big_built.counts["audit"] + big_built.counts["keys"]),
        ):
            s, b = paired(cmd, (s_db, s_env), (b_db, b_env), heavy_runs)
            rate = items / b.seconds
            status = ("PASS" if rate >= RATE_GOAL else "FAIL") if full else "n/a"
            rows.append(Row(label, s, b, f">= {RATE_GOAL:,}/s", f"{rate:,.0f}/s", status,
                            [f"{items:,} entries/keys"]))
            memory(label, cmd, m_db, b_db)

        # rekey changes the vault: its own copies (each run re-encrypts every key again)
        s_rk, m_rk, b_rk = (v.copy(small_built, "small-rekey.db"),
                            v.copy(mid_built, "mid-rekey.db"), v.copy(big_built, "big-rekey.db"))
        s, b = paired(["vault", "rekey"], (s_rk, s_env), (b_rk, b_env), heavy_runs)
        nkeys = big_built.counts["keys"]
        per_100k = b.seconds * 100_000 / nkeys
        status = ("PASS" if per_100k < REKEY_GOAL_S else "FAIL") if full else "n/a"
        rows.append(Row("vault rekey", s, b, f"< {REKEY_GOAL_S:g} s per 100,000 keys",
                        f"{b.seconds:.2f} s", status,
                        [f"{nkeys:,} keys, {nkeys / b.seconds:,.0f} keys/s"]))
        memory("vault rekey", ["vault", "rekey"], m_rk, b_rk)

        # Whole-vault listings stream their rows: peak RSS flat between the tenth-size vault and
        # the big one, and export linear: within EXPORT_GOAL x of `org list` + `key list`.
        listed: dict[str, Sample] = {}
        for cmd in LISTINGS:
            label = " ".join(cmd)
            m, b = paired(cmd, (m_db, m_env), (b_db, b_env), heavy_runs)
            listed[label] = b
            ratio = b.rss_mb / m.rss_mb
            rows.append(Row(f"{label} (all): memory", m, b, f"peak RSS <= {MEMORY_GOAL}x at 1/10 size",
                            f"{ratio:.2f}x", "PASS" if ratio <= MEMORY_GOAL else "FAIL",
                            [f"{b.seconds:.2f} s"], base=mid_label))
        lists = listed["org list"].seconds + listed["key list"].seconds
        for label in ("export", "export --json"):
            ratio = listed[label].seconds / lists
            status = ("PASS" if ratio <= EXPORT_GOAL else "FAIL") if full else "n/a"
            rows.append(Row(f"{label} (all)", None, listed[label],
                            f"<= {EXPORT_GOAL:g}x org list + key list", f"{ratio:.2f}x", status,
                            [f"org list + key list {lists:.2f} s"]))

        # apply: each run creates its own new orgs, so every run does the same work
        napply = max(10, round(APPLY_FULL * scale))
        rows.append(_apply_row(v, s_rk, s_env, b_rk, b_env, napply, heavy_runs))
    facts = {"orgs": n, "counts": big_built.counts, "generated_s": big_built.seconds,
             "apply_orgs": napply, "mid_orgs": mid_built.counts["orgs"]}
    return rows, facts


def _paired_org(cmd: list[str], s_db: Path, s_env: dict, b_db: Path, b_env: dict, x: str,
                runs: int) -> tuple[Sample, Sample]:
    exe = byokctl()
    s_argv = [*exe, "--db", str(s_db), *(c.replace("{X}", "org00000") for c in cmd)]
    b_argv = [*exe, "--db", str(b_db), *(c.replace("{X}", x) for c in cmd)]
    run_once(s_argv, s_env), run_once(b_argv, b_env)
    s, b = [], []
    for _ in range(runs):
        s.append(run_once(s_argv, s_env))
        b.append(run_once(b_argv, b_env))
    return median(s), median(b)


def _apply_row(v: Vaults, s_db: Path, s_env: dict, b_db: Path, b_env: dict, n: int,
               runs: int) -> Row:
    exe = byokctl()
    key = {"BENCH_APPLY_KEY": secret("anthropic")}
    samples: dict[str, list[Sample]] = {"s": [], "b": []}
    for i in range(runs + 1):  # the first round warms up
        for side, db, env in (("s", s_db, s_env), ("b", b_db, b_env)):
            f = v.work / f"apply-{side}{i}.toml"
            f.write_text(apply_file(f"new{side}{i}x", n))
            sample = run_once([*exe, "--db", str(db), "apply", str(f)], {**env, **key})
            if i:
                samples[side].append(sample)
    s, b = median(samples["s"]), median(samples["b"])
    ratio = b.seconds / s.seconds
    return Row(f"apply ({n:,} new orgs)", s, b, f"<= {RATIO_GOAL}x one-org", f"{ratio:.2f}x",
               "PASS" if ratio <= RATIO_GOAL else "FAIL")


# ---- report -------------------------------------------------------------------------------------

def table(rows: list[Row]) -> str:
    head = ("command", "base vault", "big vault", "RSS base→big", "measure", "goal", "status")
    cells = [head]
    for r in rows:
        small = f"{r.base}: {r.small.seconds * 1000:,.0f} ms" if r.small else "—"
        rss = f"{r.small.rss_mb:.0f}→{r.big.rss_mb:.0f} MB" if r.small else f"{r.big.rss_mb:.0f} MB"
        cells.append((r.name, small, f"{r.big.seconds * 1000:,.0f} ms", rss, r.measure, r.goal,
                      r.status + (f" ({'; '.join(r.notes)})" if r.notes else "")))
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in cells)


def default_cache() -> Path:
    return Path(tempfile.gettempdir()) / "byokctl-bench"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 = 10,000 orgs (default)")
    ap.add_argument("--runs", type=int, default=5, help="runs per command (median reported)")
    ap.add_argument("--cache", type=Path, default=default_cache(), help="where generated vaults are kept")
    ap.add_argument("--check", action="store_true", help="exit 1 if a judged goal fails")
    opts = ap.parse_args(argv)
    rows, facts = measure(opts.scale, opts.runs, opts.cache, progress=True)
    c = facts["counts"]
    print(f"vault: {c['orgs']:,} orgs, {c['members']:,} members, {c['keys']:,} keys, "
          f"{c['usage']:,} usage records, {c['audit']:,} audit entries "
          f"(generated in {facts['generated_s']:.0f} s); X = {slug(facts['orgs'] // 2)}")
    print(table(rows))
    return 1 if opts.check and any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
