"""Start-up cost of byokctl, as whole processes, against the floor of importing typer.

    python benchmarks/startup.py [--runs 15] [--check RATIO]

Prints the median wall time of each command and its ratio to `python -c "import typer"`;
with --check, exits 1 if any ratio is above RATIO. Also fails (exit 1) if a command that makes
no provider call imports `anthropic` or `openai` (seen with `python -X importtime`).
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("anthropic", "openai")  # never on these paths (SPEC §6)
LOCKED_ONLY = ("cryptography", "keyring")  # reported: `org list` needs no vault key


def byokctl() -> list[str]:
    exe = shutil.which("byokctl", path=str(Path(sys.executable).parent)) or shutil.which("byokctl")
    return [exe] if exe else [sys.executable, "-m", "byokctl"]


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=15, help="runs per command (median is reported)")
    ap.add_argument("--check", type=float, metavar="RATIO",
                    help="exit 1 if a command's median exceeds RATIO x the typer floor")
    opts = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BYOKCTL_")}
        env.update(BYOKCTL_HOME=tmp, BYOKCTL_MASTER_KEY=base64.b64encode(os.urandom(32)).decode())
        cli = byokctl()
        subprocess.run([*cli, "init"], env=env, check=True, capture_output=True)
        for slug in ("acme", "beta", "gamma"):
            subprocess.run([*cli, "org", "create", slug, "--plan", "growth"], env=env, check=True,
                           capture_output=True)

        commands = {
            "python -c 'import typer' (floor)": [sys.executable, "-c", "import typer"],
            "byokctl --help": [*cli, "--help"],
            "byokctl org list": [*cli, "org", "list"],
        }
        for cmd in commands.values():  # warm the OS cache and .pyc files
            subprocess.run(cmd, env=env, capture_output=True, check=True)
        medians = {name: timed(cmd, env, opts.runs) for name, cmd in commands.items()}

        floor = next(iter(medians.values()))
        failed = False
        print(f"{'command':<36} {'median':>9} {'ratio':>6}")
        for name, t in medians.items():
            ratio = t / floor
            over = opts.check is not None and ratio > opts.check
            failed |= over
            print(f"{name:<36} {t * 1000:>7.1f}ms {ratio:>5.2f}x" + ("  ABOVE --check" if over else ""))

        for args in (["--help"], ["org", "list"]):
            mods = imported(args, env)
            heavy = sorted(m for m in HEAVY if m in mods)
            locked = sorted(m for m in LOCKED_ONLY if m in mods)
            label = "byokctl " + " ".join(args)
            if heavy:
                failed = True
                print(f"{label}: imports {', '.join(heavy)} (must not)")
            else:
                print(f"{label}: no {'/'.join(HEAVY)} import"
                      + (f"; loads {', '.join(locked)}" if locked else f"; no {'/'.join(LOCKED_ONLY)}"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
