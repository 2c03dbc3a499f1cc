"""The root command registry (loaded lazily for start-up) says what the real commands say,
and cheap commands import none of the heavy modules."""

import subprocess
import sys

import pytest

from byokctl.cli import COMMANDS, load_module_commands
from tests.conftest import REPO


@pytest.mark.parametrize("name", list(COMMANDS))
def test_registry_help_matches_the_command(name):
    module, short = COMMANDS[name]
    command = load_module_commands(module)[name]
    assert command.help, f"{name} has no help"
    assert command.get_short_help_str(limit=1000) == short


def test_every_module_command_is_in_the_registry():
    for module in {m for m, _ in COMMANDS.values()}:
        assert set(load_module_commands(module)) <= set(COMMANDS), module


def _imported(*args, env=None):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "byokctl", *args],
                       capture_output=True, text=True, cwd=REPO, env=env)
    return {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}


HEAVY = {"anthropic", "openai", "pydantic", "cryptography", "keyring", "sqlite_utils", "numpy",
         "httpx2", "markdown_it"}


@pytest.mark.parametrize("args", [["--help"], ["org", "list"], ["key", "list"], ["usage", "show"],
                                  ["audit", "log"], ["org", "--help"], ["models", "list"]])
def test_cheap_commands_import_nothing_heavy(cli, vault, args):
    import os

    modules = _imported(*args, env={**os.environ})
    assert not {m.split(".")[0] for m in modules} & HEAVY


def test_help_imports_no_command_module():
    modules = _imported("--help")
    loaded = {m for m in modules if m.startswith("byokctl.cli.")}
    assert loaded <= {"byokctl.cli.render", "byokctl.cli.common", "byokctl.cli._fastparams",
                      "byokctl.cli.complete"}  # completion callbacks of the shared Org argument
