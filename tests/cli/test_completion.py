"""Shell completion: the committed scripts are current, the completion protocol returns org
slugs and key ids straight from the vault (no master key, nothing heavy imported), and the
scripts work in real bash, zsh and fish."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, REPO, master_key_b64

from tools.docs import SHELLS, TREE, completion_script, tree_module

# TAB completes values from a vault file; a PostgreSQL vault completes none (a TAB press never
# loads the driver nor waits on the network), which test_tab_on_a_database_vault_... checks.
pytestmark = pytest.mark.sqlite_only

HEAVY = {"anthropic", "openai", "cryptography", "keyring", "sqlite_utils", "pydantic", "psycopg"}


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_committed_script_is_current(shell):
    committed = (REPO / SHELLS[shell]).read_text(encoding="utf-8")
    assert committed == completion_script(shell), (
        f"{SHELLS[shell]} is stale: regenerate it with `python -m tools.docs`")


def test_committed_tree_is_current():
    assert (REPO / TREE).read_text(encoding="utf-8") == tree_module(), (
        f"{TREE} is stale: regenerate it with `python -m tools.docs`")


@pytest.mark.parametrize("seed", ["1", "2", "3"])
def test_tree_does_not_depend_on_hash_order(seed):
    """Click builds some option names from a set; the committed tree must not flap."""
    r = subprocess.run([sys.executable, "-c", "from tools.docs import tree_module; "
                        "print(tree_module(), end='')"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (REPO / TREE).read_text(encoding="utf-8")


@pytest.fixture
def key_ids_by_owner(cli, vault) -> dict[str, str]:
    """A vault with orgs acme, acorn and zeta, an org key, a member key and a platform key;
    returns the key ids by owner. The master key is then removed: completion needs none."""
    for args in (["acme", "--plan", "growth"], ["acorn"], ["zeta", "--name", "Zeta's \"$(x)\""]):
        r = cli("org", "create", *args)
        assert r.exit_code == 0, r.output
    r = cli("member", "add", "acme", "bob@acme.com", "--role", "staffing")
    assert r.exit_code == 0, r.output
    ids = {}
    for owner, args, secret in (
        ("acme", ["acme", "--provider", "anthropic"], ANTHROPIC_TEST_KEY),
        ("bob", ["acme", "--provider", "openai", "--member", "bob@acme.com"], OPENAI_TEST_KEY),
        ("platform", ["--platform", "--provider", "anthropic"], ANTHROPIC_TEST_KEY),
    ):
        r = cli("key", "add", *args, "--from-stdin", "--json", input=secret + "\n")
        assert r.exit_code == 0, r.output
        ids[owner] = json.loads(r.stdout)["id"]
    return ids


def complete(shell: str, line: str, env: dict[str, str] | None = None,
             importtime: bool = False) -> subprocess.CompletedProcess[str]:
    """Ask byokctl for completions of `line` (the cursor at its end) the way the shell's
    script does: typer's protocol through environment variables."""
    words = line.split()
    full = {**os.environ, "_BYOKCTL_COMPLETE": f"complete_{shell}", **(env or {})}
    if shell == "bash":
        full["COMP_WORDS"] = line
        full["COMP_CWORD"] = str(len(words) if line.endswith(" ") else len(words) - 1)
    else:
        full["_TYPER_COMPLETE_ARGS"] = line
        full.setdefault("_TYPER_COMPLETE_FISH_ACTION", "get-args")
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "byokctl"]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=30, cwd=REPO)


def values(r: subprocess.CompletedProcess[str]) -> list[str]:
    assert r.returncode == 0, r.stderr
    return [line.split("\t")[0] for line in r.stdout.splitlines() if line]


@pytest.mark.parametrize("line, expected", [
    ("byokctl org show ", ["acme", "acorn", "zeta"]),
    ("byokctl org show a", ["acme", "acorn"]),
    ("byokctl plan set ac", ["acme", "acorn"]),
    ("byokctl member list z", ["zeta"]),
    ("byokctl key add --provider anthropic a", ["acme", "acorn"]),
    ("byokctl key list ", ["acme", "acorn", "zeta"]),
    ("byokctl usage show a", ["acme", "acorn"]),
    ("byokctl audit log --org ", ["acme", "acorn", "zeta"]),
    ("byokctl resolve acm", ["acme"]),
    ("byokctl org show q", []),
])
def test_bash_completes_org_slugs(key_ids_by_owner, line, expected):
    r = complete("bash", line)
    assert values(r) == expected
    assert r.stderr == ""


