"""The whole benchmark suite in one command, one table: start-up, ask overhead, scale and the
master key in Vault transit and in a PKCS#11 HSM, and the Python API (the data plane in process).

    python benchmarks/run.py [--scale 1.0] [--runs N] [--check] [--only startup,ask,scale,kms,api]
                             [--json | --markdown]

Each suite (benchmarks/startup.py, ask.py, scale.py, kms.py, api.py) is called in process through its
`measure()`, which returns structured rows; each script also runs alone and prints its own
table. Every row has a goal and PASS, FAIL, "n/a" (a full-size goal at a smaller --scale)
or "report" (no goal). With --check, exit 1 if any row FAILs. CI runs this at a tiny size
(tests/crosscutting/test_benchmarks.py) so the suite keeps working; the numbers are for a quiet machine
at --scale 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = ("startup", "ask", "scale", "kms", "api")


@dataclass
class Line:
    suite: str
    name: str
    value: str
    goal: str
    status: str  # PASS | FAIL | n/a | report


def _bench(name: str):  # noqa: ANN202 - one of the benchmark scripts, as a module
    from importlib import import_module

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    return import_module(name)


def startup(runs: int) -> list[Line]:
    bench = _bench("startup")
    timings, imports = bench.measure(runs)
    lines = []
    for t in timings:
        lines.append(Line("startup", t.name, f"{t.seconds * 1000:.0f} ms, {t.ratio:.2f}x floor",
                          f"<= {t.goal:.2f}x floor" if t.goal else "-",
                          _judge(t.ratio <= t.goal) if t.goal else "report"))
    for i in imports:
        lines.append(Line("startup", i.name + " imports", bench.describe(i),
                          "no anthropic/openai", _judge(not i.heavy)))
    return lines


def ask(runs: int) -> list[Line]:
    bench = _bench("ask")
    lines = []
    for r in bench.measure(runs):
        name = f"ask {r.provider} {r.mode}"
        lines.append(Line("ask", name + " (whole process)",
                          f"{r.mine_s * 1000:.0f} ms vs {r.bare_s * 1000:.0f} ms bare SDK, "
                          f"{r.ratio:.2f}x", f"<= {bench.WHOLE_GOAL:.2f}x",
                          _judge(r.ratio <= bench.WHOLE_GOAL)))
        lines.append(Line("ask", name + " (in-process overhead)", f"{r.inproc_ms:.1f} ms",
                          f"<= {bench.INPROC_GOAL_MS:g} ms", _judge(r.inproc_ms <= bench.INPROC_GOAL_MS)))
    return lines


def kms(runs: int) -> list[Line]:
    """`key list` and `ask` with the master key in Vault transit and in a PKCS#11 HSM, beside
    the env var."""
    bench = _bench("kms")
    try:
        rows = bench.measure(runs)
    except RuntimeError as exc:  # no `bao` binary here: requirements-kms.txt
        return [Line("kms", "transit vs env var", f"not measured: {exc}", "-", "n/a")]
    lines = []
    for r in rows:
        value = (f"{r.kms_s * 1000:.0f} ms vs {r.env_s * 1000:.0f} ms env var ({r.extra_ms:+.0f} ms); "
                 f"key-manager imports: {', '.join(r.kms_imports) or 'none'}")
        if r.command.startswith("byokctl key"):  # needs no secret: nothing more to do
            ok = not r.kms_imports and r.extra_ms <= bench.KEY_LIST_SLACK_MS
            lines.append(Line("kms", f"{r.command} ({r.source})", value,
                              f"no KMS import, <= +{bench.KEY_LIST_SLACK_MS:g} ms", _judge(ok)))
        else:  # one unwrap: a transit decrypt round trip, or a login and a decrypt in the token
            lines.append(Line("kms", f"{r.command} ({r.source})", value, "-", "report"))
    return lines


def api(factor: float, runs: int, cache: Path | None) -> list[Line]:
    bench = _bench("api")
    return [Line("api", r.name, r.value, r.goal, r.status)
            for r in bench.measure(factor, runs, cache, progress=True)]


def _judge(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def scale(factor: float, runs: int, cache: Path | None) -> tuple[list[Line], str]:
    bench = _bench("scale")

    rows, facts = bench.measure(factor, runs, cache or bench.default_cache(), progress=True)
    lines = []
    for r in rows:
        small = f"{r.small.seconds * 1000:,.0f} ms {r.base}, " if r.small else ""
        rss = f"; RSS {r.small.rss_mb:.0f}->{r.big.rss_mb:.0f} MB" if r.small else ""
        notes = f" ({'; '.join(r.notes)})" if r.notes else ""
        lines.append(Line("scale", r.name, f"{small}{r.big.seconds * 1000:,.0f} ms big: "
                          f"{r.measure}{rss}{notes}", r.goal, r.status))
    c = facts["counts"]
    about = (f"scale {factor:g}: {c['orgs']:,} orgs, {c['members']:,} members, {c['keys']:,} keys, "
             f"{c['usage']:,} usage records, {c['audit']:,} audit entries")
    return lines, about


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                cpu = text.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import sqlite3

    return (f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def table(lines: list[Line]) -> str:
    head = ("suite", "measurement", "result", "goal", "status")
    cells = [head, *((x.suite, x.name, x.value, x.goal, x.status) for x in lines)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in cells)


def markdown(lines: list[Line]) -> str:
    rows = ["| suite | measurement | result | goal | status |", "|---|---|---|---|---|"]
    for x in lines:
        cells = [c.replace("<=", "≤").replace(">=", "≥").replace("->", "→").replace("<", "&lt;")
                 .replace(">", "&gt;").replace("|", "\\|")
                 for c in (x.suite, x.name, x.value, x.goal, x.status)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="size of the scale vault (1.0 = 10,000 orgs)")
    ap.add_argument("--runs", type=int, help="runs per measurement (default: each script's own)")
    ap.add_argument("--only", default=",".join(SUITES), help="comma-separated suites to run")
    ap.add_argument("--cache", type=Path, help="where scale keeps generated vaults")
    ap.add_argument("--check", action="store_true", help="exit 1 if any goal fails")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown (README)")
    opts = ap.parse_args(argv)
    only = [s.strip() for s in opts.only.split(",") if s.strip()]
    if unknown := set(only) - set(SUITES):
        ap.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")

    started = time.monotonic()
    lines: list[Line] = []
    about = ""
    if "startup" in only:
        lines += startup(opts.runs or 15)
    if "ask" in only:
        lines += ask(opts.runs or 7)
    if "scale" in only:
        rows, about = scale(opts.scale, opts.runs or 5, opts.cache)
        lines += rows
    if "kms" in only:
        lines += kms(opts.runs or 9)
    if "api" in only:
        lines += api(opts.scale, opts.runs or 50, opts.cache)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if opts.json:
        print(json.dumps({"machine": machine(), "date": when, "scale": opts.scale,
                          "rows": [asdict(x) for x in lines]}, indent=2))
    else:
        print(f"byokctl benchmarks, {when}; {machine()}")
        if about:
            print(about)
        print(markdown(lines) if opts.markdown else table(lines))
        print(f"({time.monotonic() - started:.0f} s)")
    return 1 if opts.check and any(x.status == "FAIL" for x in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
