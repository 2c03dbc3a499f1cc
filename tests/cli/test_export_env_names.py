"""`export` writes each key's from_env as it was given (`apply`, `key add --from-env`), stored
as a NAME only, and invents a name only for keys entered otherwise; `apply` with many missing
variables lists them one per line, in human and JSON output."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, all_rows, connect

ACME_KEY = "sk-ant-api03-" + "EnvN4me0K1" * 4
PLATFORM_KEY = "sk-proj-" + "Pl4tf0rmK3" * 4

FILE = """
[platform]
provider = "openai"
model = "gpt-5-mini"

[[platform.keys]]
provider = "openai"
from_env = "PLATFORM_OPENAI"

[orgs.acme]
plan = "growth"

[orgs.acme.members]
"bob@acme.com" = "staffing"

[[orgs.acme.keys]]
provider = "anthropic"
from_env = "ACME_CLAUDE"

[orgs.beta]
plan = "growth"

[[orgs.beta.keys]]
provider = "anthropic"
from_env = "BYOKCTL_KEY_ZETA_ANTHROPIC"
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "provision.toml"
    path.write_text(text)
    return str(path)


def exported(cli) -> dict:
    r = cli("export", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def names(doc: dict) -> dict[tuple, str]:
    """(org or None, member, provider) -> from_env of every exported key."""
    out = {(None, k.get("member"), k["provider"]): k["from_env"]
           for k in doc.get("platform", {}).get("keys", [])}
    for slug, org in doc["orgs"].items():
        out.update({(slug, k.get("member"), k["provider"]): k["from_env"] for k in org["keys"]})
    return out


def test_export_writes_the_names_keys_were_given(cli, vault, tmp_path, monkeypatch):
    monkeypatch.setenv("ACME_CLAUDE", ACME_KEY)
    monkeypatch.setenv("PLATFORM_OPENAI", PLATFORM_KEY)
    monkeypatch.setenv("BYOKCTL_KEY_ZETA_ANTHROPIC", ANTHROPIC_TEST_KEY)
    r = cli("apply", write(tmp_path, FILE))
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("BOBS_OWN", OPENAI_TEST_KEY)
    r = cli("key", "add", "acme", "--provider", "openai", "--member", "bob@acme.com", "--from-env",
            "BOBS_OWN", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["from_env"] == "BOBS_OWN"
    assert cli("org", "create", "zeta", "--plan", "growth").exit_code == 0
    r = cli("key", "add", "zeta", "--provider", "anthropic", "--from-stdin",
            input=ANTHROPIC_TEST_KEY + "\n")
    assert r.exit_code == 0, r.output

    got = names(exported(cli))
    assert got == {
        (None, None, "openai"): "PLATFORM_OPENAI",
        ("acme", None, "anthropic"): "ACME_CLAUDE",
        ("acme", "bob@acme.com", "openai"): "BOBS_OWN",
        ("beta", None, "anthropic"): "BYOKCTL_KEY_ZETA_ANTHROPIC",
        # Entered at stdin: a name is made up, and not the one beta's key was given.
        ("zeta", None, "anthropic"): "BYOKCTL_KEY_ZETA_ANTHROPIC_2",
    }
    toml = cli("export").stdout
    assert 'from_env = "ACME_CLAUDE"' in toml and "set $ACME_CLAUDE to its secret" in toml

    # Only names are stored: no secret anywhere in the keys table but sealed.
    conn = connect(vault)
    try:
        stored = {r[0] for r in conn.execute("SELECT from_env FROM keys").fetchall()}
    finally:
        conn.close()
    assert stored == {"PLATFORM_OPENAI", "ACME_CLAUDE", "BOBS_OWN", "BYOKCTL_KEY_ZETA_ANTHROPIC", None}
    text = repr(all_rows(vault))
    for secret in (ACME_KEY, PLATFORM_KEY, OPENAI_TEST_KEY, ANTHROPIC_TEST_KEY):
        assert secret not in text and secret not in toml

    # The export applies back as it is: nothing changes.
    monkeypatch.setenv("BYOKCTL_KEY_ZETA_ANTHROPIC_2", ANTHROPIC_TEST_KEY)
    r = cli("apply", "-", "--json", input=toml)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["changes"] == []
    # ...and now zeta's key has a name of its own too: the one the file gave it.
    assert names(exported(cli))[("zeta", None, "anthropic")] == "BYOKCTL_KEY_ZETA_ANTHROPIC_2"


def test_a_renamed_variable_is_followed_and_a_secret_entered_otherwise_forgets_it(
        cli, vault, tmp_path, monkeypatch):
    monkeypatch.setenv("ACME_CLAUDE", ACME_KEY)
    monkeypatch.setenv("PLATFORM_OPENAI", PLATFORM_KEY)
    monkeypatch.setenv("BYOKCTL_KEY_ZETA_ANTHROPIC", ANTHROPIC_TEST_KEY)
    assert cli("apply", write(tmp_path, FILE)).exit_code == 0
    monkeypatch.setenv("CLAUDE_FOR_ACME", ACME_KEY)  # the same secret, under a new name
    r = cli("apply", write(tmp_path, FILE.replace('"ACME_CLAUDE"', '"CLAUDE_FOR_ACME"')), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["changes"] == []  # no setting changed: only the name followed
    assert names(exported(cli))[("acme", None, "anthropic")] == "CLAUDE_FOR_ACME"

    [acme] = [k for k in json.loads(cli("key", "list", "acme", "--json").stdout)]
    r = cli("key", "rotate", acme["id"], "--from-stdin", "--no-test",
            input="sk-ant-api03-" + "N3wS3cr3tX" * 4 + "\n")
    assert r.exit_code == 0, r.output
    assert names(exported(cli))[("acme", None, "anthropic")] == "BYOKCTL_KEY_ACME_ANTHROPIC"
    monkeypatch.setenv("ROTATED_CLAUDE", "sk-ant-api03-" + "R0t4t3dK3y" * 4)
    r = cli("key", "rotate", acme["id"], "--from-env", "ROTATED_CLAUDE", "--no-test")
    assert r.exit_code == 0, r.output
    assert names(exported(cli))[("acme", None, "anthropic")] == "ROTATED_CLAUDE"


def test_many_missing_variables_are_listed_one_per_line(cli, vault, tmp_path):
    orgs = [f"org-{i:02d}" for i in range(40)]
    text = "".join(f'\n[orgs.{o}]\nplan = "growth"\n\n[[orgs.{o}.keys]]\nprovider = "anthropic"\n'
                   f'from_env = "KEY_OF_ORG_{i:02d}_WITH_A_RATHER_LONG_NAME"\n'
                   for i, o in enumerate(orgs))
    path = write(tmp_path, text)
    r = cli("apply", path)
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert lines[0].startswith("error: 40 environment variables the file names are not set")
    assert len(lines[0]) < 250  # one sentence, not 40 names in it
    listed = lines[1:]
    assert len(listed) == 40
    assert listed[0] == "  $KEY_OF_ORG_00_WITH_A_RATHER_LONG_NAME (orgs.org-00.keys[0])"
    assert all(ln.startswith("  $KEY_OF_ORG_") for ln in listed)

    r = cli("apply", path, "--json")
    assert r.exit_code == 2, r.output
    error = json.loads(r.stderr)["error"]
    assert error["code"] == "usage" and len(error["message"]) < 300
    assert error["details"]["missing"][39] == {"variable": "KEY_OF_ORG_39_WITH_A_RATHER_LONG_NAME",
                                               "path": "orgs.org-39.keys[0]"}
    assert cli("org", "list", "--json").stdout.strip() == "[]"  # nothing was applied

    one = write(tmp_path, text.split("\n[orgs.org-01]")[0])
    r = cli("apply", one)
    assert r.exit_code == 2, r.output
    assert r.stderr.strip() == ("error: Not set or empty: $KEY_OF_ORG_00_WITH_A_RATHER_LONG_NAME "
                                "(orgs.org-00.keys[0]); export it to its key's secret (apply reads "
                                "keys only from the environment), then run apply again")