@pytest.mark.parametrize("command", ["test", "rotate", "remove"])
def test_bash_completes_key_ids(key_ids_by_owner, command):
    assert sorted(values(complete("bash", f"byokctl key {command} "))) == sorted(key_ids_by_owner.values())
    one = key_ids_by_owner["bob"]
    assert values(complete("bash", f"byokctl key {command} {one[:9]}")) == [
        k for k in sorted(key_ids_by_owner.values()) if k.startswith(one[:9])]


def test_zsh_and_fish_describe_each_value(key_ids_by_owner):
    r = complete("zsh", "byokctl org show a")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("_arguments ")
    assert '"acme":"acme (growth)"' in r.stdout and '"acorn":"acorn (free)"' in r.stdout
    assert "zeta" not in r.stdout

    r = complete("fish", "byokctl key rotate ")
    assert r.returncode == 0, r.stderr
    lines = set(r.stdout.splitlines())
    assert f"{key_ids_by_owner['acme']}\tanthropic key of acme" in lines
    assert f"{key_ids_by_owner['bob']}\topenai key of bob@acme.com (acme)" in lines
    assert f"{key_ids_by_owner['platform']}\tanthropic key of platform" in lines


def test_descriptions_carry_no_shell_syntax(key_ids_by_owner):
    r = complete("fish", "byokctl org show z")
    assert r.stdout.splitlines() == ["zeta\tZeta s (x) (free)"]


def test_db_option_and_environment_choose_the_vault(key_ids_by_owner, tmp_path, cli):
    other = tmp_path / "other.db"
    env = {"BYOKCTL_MASTER_KEY": master_key_b64()}
    r = cli("--db", str(other), "init", env=env)
    assert r.exit_code == 0, r.output
    r = cli("--db", str(other), "org", "create", "other-org", env=env)
    assert r.exit_code == 0, r.output

    assert values(complete("bash", f"byokctl --db {other} org show ")) == ["other-org"]
    assert values(complete("bash", "byokctl org show ", {"BYOKCTL_DB": str(other)})) == ["other-org"]
    assert values(complete("bash", "byokctl org show ")) == ["acme", "acorn", "zeta"]


@pytest.mark.parametrize("setup", ["missing", "garbage", "directory", "empty", "locked"])
def test_no_usable_vault_completes_to_nothing_silently(tmp_path, setup):
    path = tmp_path / "vault.db"
    if setup == "garbage":
        path.write_bytes(b"not a database" * 100)
    elif setup == "directory":
        path.mkdir()
    elif setup == "empty":
        path.touch()
    elif setup == "locked":
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE orgs (slug TEXT, name TEXT, plan TEXT)")
        conn.execute("INSERT INTO orgs VALUES ('acme', 'acme', 'free')")
        conn.execute("BEGIN EXCLUSIVE")  # a writer holds the (rollback-journal) file
    try:
        r = complete("bash", "byokctl org show ", {"BYOKCTL_DB": str(path)})
    finally:
        if setup == "locked":
            conn.execute("ROLLBACK")
            conn.close()
    assert r.returncode == 0, r.stderr
    assert (r.stdout.strip(), r.stderr) == ("", "")
    if setup == "missing":
        assert not path.exists()  # completion never creates a vault


def test_completion_reads_without_master_key_and_changes_nothing(key_ids_by_owner):
    path = Path(os.environ["BYOKCTL_HOME"]) / "vault.db"
    before = path.read_bytes()
    assert values(complete("bash", "byokctl org show ", {"BYOKCTL_MASTER_KEY": "bm9wZQ=="})) == [
        "acme", "acorn", "zeta"]
    assert path.read_bytes() == before


@pytest.mark.parametrize("line", ["byokctl org show a", "byokctl key rotate ", "byokctl ",
                                  "byokctl key ", "byokctl ask ", "byokctl audit log --org "])
