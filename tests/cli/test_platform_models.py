"""`platform set-default|show` and `models list`."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, audit_rows, connect

from byokctl.providers import catalog


def meta(db, key):
    conn = connect(db)
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    conn.close()
    return None if row is None else row[0]


def test_show_builtin_default(cli, vault):
    r = cli("platform", "show", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"provider": "anthropic", "model": "claude-sonnet-5-5",
                                    "base_url": None, "configured": False, "key_id": None}
    r = cli("platform", "show")
    assert "built-in default" in r.stdout


def test_set_default_pins_alias_stores_meta_and_audits(cli, vault):
    r = cli("platform", "set-default", "openai", "--model", "gpt-5-mini",
            "--base-url", "https://gw.example.com/v1/", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["changed"] is True
    assert out["provider"] == "openai" and out["model"] == "gpt-5-mini-2025-08-07"
    assert out["base_url"] == "https://gw.example.com/v1"
    assert out["before"]["provider"] == "anthropic"
    assert meta(vault, "platform_provider") == "openai"
    assert meta(vault, "platform_model") == "gpt-5-mini-2025-08-07"
    assert meta(vault, "platform_base_url") == "https://gw.example.com/v1"
    [entry] = audit_rows(vault, "platform.set_default")
    assert entry["org"] is None and entry["actor"] == "tester"
    assert json.loads(entry["before"]) == {"provider": "anthropic",
                                           "model": "claude-sonnet-5-5", "base_url": None}
    assert json.loads(entry["after"]) == {"provider": "openai", "model": "gpt-5-mini-2025-08-07",
                                          "base_url": "https://gw.example.com/v1"}
    # no platform key for openai yet: said on stderr, not in the JSON
    assert "no platform key for openai" in r.stderr


def test_set_default_drives_platform_mode_resolution(cli, vault):
    cli("org", "create", "acme", "--credits", "5")
    cli("platform", "set-default", "openai", "--model", "o3")
    shown = json.loads(cli("org", "show", "acme", "--json").stdout)
    assert shown["effective_provider"] == "openai"
    assert shown["effective_model"] == "o3-2025-04-16"


def test_set_default_without_base_url_clears_it(cli, vault):
    cli("platform", "set-default", "openai", "--model", "o3", "--base-url", "https://x.example/v1")
    r = cli("platform", "set-default", "anthropic", "--model", "haiku", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["base_url"] is None
    assert meta(vault, "platform_base_url") is None


def test_set_default_unchanged_writes_nothing(cli, vault):
    cli("platform", "set-default", "anthropic", "--model", "opus")
    r = cli("platform", "set-default", "anthropic", "--model", "claude-opus-5-5")
    assert r.exit_code == 0, r.output
    assert "nothing changed" in r.stdout
    assert len(audit_rows(vault, "platform.set_default")) == 1


def test_set_default_unknown_model_is_not_found(cli, vault):
    r = cli("platform", "set-default", "anthropic", "--model", "gpt-5")
    assert r.exit_code == 3, r.output
    assert "Unknown anthropic model 'gpt-5'" in r.stderr
    assert meta(vault, "platform_model") is None


def test_set_default_denies_any_member(cli, vault):
    cli("org", "create", "acme")
    cli("member", "add", "acme", "boss@acme.com", "--role", "admin")
    r = cli("platform", "set-default", "openai", "--model", "o3", "--as", "boss@acme.com")
    assert r.exit_code == 4, r.output
    assert "platform operator" in r.stderr
    assert meta(vault, "platform_provider") is None


def test_show_needs_no_master_key(cli, vault, isolated):
    cli("platform", "set-default", "openai", "--model", "o3")
    isolated.entries.clear()
    r = cli("platform", "show", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model"] == "o3-2025-04-16"


def test_models_list_json_covers_the_catalog(cli):
    r = cli("models", "list", "--json")  # no vault exists in this test
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    cat = catalog.load()
    assert out["catalog_version"] == cat.version
    assert [m["id"] for m in out["models"]] == [m.id for m in cat.models]
    sonnet = next(m for m in out["models"] if "sonnet" in m["aliases"])
    assert sonnet == {"provider": "anthropic", "id": "claude-sonnet-5-5",
                      "aliases": ["sonnet"], "input_per_mtok": 2.0, "output_per_mtok": 10.0,
                      "deprecated": None, "successor": None, "status": "active",
                      "end_of_life": None, "default": True, "catalog_version": cat.version}
    old = next(m for m in out["models"] if m["id"] == "claude-sonnet-4-5-20250929")
    assert old["deprecated"] == "2026-11-30" and old["aliases"] == ["claude-sonnet-4-5"]
    defaults = {m["provider"]: m["id"] for m in out["models"] if m["default"]}
    assert defaults == {"anthropic": "claude-sonnet-5-5",
                        "openai": "gpt-5-mini-2025-08-07"}


def test_models_list_filters_by_provider_and_renders_a_table(cli):
    r = cli("models", "list", "--provider", "openai", "--json")
    assert {m["provider"] for m in json.loads(r.stdout)["models"]} == {"openai"}
    r = cli("models", "list", "--provider", "anthropic")
    assert r.exit_code == 0, r.output
    assert "haiku" in r.stdout and "sonnet" in r.stdout and "opus" in r.stdout
    assert "gpt-5" not in r.stdout
    assert f"catalog {catalog.load().version}" in r.stdout


def test_models_list_unknown_provider(cli):
    r = cli("models", "list", "--provider", "mistral")
    assert r.exit_code == 2, r.output
    assert "Unknown provider 'mistral'" in r.stderr


def test_models_list_in_a_fresh_process_touches_no_vault_and_no_sdk(tmp_path: Path):
    """No vault file, no master key: the catalog still lists, and nothing heavy is imported."""
    code = (
        "import sys\n"
        "from byokctl.cli import app\n"
        "rc = app(['models', 'list', '--json'], standalone_mode=False)\n"
        "heavy = [m for m in ('anthropic', 'openai', 'cryptography', 'keyring') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    env = {**os.environ, "BYOKCTL_HOME": str(tmp_path / "nowhere")}
    env.pop("BYOKCTL_MASTER_KEY", None)
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["models"]
    assert "HEAVY []" in p.stderr
    assert not (tmp_path / "nowhere").exists()
