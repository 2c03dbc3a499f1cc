"""byokctl uses typer and its other dependencies through their public API only: importing and
running byokctl changes no attribute of any of their modules or classes, and a Typer app of
someone else's, in the same process, behaves exactly as it does without byokctl."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO

DEPENDENCIES = ("typer", "click", "rich", "keyring", "sqlite3", "_sqlite3", "sqlite_utils", "anthropic",
                "openai", "pydantic", "shellingham", "cryptography", "platformdirs", "httpx")

# Runs in a fresh interpreter: run a Typer app of someone else's (so typer's own lazy set-up is
# done), snapshot every attribute of the dependencies' modules and classes (and the items of
# their dicts and lists), run byokctl in-process, compare, and run the other app again.
PROBE = r'''
import io, json, os, sys, contextlib

DEPS = set(sys.argv[1].split(","))
WITH_BYOKCTL = sys.argv[2] == "1"


def theirs(name):
    return name.split(".")[0] in DEPS


def ident(value):
    if isinstance(value, dict):
        return ("dict", id(value), tuple(sorted((repr(k), id(v)) for k, v in list(value.items()))))
    if isinstance(value, list):
        return ("list", id(value), tuple(id(v) for v in value))
    return id(value)


def snapshot():
    out = {}
    for name, module in list(sys.modules.items()):
        if module is None or not theirs(name):
            continue
        for attr, value in list(vars(module).items()):
            out[f"{name}.{attr}"] = ident(value)
            if isinstance(value, type) and theirs(getattr(value, "__module__", "") or ""):
                for cattr, cvalue in list(vars(value).items()):
                    out[f"{name}.{attr}.{cattr}"] = ident(cvalue)
    return out


def other_app():
    """Someone else's Typer app: coercion, errors, help and completion scripts."""
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()

    @app.command()
    def hello(name: str, count: int = 1, ratio: float = 0.5, loud: bool = False) -> None:
        typer.echo(f"{name} {count} {ratio} {loud} {type(count).__name__}")

    @app.command()
    def bye() -> None:
        typer.echo("bye")

    runner = CliRunner()
    results = {}
    for args in (["hello", "ann"], ["hello", "ann", "--count", "3", "--ratio", "2", "--loud"],
                 ["hello", "ann", "--count", "x"], ["hello", "ann", "--ratio", "nan"],
                 ["hello"], ["--help"], ["hello", "--help"]):
        r = runner.invoke(app, args)
        results[" ".join(args)] = [r.exit_code, r.output]
    for shell in ("bash", "zsh", "fish"):
        r = runner.invoke(app, [], env={"_TYPER_COMPLETE": f"source_{shell}"}, prog_name="other")
        results[f"source_{shell}"] = [r.exit_code, r.output]
    return results


other_app()  # typer's own one-time set-up (its completion classes, say) is not byokctl's
before = snapshot()
if WITH_BYOKCTL:
    from typer.main import get_command
    from byokctl.cli import app
    from byokctl.__main__ import main

    def walk(command, ctx):
        for name in getattr(command, "list_commands", lambda c: [])(ctx):
            walk(command.get_command(ctx, name), ctx)

    walk(get_command(app), None)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        for argv in (["--help"], ["org", "list"], ["org", "create", "probe", "--plan", "growth"],
                     ["key", "list", "--json"], ["resolve", "probe"], ["org", "show", "nosuch"],
                     ["org", "list", "--bogus"], ["--show-completion"]):
            sys.argv = ["byokctl", *argv]
            try:
                main()
            except SystemExit:
                pass
    after = snapshot()
    changed = sorted(k for k, v in before.items() if after.get(k, v) != v)
else:
    changed = []
print(json.dumps({"changed": changed, "other_app": other_app()}))
'''


def _probe(with_byokctl: bool, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BYOKCTL_", "_BYOKCTL", "_TYPER"))}
    env.update(BYOKCTL_HOME=str(tmp_path), BYOKCTL_MASTER_KEY="A" * 43 + "=", SHELL="/bin/bash")
    r = subprocess.run([sys.executable, "-c", PROBE, ",".join(DEPENDENCIES), "1" if with_byokctl else "0"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_running_byokctl_changes_no_attribute_of_a_dependency(tmp_path):
    assert _probe(True, tmp_path)["changed"] == []


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_an_unrelated_typer_app_behaves_as_without_byokctl(tmp_path):
    alone = _probe(False, tmp_path / "alone")["other_app"]
    beside = _probe(True, tmp_path / "beside")["other_app"]
    assert alone["hello ann --count x"][0] == 2  # the probe does exercise typer's coercion
    assert beside == alone


# NamedTuple's own methods and fields: public API despite the underscore.
NAMEDTUPLE = {"_replace", "_asdict", "_fields", "_make", "_field_defaults"}


def _private_names_of_others(sources: dict[str, str]) -> list[str]:
    """Each use, in `sources` (path -> code), of a private name byokctl does not define itself:
    a `_name` attribute read or written (also through getattr/setattr/hasattr/delattr), or
    imported from a private module of another package, or a `_name` imported from one."""
    import ast

    trees = {path: ast.parse(code) for path, code in sources.items()}
    ours: set[str] = set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                ours.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                ours.add(node.id)
            elif isinstance(node, ast.arg):
                ours.add(node.arg)
            elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store)
                  and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                ours.add(node.attr)  # an attribute of byokctl's own objects

    def private(name: str) -> bool:
        return name.startswith("_") and not name.startswith("__") and name not in ours | NAMEDTUPLE

    found = []
    for path, tree in trees.items():
        for node in ast.walk(tree):
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            by_name = (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                       and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
                       and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)
                       and isinstance(node.args[1].value, str) and private(node.args[1].value))
            if by_name or (isinstance(node, ast.Attribute) and private(node.attr)):
                found.append(f"{where} {ast.unparse(node)}")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                    not node.module.startswith("byokctl") and node.module != "__future__"):
                parts = node.module.split(".")
                if any(p.startswith("_") for p in parts) or any(private(a.name) for a in node.names):
                    found.append(f"{where} {ast.unparse(node)}")
            elif isinstance(node, ast.Import):
                found += [f"{where} import {a.name}" for a in node.names
                          if not a.name.startswith("byokctl")
                          and any(p.startswith("_") for p in a.name.split("."))]
    return found


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_byokctl_uses_no_private_name_of_another_package():
    """The rule behind the probe above, read from the source: no `thing._private` of typer's (or
    anyone's), by attribute, by getattr/setattr, or by import."""
    sources = {str(p.relative_to(REPO)): p.read_text() for p in (REPO / "byokctl").rglob("*.py")}
    assert _private_names_of_others(sources) == []


def test_the_private_name_check_finds_each_kind_of_use():
    sources = {
        "ours.py": "class C:\n    def __init__(self):\n        self._mine = 1\n"
                   "def f(p, t):\n    p._mine = 2\n    t._replace(a=1)\n",
        "bad.py": "import typer._click\nfrom typer._coercion import build\n"
                  "from typer.core import _TyperParameter\n"
                  "def g(param, x):\n    param._runtime_param = x\n"
                  "    getattr(param, '_runtime_param', None)\n"
                  "    setattr(param, '_other', 1)\n    return param._help_option\n",
    }
    found = _private_names_of_others(sources)
    assert [f.split(" ", 1)[0] for f in found if f.startswith("ours")] == []
    assert sorted(f.split(" ", 1)[0] for f in found) == [
        "bad.py:1", "bad.py:2", "bad.py:3", "bad.py:5", "bad.py:6", "bad.py:7", "bad.py:8"]
