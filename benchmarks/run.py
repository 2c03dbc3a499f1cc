"""The whole benchmark suite in one command, one table: start-up, ask overhead and scale.

    python benchmarks/run.py [--scale 1.0] [--runs N] [--check] [--only startup,ask,scale]
                             [--json | --markdown]

start-up (benchmarks/startup.py) and ask (benchmarks/ask.py) run as their own scripts, and
their printed tables are read back into rows; scale (benchmarks/scale.py) is called in
process. Every row has a goal and PASS, FAIL, "n/a" (a full-size goal at a smaller --scale)
or "report" (no goal). With --check, exit 1 if any row FAILs. CI runs this at a tiny size
(tests/test_benchmarks.py) so the suite keeps working; the numbers are for a quiet machine
at --scale 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = ("startup", "ask", "scale")


@dataclass
class Line:
    suite: str
    name: str
    value: str
    goal: str
    status: str  # PASS | FAIL | n/a | report


def _script(name: str, args: list[str]) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args], capture_output=True,
                          text=True, cwd=HERE.parent)
    if proc.returncode not in (0, 1):  # 1: a goal failed; anything else: the script broke
        raise SystemExit(f"benchmarks/{name}.py failed ({proc.returncode}):\n{proc.stderr}")
    return proc.returncode, proc.stdout


# "byokctl org list                        95.0ms  1.53x  1.50x  ABOVE"
STARTUP_ROW = re.compile(r"^(?P<name>.+?)\s+(?P<ms>[\d.]+)ms\s+(?P<ratio>[\d.]+)x\s+"
                         r"(?P<goal>[\d.]+x|-)")
# "byokctl org list: no anthropic/openai import; no cryptography/keyring"
IMPORTS_ROW = re.compile(r"^(?P<name>byokctl [^:]+): (?P<what>.*import.*)$")


def startup(runs: int) -> list[Line]:
    _, out = _script("startup", ["--runs", str(runs)])
    lines = []
    for text in out.splitlines():
        if m := STARTUP_ROW.match(text):
            goal = m["goal"]
            ratio = float(m["ratio"])
            status = "report" if goal == "-" else "PASS" if ratio <= float(goal[:-1]) else "FAIL"
            lines.append(Line("startup", m["name"].strip(), f"{float(m['ms']):.0f} ms, "
                              f"{ratio:.2f}x floor", "-" if goal == "-" else f"<= {goal} floor",
                              status))
        elif m := IMPORTS_ROW.match(text):
            bad = "must not" in m["what"]
            lines.append(Line("startup", m["name"] + " imports", m["what"],
                              "no anthropic/openai", "FAIL" if bad else "PASS"))
    return lines or [Line("startup", "(unreadable output)", out.strip()[:200], "-", "FAIL")]


# "anthropic  no-stream     1375ms     1442ms   1.05x     3.2ms"
ASK_ROW = re.compile(r"^(?P<p>anthropic|openai)\s+(?P<mode>\S+)\s+(?P<bare>[\d.]+)ms\s+"
                     r"(?P<mine>[\d.]+)ms\s+(?P<ratio>[\d.]+)x(?:\s+(?P<inproc>[\d.]+)ms)?")
ASK_GOALS = re.compile(r"whole-process <= (?P<ratio>[\d.]+)x.*in-process <= (?P<ms>[\d.]+) ms")


def ask(runs: int) -> list[Line]:
    _, out = _script("ask", ["--runs", str(runs)])
    goals = ASK_GOALS.search(out)
    lines = []
    for text in out.splitlines():
        if not (m := ASK_ROW.match(text)):
            continue
        ratio, name = float(m["ratio"]), f"ask {m['p']} {m['mode']}"
        lines.append(Line("ask", name + " (whole process)",
                          f"{float(m['mine']):.0f} ms vs {float(m['bare']):.0f} ms bare SDK, "
                          f"{ratio:.2f}x", f"<= {goals['ratio']}x" if goals else "-",
                          _judge(ratio <= float(goals["ratio"])) if goals else "report"))
        if m["inproc"] is not None:
            ms = float(m["inproc"])
            lines.append(Line("ask", name + " (in-process overhead)", f"{ms:.1f} ms",
                              f"<= {goals['ms']} ms" if goals else "-",
                              _judge(ms <= float(goals["ms"])) if goals else "report"))
    return lines or [Line("ask", "(unreadable output)", out.strip()[:200], "-", "FAIL")]


def _judge(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def scale(factor: float, runs: int, cache: Path | None) -> tuple[list[Line], str]:
    sys.path.insert(0, str(HERE))
    import scale as bench

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
