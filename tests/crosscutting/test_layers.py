"""The house's arrows point one way (STYLE.md): cli → services → domain, store, vault, providers.

Read from the source (the AST of every module, imports inside functions and TYPE_CHECKING
blocks included), so a lazy import cannot hide an arrow pointing up.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "byokctl"

# layer → the byokctl modules it may never import (a prefix covers its submodules)
FORBIDDEN = {
    "store": ("byokctl.services", "byokctl.cli", "byokctl.resolve", "byokctl.api"),
    # crypto and master-key sources only, bytes in and out: the store is read by services
    "vault": ("byokctl.services", "byokctl.cli", "byokctl.resolve", "byokctl.store", "byokctl.api"),
    "providers": ("byokctl.services", "byokctl.cli", "byokctl.resolve", "byokctl.api"),
    "services": ("byokctl.cli", "byokctl.api"),
    # the data plane (SPEC §8): a face over the services, which the CLI's ask/resolve/key test use
    "api": ("byokctl.cli",),
}
# The domain is the floor: of byokctl, only itself and the error types.
DOMAIN_MAY_IMPORT = ("byokctl.domain", "byokctl.errors")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every byokctl module `source` (the text of `module`) imports, wherever the import is."""
    out: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..services import y
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)  # `from byokctl import services`
    return {m for m in out if m == "byokctl" or m.startswith("byokctl.")}


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(layer: str, module: str, names: set[str]) -> list[str]:
    if layer == "domain":
        bad = [n for n in names if n != "byokctl" and not within(n, DOMAIN_MAY_IMPORT)]
    else:
        bad = [n for n in names if within(n, FORBIDDEN.get(layer, ()))]
    return [f"{module} imports {n}" for n in sorted(bad)]


def modules() -> list[tuple[str, str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        layer = name.split(".")[1] if name.count(".") else ""
        found.append((layer, name, path))
    return found


@pytest.mark.parametrize("layer", ["domain", *FORBIDDEN])
def test_no_layer_imports_a_higher_one(layer):
    mods = [(n, p) for lay, n, p in modules() if lay == layer]
    assert mods, f"no modules found in byokctl/{layer}"
    problems = [v for name, path in mods
                for v in violations(layer, name, imported(path.read_text(), name,
                                                          path.name == "__init__.py"))]
    assert problems == []


def test_the_domain_does_no_io():
    """No file, network, process, database or clock access in the rules themselves."""
    io = ("os", "sqlite3", "socket", "subprocess", "pathlib", "time", "httpx", "httpx2", "keyring",
          "cryptography", "anthropic", "openai", "json", "io", "shutil", "threading")
    for layer, name, path in modules():
        if layer != "domain":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.split(".")[0] in io], f"{name} imports {names}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("now", "utcnow", "today"), \
                    f"{name} reads the clock (line {node.lineno}); take `now` as an argument"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("open", "print", "input"), f"{name} calls {node.func.id}"


def test_byokctl_resolve_is_gone():
    """The chain lives in the domain; the old module that services and it imported is no more."""
    assert not (PACKAGE / "resolve.py").exists()


# The checker itself: each rule catches the arrow it names.
@pytest.mark.parametrize(("layer", "module", "source"), [
    ("domain", "byokctl.domain.plans", "from byokctl.services import rules"),
    ("domain", "byokctl.domain.plans", "def f():\n    from byokctl import clock"),
    ("domain", "byokctl.domain.plans", "from ..providers import catalog"),
    ("domain", "byokctl.domain.plans", "import byokctl.store"),
    ("store", "byokctl.store.migrations", "from byokctl.services.rules import slug"),
    ("vault", "byokctl.vault.master", "if TYPE_CHECKING:\n    from byokctl.services.context import Context"),
    ("vault", "byokctl.vault.envelope", "def f():\n    from byokctl.store import Store"),
    ("providers", "byokctl.providers.base", "from byokctl.cli import render"),
    ("providers", "byokctl.providers.base", "from byokctl import services"),
    ("services", "byokctl.services.orgs", "from ..cli.render import emit"),
    ("services", "byokctl.services.ask", "from byokctl.api import Vault"),
    ("api", "byokctl.api.vault", "def f():\n    from byokctl.cli import render"),
])
def test_the_checker_sees_an_upward_import(layer, module, source):
    assert violations(layer, module, imported(source, module))


@pytest.mark.parametrize(("layer", "module", "source"), [
    ("domain", "byokctl.domain.plans", "from byokctl.errors import PlanGate\nfrom . import budget"),
    ("services", "byokctl.services.orgs", "from byokctl.domain import plans\nfrom byokctl.store import x"),
    ("providers", "byokctl.providers.redact", "from byokctl.domain.urls import safe_url"),
    ("api", "byokctl.api.vault", "from byokctl.services import ask\nfrom byokctl.errors import NoKey"),
])
def test_the_checker_lets_a_downward_import_be(layer, module, source):
    assert violations(layer, module, imported(source, module)) == []


# -- SQL belongs to the store (7/11 item 2): the seam a second engine plugs into ----------------
SQL_START = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|BEGIN|COMMIT|ROLLBACK|"
                       r"SAVEPOINT|RELEASE|PRAGMA|WITH|VACUUM|REPLACE)\s")
DRIVERS = ("sqlite3", "_sqlite3", "sqlite_utils", "psycopg")
PRIMITIVES = ("conn", "execute", "executemany", "one", "all", "scalar", "tuples", "iterate",
              "cursor", "text_factory")


def sql_outside_the_store(source: str, name: str) -> list[str]:
    """Where `source` (module `name`, outside byokctl.store) writes SQL, imports a database
    driver or reaches past the store's named queries to its SQL primitives."""
    found = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_START.match(node.value):
            found.append(f"{name}:{line}: SQL {node.value[:50]!r}")
        elif isinstance(node, ast.JoinedStr):
            head = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            if SQL_START.match(head + " "):
                found.append(f"{name}:{line}: SQL f-string {head[:50]!r}")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            found += [f"{name}:{line}: imports {n}" for n in names if n.split(".")[0] in DRIVERS]
        elif (isinstance(node, ast.Attribute) and node.attr in PRIMITIVES
              and isinstance(node.value, ast.Attribute) and node.value.attr == "store"):
            found.append(f"{name}:{line}: store.{node.attr} (an SQL primitive)")
    return found


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_no_sql_outside_the_store():
    """Services, vault, cli, providers, completion: named store queries only, no SQL text, no
    driver, no connection (the test suite itself may tamper with a vault in SQL)."""
    problems = [p for layer, name, path in modules() if layer != "store"
                for p in sql_outside_the_store(path.read_text(), name)]
    assert problems == []


@pytest.mark.parametrize("source", [
    'x = "SELECT 1 FROM orgs WHERE slug = ?"',
    'ctx.store.conn.execute("x")',
    'def f(t):\n    return f"UPDATE {t} SET mac = ?"',
    "import sqlite3",
    "from psycopg import errors",
    "ctx.store.scalar(q)",
])
def test_the_sql_checker_sees_sql(source):
    assert sql_outside_the_store(source, "byokctl.services.x")


def test_the_sql_checker_lets_prose_and_named_queries_be():
    source = ('"""Select the org; delete nothing."""\nmsg = "Update the key with `key rotate`"\n'
              "ctx.store.orgs.get(slug)\nctx.store.in_transaction\nwith ctx.write():\n    pass\n")
    assert sql_outside_the_store(source, "byokctl.services.x") == []
