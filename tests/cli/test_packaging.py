"""Installed like a real CLI: the wheel carries the man page and the completion scripts under
share/, and `byokctl completion SHELL` prints the very scripts it installs."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from tools.docs import MAN_PAGE, SHELLS

# Where each generated file lands under the installing environment's prefix.
INSTALLED = {
    "share/man/man1/byokctl.1": MAN_PAGE,
    "share/bash-completion/completions/byokctl": SHELLS["bash"],
    "share/zsh/site-functions/_byokctl": SHELLS["zsh"],
    "share/fish/vendor_completions.d/byokctl.fish": SHELLS["fish"],
}


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_completion_prints_the_committed_script(cli, shell):
    r = cli("completion", shell)
    assert r.exit_code == 0, r.output
    assert r.stdout == (REPO / SHELLS[shell]).read_text(encoding="utf-8")


def test_completion_json_and_an_unknown_shell(cli):
    r = cli("completion", "fish", "--json")
    assert r.exit_code == 0, r.output
    script = (REPO / SHELLS["fish"]).read_text(encoding="utf-8")
    assert json.loads(r.stdout) == {"shell": "fish", "script": script}
    r = cli("completion", "tcsh")
    assert r.exit_code == 2 and "bash, zsh, fish" in r.stderr


@pytest.mark.slow
def test_the_wheel_installs_the_man_page_and_completions(tmp_path):
    """Built as `pip wheel` builds it (pyproject's backend in an isolated environment), from a
    copy of the checkout so no build/ or egg-info lands in it."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for tree in ("byokctl", "man", "completions"):
        shutil.copytree(REPO / tree, src / tree, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (wheel,) = out.glob("byokctl-*.whl")
    with zipfile.ZipFile(wheel) as z:
        (record,) = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
        listed = {row[0] for row in csv.reader(io.StringIO(z.read(record).decode()))}
        data = record.split(".dist-info/")[0] + ".data/data/"
        for installed, committed in INSTALLED.items():
            assert data + installed in listed, sorted(listed)
            assert z.read(data + installed) == (REPO / committed).read_bytes()
        meta = z.read(record.replace("RECORD", "METADATA")).decode()
    assert "Classifier: Environment :: Console" in meta
    assert "Keywords:" in meta and "Project-URL: Repository," in meta


def test_pyproject_names_every_generated_file():
    """A generated file moved by tools.docs must move in pyproject's data-files too."""
    import tomllib

    data_files = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    shipped = {f"{where}/{Path(f).name}": f for where, files in data_files.items() for f in files}
    assert shipped == INSTALLED
