"""The master key wrapped by a PKCS#11 HSM key, through the commands: `init --kms 'pkcs11:...'`,
every later command finding the key from the stored reference, `vault status`, moving to and
from the HSM with `rotate-master`, and the HSM's failures at unlock. Against a real SoftHSM2
token (tests/softhsm.py); the module itself is tested in tests/vault/test_pkcs11.py."""

from __future__ import annotations

import base64
import json
import os

import pytest
from conftest import all_rows, audit_rows, vault_db
from conftest import meta_value as _meta
from softhsm import USER_PIN

from byokctl.errors import ExitCode


def _json(r):  # noqa: ANN001, ANN202
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _add_key(cli) -> str:  # noqa: ANN001
    from conftest import ANTHROPIC_TEST_KEY

    return _json(cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
                     input=ANTHROPIC_TEST_KEY))["id"]


@pytest.fixture
def hsm_vault(cli, softhsm) -> str:  # noqa: ANN001
    """A vault whose master key a new key on the SoftHSM2 token wraps, org acme and one key."""
    reference = softhsm.reference("master")
    init = _json(cli("init", "--kms", reference, "--create-key", "--json"))
    assert init["master_source"] == "kms"
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    _add_key(cli)
    return init["master_reference"]


def test_init_on_the_hsm_then_every_command_finds_the_key(cli, softhsm, emulator):
    reference = softhsm.reference("master")
    r = cli("init", "--kms", reference)  # no such key yet, and not asked to create it
    assert r.exit_code == ExitCode.VAULT_LOCKED and "--create-key" in r.stderr, r.output
    init = _json(cli("init", "--kms", reference, "--create-key", "--json"))
    stored = init["master_reference"]
    assert stored.startswith("pkcs11:") and "pin" not in stored.split("?")[0]
    assert _meta("master_kms_ref") == stored and _meta("master_source") == "kms"
    blob = base64.b64decode(_meta("master_kms_blob"))
    assert blob[0] == 1 and len(blob) == 1 + 12 + 32 + 16  # version, IV, the wrapped key, tag
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    key_id = _add_key(cli)
    r = cli("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--base-url",
            emulator.anthropic_base_url, "--yes")
    assert r.exit_code == 0, r.output
    assert _json(cli("ask", "acme", "hello", "--no-stream", "--json"))["key_id"] == key_id
    status = cli("vault", "status", "--json")
    st = _json(status)
    assert st["unlocked"] and st["master_source"] == "kms" and st["master_reference"] == stored
    human = cli("vault", "status")
    for shown in (status.output, human.output, json.dumps(audit_rows(vault_db()))):
        assert USER_PIN not in shown
    assert USER_PIN.encode() not in b"".join(repr(r).encode() for r in all_rows(vault_db()))
    assert _json(cli("vault", "check", "--json"))["ok"]
    assert _json(cli("vault", "rekey", "--json"))["reencrypted"] == 1


def test_a_malformed_reference_is_a_usage_error_and_a_pin_in_it_is_refused(cli, softhsm):
    r = cli("init", "--kms", "pkcs11:token=x")
    assert r.exit_code == ExitCode.USAGE, r.output
    r = cli("init", "--kms", softhsm.reference("master") + "&pin-value=" + USER_PIN)
    assert r.exit_code == ExitCode.USAGE and USER_PIN not in r.output, r.output


def test_a_wrong_or_missing_pin_locks_only_what_needs_the_key(cli, hsm_vault, monkeypatch):
    before = all_rows(vault_db())
    monkeypatch.setenv("BYOKCTL_PKCS11_PIN", "0000-wrong")
    r = cli("key", "add", "acme", "--provider", "openai", "--from-stdin", input="sk-proj-" + "w" * 40)
    assert r.exit_code == ExitCode.VAULT_LOCKED and "PIN" in r.stderr, r.output
    assert "0000-wrong" not in r.output
    monkeypatch.delenv("BYOKCTL_PKCS11_PIN")
    r = cli("credits", "add", "acme", "5")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "BYOKCTL_PKCS11_PIN" in r.stderr, r.output
    assert all_rows(vault_db()) == before  # nothing written on a failed unwrap
    for args in (("org", "list"), ("key", "list"), ("audit", "log")):
        assert cli(*args).exit_code == 0, args  # no secret needed: no HSM asked


def test_a_pin_file_named_in_the_reference_is_used(cli, softhsm, tmp_path, monkeypatch):
    pin = tmp_path / "pin"
    pin.write_text(USER_PIN + "\n")
    pin.chmod(0o600)
    monkeypatch.delenv("BYOKCTL_PKCS11_PIN")
    reference = softhsm.reference("master") + f"&pin-source=file:{pin}"
    _json(cli("init", "--kms", reference, "--create-key", "--json"))
    assert cli("org", "create", "acme").exit_code == 0
    _add_key(cli)
    assert _json(cli("vault", "check", "--json"))["ok"]


SOURCES = ("env", "keyring", "file", "pkcs11", "transit")


def _start(cli, source: str, softhsm, transit: str, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    if source == "env":
        monkeypatch.setenv("BYOKCTL_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
        _json(cli("init", "--json"))
    elif source == "keyring":  # the tests' in-memory keyring (conftest's `isolated`)
        _json(cli("init", "--json"))
    elif source == "file":
        _json(cli("init", "--master-key-file", str(tmp_path / "keys" / "master.key"), "--json"))
    elif source == "pkcs11":
        _json(cli("init", "--kms", softhsm.reference("first"), "--create-key", "--json"))
    else:
        _json(cli("init", "--kms", transit, "--json"))
    assert cli("org", "create", "acme").exit_code == 0
    _add_key(cli)


@pytest.mark.slow  # half a second or more each
@pytest.mark.parametrize(("source", "target"), [(s, t) for s in SOURCES for t in SOURCES
                                                if "pkcs11" in (s, t)])
def test_rotate_master_moves_to_and_from_the_hsm(cli, source, target, softhsm, transit, bao_server,
                                                tmp_path, monkeypatch, isolated):
    _start(cli, source, softhsm, transit, tmp_path, monkeypatch)
    if target == "pkcs11":  # a new HSM key (from pkcs11: another key on the same token)
        args = ["--kms", softhsm.reference("second"), "--create-key"]
    elif target == "transit":
        args = ["--kms", f"vault-transit:transit/{bao_server.new_key()}"]
    elif target == "file":
        args = ["--master-key-file", str(tmp_path / "keys2" / "new.key")]
    elif target == "keyring":
        args = ["--keyring"]
    else:
        args = ["--env"]
    moved = _json(cli("vault", "rotate-master", *args, "--json"))
    if target == "env":
        monkeypatch.setenv("BYOKCTL_MASTER_KEY", moved["master_key"])
    else:
        monkeypatch.delenv("BYOKCTL_MASTER_KEY", raising=False)
    if target != "transit":
        monkeypatch.delenv("VAULT_TOKEN")
    if target != "keyring":  # only the target's key is left
        isolated.entries.clear()
    st = _json(cli("vault", "status", "--json"))
    assert st["unlocked"], st["locked_reason"]
    assert st["master_source"] == ("kms" if target in ("pkcs11", "transit") else target)
    check = _json(cli("vault", "check", "--json"))
    assert check["ok"] and check["keys_checked"] == 1
    if target == "pkcs11":
        assert st["master_reference"].startswith("pkcs11:") and "object=" in st["master_reference"]
    [entry] = audit_rows(vault_db(), "vault.rotate_master")
    assert USER_PIN not in json.dumps(entry)
