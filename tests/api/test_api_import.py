"""`import byokctl` is light and typed (issue 14 item 7): no typer, rich, SDK, database driver or
cryptography until a name that needs one is used; every public name documented."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib

import pytest
from conftest import REPO

import byokctl

HEAVY = ("typer", "click", "rich", "anthropic", "openai", "httpx", "httpx2", "psycopg",
         "cryptography", "keyring", "pydantic")

PROBE = """
import json, sys
{code}
print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r}))))
"""


def loaded_after(code: str, env: dict | None = None) -> list[str]:
    """The heavy top-level packages a fresh interpreter has loaded after running `code`."""
    proc = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
                          capture_output=True, text=True, cwd=REPO, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_import_byokctl_loads_nothing_heavy():
    assert loaded_after("import byokctl") == []


def test_the_errors_and_the_vault_class_load_nothing_heavy():
    code = ("import byokctl\nfrom byokctl import ByokError, NoKey, PlanGate, Vault, AsyncVault\n"
            "assert issubclass(NoKey, ByokError) and byokctl.__version__")
    assert loaded_after(code) == []


def test_a_resolve_through_the_api_loads_no_sdk_and_no_cli(cli, vault):
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    import os

    code = (f"import byokctl\nwith byokctl.Vault.open({str(vault)!r}) as v:\n"
            "    assert v.resolve('acme').org == 'acme'")
    loaded = loaded_after(code, env={**os.environ})
    assert not set(loaded) & {"typer", "click", "rich", "anthropic", "openai", "httpx2"}, loaded


def test_every_public_name_is_importable_and_documented():
    assert byokctl.__version__ == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for name in byokctl.__all__:
        value = getattr(byokctl, name)
        if name != "__version__":
            assert (value.__doc__ or "").strip(), f"byokctl.{name} has no docstring"
    assert set(dir(byokctl)) >= set(byokctl.__all__)
    with pytest.raises(AttributeError):
        byokctl.NoSuchThing  # noqa: B018


@pytest.mark.parametrize("name", ["UsageError", "NotFound", "Denied", "PlanGate", "NoKey",
                                  "KeyRejected", "RateLimited", "Insufficient", "VaultLocked",
                                  "ProviderDown", "Conflict", "Integrity"])
def test_every_exit_code_has_its_error_class_at_the_top(name):
    cls = getattr(byokctl, name)
    assert issubclass(cls, byokctl.ByokError)
    err = cls("what went wrong", "the fix")
    assert err.code == byokctl.ExitCode[err.code.name] and err.code.label
    assert err.fix == "the fix" and str(err) == "what went wrong; the fix"


def test_the_public_methods_are_annotated_and_documented():
    import inspect

    for cls in (byokctl.Vault, byokctl.AsyncVault, byokctl.Call, byokctl.AsyncCall):
        for name, member in inspect.getmembers(cls):
            if name.startswith("_") or not callable(member):
                continue
            assert (member.__doc__ or "").strip(), f"{cls.__name__}.{name} has no docstring"
            hints = inspect.signature(member).return_annotation
            assert hints is not inspect.Signature.empty, f"{cls.__name__}.{name}: no return type"


def test_the_package_is_typed():
    assert (REPO / "byokctl" / "py.typed").exists()
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["byokctl"]