def test_completion_imports_no_sdk_crypto_or_keyring(key_ids_by_owner, line):
    r = complete("bash", line, importtime=True)
    assert r.returncode == 0
    imported = {row.split("|")[-1].strip().split(".")[0] for row in r.stderr.splitlines()
                if "|" in row}
    assert "byokctl" in imported  # the measurement works
    assert not imported & HEAVY, imported & HEAVY
    assert r.stdout.strip()


# -- the committed scripts in real shells ------------------------------------------------------

@pytest.fixture
def on_path(tmp_path) -> dict[str, str]:
    """An environment whose PATH runs this checkout's byokctl, as the scripts call it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "byokctl"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m byokctl "$@"\n')
    exe.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO)}


def test_bash_script_completes_in_bash(key_ids_by_owner, on_path):
    script = REPO / SHELLS["bash"]
    program = (f'source "{script}"; COMP_WORDS=(byokctl key test ""); COMP_CWORD=3; '
               '_byokctl_completion byokctl; printf "%s\\n" "${COMPREPLY[@]}"; '
               'COMP_WORDS=(byokctl org show a); COMP_CWORD=3; '
               '_byokctl_completion byokctl; printf "%s\\n" "${COMPREPLY[@]}"; complete -p byokctl')
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], env=on_path,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == sorted(key_ids_by_owner.values())
    assert lines[3:5] == ["acme", "acorn"]
    assert lines[5] == "complete -o default -F _byokctl_completion byokctl"


@pytest.mark.skipif(not shutil.which("fish"), reason="fish is not installed")
def test_fish_script_completes_in_fish(key_ids_by_owner, on_path):
    script = REPO / SHELLS["fish"]
    r = subprocess.run(["fish", "--no-config", "-c",
                        f'source "{script}"; complete -C "byokctl org show a"; '
                        'complete -C "byokctl key rem"'],
                       env=on_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["acme\tacme (growth)", "acorn\tacorn (free)",
                                     "remove\tRemove a key; its secret is purged from..."]


ZPTY = r"""
zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z "PS1=''; fpath=($1 \$fpath); autoload -U compinit; compinit -u -D"
# type the words, TAB once, then put `print` in front of the line and run it
zpty -w -n z "$2"$'\t'$'\x01'"print -r -- R''ESULT: "$'\n'
while zpty -r z line; do
  line=${line//$'\r'/}
  if [[ $line == RESULT:* ]]; then print -r -- "$line"; break; fi
done
zpty -d z
"""


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
def test_install_completion_in_zsh_installs_the_fixed_script(key_ids_by_owner, on_path, tmp_path):
    """`byokctl --install-completion` writes ~/.zfunc/_byokctl: the committed script, so the
    first TAB after it is autoloaded completes too."""
    home = tmp_path / "user-home"  # tmp_path / "home" is $BYOKCTL_HOME
    home.mkdir()
    env = {**on_path, "HOME": str(home)}
    r = subprocess.run(["zsh", "-f", "-c", "byokctl --install-completion; true"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert "zsh completion installed" in r.stdout, r.stdout + r.stderr
    installed = home / ".zfunc" / "_byokctl"
    assert installed.read_text().strip() == (REPO / SHELLS["zsh"]).read_text().strip()
    harness = tmp_path / "zpty.zsh"
    harness.write_text(ZPTY)
    r = subprocess.run(["zsh", "-f", str(harness), str(installed.parent), "byokctl org show z"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "RESULT: byokctl org show zeta", r.stdout + r.stderr


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_the_committed_script_for_the_shell_it_runs_in(on_path, shell):
    """`byokctl --show-completion` (after root options too) prints byokctl's fixed script for
    the shell it runs under, as typer detects it."""
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    r = subprocess.run([shell, "-c", "byokctl --db /nonexistent/v.db -q --show-completion; true"],
                       env=on_path, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == (REPO / SHELLS[shell]).read_text(encoding="utf-8").strip(), r.stderr


def test_install_completion_in_bash_writes_the_script_and_sources_it(key_ids_by_owner, on_path, tmp_path):
    home = tmp_path / "user-home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'\n")
    env = {**on_path, "HOME": str(home)}
    for _ in range(2):  # a second install adds nothing twice
        r = subprocess.run(["bash", "-c", "byokctl --install-completion; true"], env=env,
                           capture_output=True, text=True, timeout=60)
        assert "bash completion installed" in r.stdout, r.stdout + r.stderr
    script = home / ".bash_completions" / "byokctl.sh"
    assert script.read_text().strip() == (REPO / SHELLS["bash"]).read_text().strip()
    rc = (home / ".bashrc").read_text()
    assert rc.startswith("alias ll='ls -l'\n") and rc.count(f"source '{script}'") == 1, rc


@pytest.mark.skipif(not shutil.which("zsh"), reason="zsh is not installed")
@pytest.mark.parametrize("typed, completed", [
    ("byokctl org show z", "byokctl org show zeta"),
    ("byokctl key rot", "byokctl key rotate"),
    ("byokctl plan set acm", "byokctl plan set acme"),
])
def test_zsh_script_completes_on_the_first_tab_from_fpath(key_ids_by_owner, on_path, tmp_path, typed,
                                                          completed):
    """Installed as `_byokctl` in $fpath, the very first TAB completes (typer's own script
    only registers itself then)."""
    fpath = tmp_path / "zfunc"
    fpath.mkdir()
    shutil.copy(REPO / SHELLS["zsh"], fpath / "_byokctl")
    harness = tmp_path / "zpty.zsh"
    harness.write_text(ZPTY)
    r = subprocess.run(["zsh", "-f", str(harness), str(fpath), typed], env=on_path,
                       capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == f"RESULT: {completed}", r.stdout + r.stderr


# -- the fast path (byokctl.completion) answers as typer would -----------------------------------

def _typer_items(args: list[str], incomplete: str) -> list[tuple[str, str | None]]:
    """Typer's own completions (Click's algorithm over the real commands), in process."""
    from typer._completion_classes import BashComplete
    from typer.main import get_command

    from byokctl.cli import app

    comp = BashComplete(get_command(app), {}, "byokctl", "_BYOKCTL_COMPLETE")
    items = [(item.value, item.help) for item in comp.get_completions(list(args), incomplete)]
    # Click builds the help option's names from a set, so `-h` and `--help` come in either
    # order from run to run; the generated tree fixes `-h` first.
    for i in range(len(items) - 1):
        if (items[i][0], items[i + 1][0]) == ("--help", "-h"):
            items[i], items[i + 1] = items[i + 1], items[i]
    return items


def _command_lines(other_db: str) -> list[str]:
    """Partial command lines over every command: sub-command names, options, option values,
    arguments, flags, `=`, `--`, unknown options and commands, root options first."""
    from byokctl.completion.tree import TREE

    lines = ["byokctl ", "byokctl -", "byokctl --", "byokctl o", "byokctl nosuch ", "byokctl -q ",
             "byokctl -q o", "byokctl -qh ", "byokctl --db", "byokctl --db ", "byokctl --db=",
             "byokctl --db=/tmp/x o", f"byokctl --db {other_db} org show ",
             f"byokctl org show --db {other_db} ",
             f"byokctl --db /tmp/x key list --db {other_db} ", "byokctl --bogus ",
             "byokctl --version ", "byokctl -- org ", "byokctl org show acme extra ",
             'byokctl org show "ac', "byokctl org show a\\ ", "byokctl -x org show "]

    def visit(node: dict, path: str) -> None:
        lines.extend([f"{path} ", f"{path} -", f"{path} --", f"{path} --j", f"{path} --bogus ",
                      f"{path} -- ", f"{path} -- -", f"{path} acme ", f"{path} acme -",
                      f"{path} acme --json ", f"{path} --json a", f"{path} -h ", f"{path} ="])
        for param in node["params"]:
            for opt in param.get("opts", []):
                lines.extend([f"{path} {opt} ", f"{path} {opt} a", f"{path} {opt}=",
                              f"{path} {opt}=ac", f"{path} {opt} acme -", f"{path} {opt} x ",
                              f"{path} {opt} {opt} "])
        for name, _, _, sub in node.get("commands", []):
            lines.append(f"{path} {name[:2]}")
            visit(sub, f"{path} {name}")

    visit(TREE, "byokctl")
    return lines


def _split(line: str) -> tuple[list[str], str]:
    from byokctl.completion import split_words

    words = split_words(line)[1:]
    if line.endswith(" ") or not words:
        return words, ""
    return words[:-1], words[-1]


@pytest.mark.slow  # ~2,500 command lines, each through typer too
def test_fast_completion_matches_typer_everywhere(key_ids_by_owner, tmp_path, cli):
    """Every command, and thousands of partial lines: the generated-tree answers are Click's."""
    from byokctl.completion import completions
    from byokctl.completion.tree import TREE

    other = tmp_path / "other.db"
    env = {"BYOKCTL_MASTER_KEY": master_key_b64()}
    assert cli("--db", str(other), "init", env=env).exit_code == 0
    assert cli("--db", str(other), "org", "create", "other-org", env=env).exit_code == 0

    lines = _command_lines(str(other))
    assert len(lines) > 2000
    seen_values = 0
    for line in lines:
        args, incomplete = _split(line)
        expected = _typer_items(args, incomplete)
        assert completions(TREE, args, incomplete) == expected, line
        seen_values += bool(expected)
    assert seen_values > len(lines) // 3  # most lines complete to something


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
@pytest.mark.parametrize("line", ["byokctl ", "byokctl key ", "byokctl org show a",
                                  "byokctl org show q", "byokctl key rotate ",
                                  "byokctl key add --", "byokctl audit log --org "])
