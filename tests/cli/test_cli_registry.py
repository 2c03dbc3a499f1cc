"""The root command registry (loaded lazily for start-up) says what the real commands say,
and cheap commands import none of the heavy modules."""

import subprocess
import sys

import pytest
from conftest import REPO, under_pty

from byokctl.cli import COMMANDS, load_module_commands


@pytest.mark.parametrize("name", list(COMMANDS))
def test_registry_help_matches_the_command(name):
    module, short = COMMANDS[name]
    command = load_module_commands(module)[name]
    assert command.help, f"{name} has no help"
    assert command.get_short_help_str(limit=1000) == short


def test_every_module_command_is_in_the_registry():
    for module in {m for m, _ in COMMANDS.values()}:
        assert set(load_module_commands(module)) <= set(COMMANDS), module


def test_a_run_builds_only_the_command_it_runs():
    """Typer would build every command of a module (and of a group) into click commands; a
    run builds the one it needs, and help still lists all of them in order."""
    from typer import Context
    from typer.main import get_command

    from byokctl.cli import app

    root = get_command(app)
    ctx = Context(root, info_name="byokctl")
    key = root.get_command(ctx, "key")
    assert set(root.commands) == {"key"}
    assert key.commands == {}
    order = ["add", "test", "list", "rotate", "remove", "approve-endpoint", "revoke-endpoint"]
    assert key.list_commands(ctx) == order
    listed = key.get_command(ctx, "list")
    assert listed.name == "list" and {p.name for p in listed.params} >= {"org", "provider"}
    assert list(key.commands) == ["list"] and key.list_commands(ctx) == order
    assert key.get_command(ctx, "list") is listed and key.get_command(ctx, "nosuch") is None

    root.get_command(ctx, "resolve")  # `ask` comes from the same module, unbuilt
    assert set(root.commands) == {"key", "resolve"} and "ask" in root.builders


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
    from pathlib import Path

    modules = _imported(*args, env={**os.environ})
    # on a vault file, no database driver either (a PostgreSQL vault needs psycopg, of course)
    heavy = HEAVY | ({"psycopg", "psycopg_binary"} if isinstance(vault, Path) else set())
    assert not {m.split(".")[0] for m in modules} & heavy


def test_help_imports_no_command_module():
    modules = _imported("--help")
    loaded = {m for m in modules if m.startswith("byokctl.cli.")}
    assert loaded <= {"byokctl.cli.render", "byokctl.cli.common", "byokctl.cli._fastparams",
                      "byokctl.cli.complete"}  # completion callbacks of the shared Org argument


def _leaves(command, path=()):
    subs = getattr(command, "commands", None)
    if subs is None:
        yield path, command
        return
    for name in command.list_commands(None) if hasattr(command, "list_commands") else subs:
        yield from _leaves(command.get_command(None, name), (*path, name))


def test_every_command_takes_json():
    from typer.main import get_command

    from byokctl.cli import app

    leaves = list(_leaves(get_command(app)))
    assert len(leaves) > 30
    missing = [" ".join(p) for p, c in leaves if not any("--json" in prm.opts for prm in c.params)]
    assert missing == []


def test_no_color_under_a_terminal(cli, vault):
    """On a terminal byokctl uses colour; NO_COLOR turns it off (tables and banners alike)."""
    import os
    import re

    cli("org", "create", "acme", "--plan", "starter")
    cli("plan", "grant-grace", "acme", "--days", "3")

    # an SGR sequence setting a foreground/background colour (bold alone is not colour)
    colour = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9]+)*m")
    os.environ.pop("NO_COLOR", None)
    coloured = under_pty(["org", "show", "acme"], {"TERM": "xterm-256color"})
    assert "grace grant active" in coloured and colour.search(coloured)
    uncoloured = under_pty(["org", "show", "acme"], {"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert "grace grant active" in uncoloured and not colour.search(uncoloured)


def test_readme_command_list_names_every_command():
    """The README's command summary (the block under `## Commands`) lists every top-level
    command, so a new command cannot ship undocumented."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```", 2)[1]
    words = set(block.replace("|", " ").split())
    missing = [name for name in COMMANDS if name not in words]
    assert missing == []


def test_a_group_within_a_group_is_built_lazily_and_runs(capsys):
    """byokctl builds its groups itself (cli/__init__.py); one nested in another is kept."""
    import typer

    from byokctl.cli import LazyGroup, _lazy_group

    inner = typer.Typer(help="Inner.")

    @inner.command("x")
    def x(n: int = 1) -> None:
        """Do x."""
        typer.echo(f"x ran {n * 2}")

    outer = typer.Typer(help="Outer.", no_args_is_help=True)
    outer.command("y")(lambda: None)
    outer.add_typer(inner, name="inner")
    holder = typer.Typer()
    holder.add_typer(outer, name="outer")
    group = _lazy_group(holder.registered_groups[0])
    assert isinstance(group, LazyGroup) and group.commands == {}
    nested = group.get_command(None, "inner")
    assert isinstance(nested, LazyGroup) and nested.list_commands(None) == ["x"]
    assert group.main(["inner", "x", "--n", "21"], prog_name="outer", standalone_mode=False) is None
    assert capsys.readouterr().out == "x ran 42\n"
    assert outer.registered_groups[0].typer_instance is inner and len(inner.registered_commands) == 1
