"""The man page and the help texts: generated from the command tree, current, rendering cleanly,
and every command documented with an example."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import REPO, run_proc
from typer import Context

from byokctl.cli import COMMANDS, load_module_commands
from byokctl.errors import exit_statuses
from tools.docs import ENVIRONMENT, MAN_PAGE, man_page, walk

REGENERATE = "stale: regenerate it with `python -m tools.docs` and commit the result"
NODES = list(walk())
LEAVES = [n for n in NODES if not n.is_group]


@pytest.fixture(scope="module")
def rendered() -> str:
    """The committed man page as `man` shows it at 80 columns (plain text)."""
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-rLL=78n", "-P-c", "-P-b", "-P-u",
                        str(REPO / MAN_PAGE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_man_page_is_current():
    assert (REPO / MAN_PAGE).read_text(encoding="utf-8") == man_page(), REGENERATE


def test_man_page_is_deterministic_and_undated():
    text = man_page()
    assert man_page() == text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text.split("\n.SH COMMANDS")[0])
    assert re.search(r'^\.TH BYOKCTL 1 "" "byokctl \S+"', text, re.M)


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
def test_man_page_renders_without_warnings():
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(REPO / MAN_PAGE)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


@pytest.mark.skipif(not shutil.which("man"), reason="man is not installed")
@pytest.mark.parametrize("width", ["80", "60"])
def test_man_shows_the_page_without_warnings(width):
    r = subprocess.run(["man", "--warnings", "-l", str(REPO / MAN_PAGE)], capture_output=True,
                       text=True, env={**os.environ, "MANWIDTH": width, "MANPAGER": "cat",
                                       "PAGER": "cat"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert "byokctl org set-provider" in r.stdout


def test_man_page_has_the_sections(rendered):
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "EXIT STATUS",
                    "ENVIRONMENT", "FILES", "SHELL COMPLETION", "EXAMPLES"):
        assert re.search(rf"^{section}$", rendered, re.M), section


def test_man_page_documents_every_command_and_option(rendered):
    """Checked against the registry and the modules themselves, not against walk(): a command
    the generator misses (a lazily loaded one, say) fails here."""
    flat = " ".join(rendered.split())
    for name in COMMANDS:
        command = load_module_commands(COMMANDS[name][0])[name]
        if hasattr(command, "list_commands"):
            subs = {n: command.get_command(None, n) for n in command.list_commands(None)}
        else:
            subs = {name: command}
        for sub_name, sub in subs.items():
            path = f"byokctl {name}" + ("" if sub is command else f" {sub_name}")
            assert f"{path} [OPTIONS]" in flat, path
            for param in sub.params:
                for opt in getattr(param, "opts", []):
                    if opt.startswith("-") and opt not in ("--help", "-h"):
                        assert opt in flat, f"{path} {opt}"


def test_man_page_exit_status_lists_every_code(rendered):
    section = rendered.split("\nEXIT STATUS\n")[1].split("\nENVIRONMENT\n")[0]
    flat = " ".join(section.split())
    for code, label, meaning in exit_statuses():
        assert re.search(rf"^\s+{code} {label}( |$)", section, re.M), (code, label)
        assert f"{code} {label} {meaning or 'Success.'}" in flat, (code, meaning)


def test_readme_exit_codes_match_the_one_table():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| ([a-z-]+) \|(.*)\|$", readme, re.M)
    assert [(int(c), n, m.strip()) for c, n, m in rows] == exit_statuses()


def test_every_environment_variable_the_code_reads_is_documented(rendered):
    read = re.compile(r"(?:environ\.get\(|environ\[|getenv\(|^\w*VAR\w* = )\"(BYOKCTL_\w+)\"", re.M)
    used = set()
    for path in (REPO / "byokctl").rglob("*.py"):
        used |= set(read.findall(path.read_text(encoding="utf-8")))
    assert {"BYOKCTL_DB", "BYOKCTL_MASTER_KEY", "BYOKCTL_ACTOR"} <= used  # the scan works
    # demo sets these itself to hand the emulator's keys to `key add --from-env`
    used -= {"BYOKCTL_DEMO_ANTHROPIC_KEY", "BYOKCTL_DEMO_OPENAI_KEY"}
    documented = {name for name, _ in ENVIRONMENT}
    assert used <= documented, used - documented
    section = rendered.split("\nENVIRONMENT\n")[1].split("\nFILES\n")[0]
    for name in documented:
        assert re.search(rf"^\s+{name}$", section, re.M), name


def test_man_page_examples_are_the_commands_examples(rendered):
    section = rendered.split("\nEXAMPLES\n")[1]
    lines = {line.strip() for line in section.splitlines()}
    for node in LEAVES:
        for example in node.examples():
            assert example in lines, example


# -- help texts ---------------------------------------------------------------------------------

def test_walk_reaches_every_registered_command():
    top = {n.path[1] for n in NODES if len(n.path) == 2}
    assert top == set(COMMANDS)
    assert {"byokctl key rotate", "byokctl vault rekey", "byokctl init"} <= {n.name for n in LEAVES}


@pytest.mark.parametrize("node", NODES, ids=lambda n: n.name)
def test_every_command_and_group_has_help(node):
    assert node.help.strip(), f"`{node.name}` has no help text"
    summary = node.help.strip().splitlines()[0]
    assert summary[:1].isupper() and summary.rstrip().endswith((".", ")")), summary


@pytest.mark.parametrize("node", LEAVES, ids=lambda n: n.name)
def test_every_command_has_an_example_of_itself(node):
    examples = node.examples()
    assert examples, f"`{node.name}` has no `Example: {node.name} ...` line in its docstring"
    for example in examples:
        assert example.startswith("byokctl "), example
    assert any(e == node.name or e.startswith(node.name + " ") for e in examples), examples


@pytest.mark.parametrize("node", LEAVES, ids=lambda n: n.name)
def test_help_keeps_the_example_on_one_line(node):
    """Click rewraps paragraphs to the terminal; an example must stay one copyable line (its
    paragraph needs a `\\b` line before it), here on a 50-column terminal."""
    ctx = Context(node.command, info_name=node.path[-1], parent=node.ctx.parent,
                         terminal_width=50)
    text = node.command.get_help(ctx)
    assert text.startswith(f"Usage: {node.name} ")
    lines = [line.strip() for line in text.splitlines()]
    for example in node.examples():
        assert f"Example: {example}" in lines, text
    assert "\b" not in text


@pytest.mark.parametrize("args", [["--help"], ["org", "--help"], ["key", "--help"],
                                  ["org", "create", "--help"]])
def test_help_is_plain_text_within_80_columns(args):
    r = run_proc(*args, env={"COLUMNS": "200", "TERM": "xterm-256color", "FORCE_COLOR": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("Usage: byokctl")
    assert "\x1b" not in r.stdout and "\b" not in r.stdout
    assert not set(r.stdout) & set("╭╮╰╯│─┃━")
    assert not [line for line in r.stdout.splitlines() if len(line) > 80 and "Example:" not in line]
