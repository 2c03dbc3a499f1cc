"""Start-up cost of byokctl, as whole processes, against the floor of importing typer.

    python benchmarks/startup.py [--runs 15] [--check [RATIO]]

Prints the median wall time of each command, its ratio to `python -c "import typer"` and the
goal (1.5x; shell completion 1.3x). With --check, exits 1 if a ratio is above its goal (or
above RATIO, when given). Also fails (exit 1) if a command that makes no provider call imports
`anthropic` or `openai` (seen with `python -X importtime`).
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from common import byokctl, compile_bytecode

GOAL, COMPLETION_GOAL = 1.5, 1.3  # the highest ratios to the floor allowed
FLOOR = "python -c 'import typer' (floor)"
HEAVY = ("anthropic", "openai")  # never on these paths (SPEC §6)
LOCKED_ONLY = ("cryptography", "keyring")  # reported: `org list` needs no vault key


def timed(cmd: list[str], env: dict[str, str], runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def imported(args: list[str], env: dict[str, str]) -> set[str]:
    """Top-level packages a command imports, from `python -X importtime -m byokctl ...`."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "byokctl", *args], env=env,
                          capture_output=True, text=True, check=True)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            names.add(name.split(".")[0])
    return names


@dataclass
class Timing:
    name: str
    seconds: float  # median wall time of the whole process
    ratio: float  # to the floor
    goal: float | None  # the highest ratio allowed; None for the floor itself


@dataclass
class Imports:
    name: str
    heavy: list[str]  # SDKs it imports (must be none)
    locked: list[str]  # cryptography/keyring, reported: reads need no vault key


def measure(runs: int = 15) -> tuple[list[Timing], list[Imports]]:
    """Time every command against the floor, then list what the cheap ones import."""
    compile_bytecode()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYOKCTL_")}
        env.update(BYOKCTL_HOME=tmp, BYOKCTL_MASTER_KEY=base64.b64encode(os.urandom(32)).decode())
        cli = byokctl()
        subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
        for slug in ("acme", "beta", "gamma"):
            subprocess.run([*cli, "org", "create", slug, "--plan", "growth", "--credits", "10"],
                           env=env, check=True, capture_output=True)
        for scope in (["acme"], ["--platform"]):
            subprocess.run([*cli, "key", "add", *scope, "--provider", "anthropic", "--from-stdin"],
                           input="sk-ant-api03-bench-" + "x" * 40, env=env, check=True,
                           capture_output=True, text=True)
        complete_env = {**env, "_BYOKCTL_COMPLETE": "complete_bash",
                        "COMP_WORDS": "byokctl org show ", "COMP_CWORD": "3"}

        # name -> (argv, environment, goal as a multiple of the floor)
        commands = {
            FLOOR: ([sys.executable, "-c", "import typer"], env, None),
            "byokctl --help": ([*cli, "--help"], env, GOAL),
            "byokctl org list": ([*cli, "org", "list"], env, GOAL),
            "byokctl key list": ([*cli, "key", "list"], env, GOAL),
            "byokctl resolve acme": ([*cli, "resolve", "acme"], env, GOAL),
            "completion: byokctl org show <TAB>": (cli, complete_env, COMPLETION_GOAL),
        }
        for cmd, cmd_env, _ in commands.values():  # warm the OS cache
            subprocess.run(cmd, env=cmd_env, capture_output=True, check=True)
        medians = {name: timed(cmd, cmd_env, runs) for name, (cmd, cmd_env, _) in commands.items()}
        floor = medians[FLOOR]
        timings = [Timing(name, t, t / floor, commands[name][2]) for name, t in medians.items()]

        imports = []
        for args in (["--help"], ["org", "list"], ["key", "list"], ["resolve", "acme"]):
            mods = imported(args, env)
            imports.append(Imports("byokctl " + " ".join(args), sorted(m for m in HEAVY if m in mods),
                                   sorted(m for m in LOCKED_ONLY if m in mods)))
    return timings, imports


def describe(i: Imports) -> str:
    if i.heavy:
        return f"imports {', '.join(i.heavy)} (must not)"
    return (f"no {'/'.join(HEAVY)} import"
            + (f"; loads {', '.join(i.locked)}" if i.locked else f"; no {'/'.join(LOCKED_ONLY)}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="runs per command (median is reported)")
    ap.add_argument("--check", type=float, metavar="RATIO", nargs="?", const=0.0,
                    help="exit 1 if a ratio is above its goal (or above RATIO x the floor)")
    opts = ap.parse_args()
    timings, imports = measure(opts.runs)

    failed = False
    print(f"{'command':<36} {'median':>9} {'ratio':>6} {'goal':>6}")
    for t in timings:
        limit = opts.check or t.goal
        over = opts.check is not None and limit is not None and t.ratio > limit
        failed |= over
        print(f"{t.name:<36} {t.seconds * 1000:>7.1f}ms {t.ratio:>5.2f}x "
              + (f"{t.goal:>5.2f}x" if t.goal else "     -") + ("  ABOVE" if over else ""))
    for i in imports:
        failed |= bool(i.heavy)
        print(f"{i.name}: {describe(i)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