def test_fast_completion_prints_what_typer_prints(key_ids_by_owner, monkeypatch, capsys, shell, line):
    """The same text for each shell (descriptions compared modulo whitespace: typer runs them
    through rich, which wraps long ones at 80 columns, breaking fish's one-per-line format)."""
    from typer._click.shell_completion import get_completion_class
    from typer._completion_classes import completion_init
    from typer.main import get_command

    from byokctl.cli import app
    from byokctl.completion import answer

    env = {"COMP_WORDS": line, "_TYPER_COMPLETE_ARGS": line, "_TYPER_COMPLETE_FISH_ACTION": "get-args",
           "COMP_CWORD": str(len(line.split()) - (0 if line.endswith(" ") else 1))}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    completion_init()
    typer_text = get_completion_class(shell)(get_command(app), {}, "byokctl",
                                             "_BYOKCTL_COMPLETE").complete()
    fast_text, code = answer(shell, env)
    assert code == 0
    if shell == "bash":
        assert fast_text == typer_text
    else:
        assert fast_text.split() == typer_text.split()


def test_fish_asks_whether_arguments_complete(key_ids_by_owner):
    """`is-args`: exit 0 with no output when something completes (fish then offers no files)."""
    yes = complete("fish", "byokctl org show ", {"_TYPER_COMPLETE_FISH_ACTION": "is-args"})
    no = complete("fish", "byokctl org show acme ", {"_TYPER_COMPLETE_FISH_ACTION": "is-args"})
    assert (yes.returncode, yes.stdout, no.returncode, no.stdout) == (0, "", 1, "")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_source_instruction_prints_the_committed_script(shell):
    """`source_<shell>` prints byokctl's own script (byokctl/completion/scripts.py)."""
    r = subprocess.run([sys.executable, "-m", "byokctl"], capture_output=True, text=True,
                       env={**os.environ, "_BYOKCTL_COMPLETE": f"source_{shell}"}, timeout=30,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == (REPO / SHELLS[shell]).read_text(encoding="utf-8").strip()


def test_tab_does_not_load_typer(key_ids_by_owner):
    r = complete("bash", "byokctl key rotate ", importtime=True)
    imported = {row.split("|")[-1].strip() for row in r.stderr.splitlines() if "|" in row}
    assert "byokctl.completion.tree" in imported  # the measurement works
    assert not {m for m in imported if m.split(".")[0] == "typer"}
    assert values(r)


def test_tab_on_a_database_vault_completes_no_values_and_loads_no_driver():
    """With `$BYOKCTL_DB` a PostgreSQL URL, value candidates are none, at once, and the TAB
    process imports no database driver (it would wait on the network)."""
    r = complete("bash", "byokctl org show ", importtime=True,
                 env={"BYOKCTL_DB": "postgresql://nobody@/nowhere?host=/nonexistent"})
    assert values(r) == []
    assert "psycopg" not in r.stderr
    # the same line on a vault file does complete, so the empty answer above is the URL's
    assert values(complete("bash", "byokctl org show --")) != []
