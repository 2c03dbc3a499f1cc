"""The README's tour runs as written (issue 15, item 13): its commands, the "A five-minute
tour" block then its offline sub-section's, in order, in a fresh home with no OS keyring, no
provider account and no network but loopback, each exiting 0."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest
from conftest import REPO

TOUR_PORTS = ("8765", "8766")  # the ports the README names, each swapped for a free one here


def tour_blocks() -> list[str]:
    """The ```sh blocks of the tour section, up to the next `## ` section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2, "the tour and its offline sub-section"
    return blocks


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_the_tour_starts_offline():
    """Its first lines start the emulator and keep the master key out of the keyring."""
    first = [line for line in tour_blocks()[0].splitlines() if line.strip()][:3]
    assert first[0].startswith("export BYOKCTL_HOME=")
    assert first[1].startswith("byokctl emulator serve ") and first[1].rstrip().endswith("&")
    assert first[2].startswith("byokctl init --master-key-file ")
    assert "$ANTHROPIC_API_KEY" not in "".join(tour_blocks())


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    script = "\n".join(tour_blocks())
    for port in TOUR_PORTS:  # parallel test runs must not meet on a fixed port
        script = script.replace(port, _free_port())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "byokctl"  # the installed command, as this checkout
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m byokctl "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BYOKCTL_", "DBUS_")) and k not in ("ANTHROPIC_API_KEY",
                                                                   "OPENAI_API_KEY")}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
               PYTHONPATH=str(REPO), XDG_DATA_HOME=str(tmp_path / "data"),
               PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring")  # no keyring at all
    prologue = ("set -eo pipefail\n"
                "trap 'echo \"tour step failed (exit $?): $BASH_COMMAND\" >&2' ERR\n"
                "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n")  # an emulator left behind
    r = subprocess.run(["bash", "-c", prologue + script], cwd=work, env=env, capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "tour step failed" not in r.stderr
    # Both asks reached the emulator and were answered, on the key file alone.
    env["BYOKCTL_HOME"] = str(work / ".byokctl")
    after = subprocess.run([str(shim), "usage", "show", "acme", "--json"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=60)
    assert after.returncode == 0, after.stderr
    totals = json.loads(after.stdout)["totals"]
    assert (totals["calls"], totals["errors"]) == (2, 0), totals
    assert (work / ".byokctl" / "master.key").is_file()
