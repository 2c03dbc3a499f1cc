"""The master key wrapped by Vault transit: a real OpenBao dev server (tests/openbao.py), the
real anthropic SDK against the emulator, the CLI in-process (and as processes where imports
or a fresh start matter)."""

from __future__ import annotations

import base64
import json
import os
import sys

import pytest
from conftest import ANTHROPIC_TEST_KEY, all_rows, audit_rows, connect, stored_text, vault_db
from conftest import meta_value as _meta
from openbao import ROOT_TOKEN, transit_policy

from byokctl.errors import ExitCode


def _json(r):  # noqa: ANN001, ANN202
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _set_meta(key: str, value: str) -> None:
    conn = connect(vault_db())
    try:
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        conn.commit()
    finally:
        conn.close()


def _add_key(cli, org: str = "acme") -> str:  # noqa: ANN001
    return _json(cli("key", "add", org, "--provider", "anthropic", "--from-stdin", "--json",
                     input=ANTHROPIC_TEST_KEY))["id"]


@pytest.fixture
def kms_vault(cli, transit) -> str:  # noqa: ANN001
    """A vault whose master key the session's transit key wraps, with org acme and one key."""
    init = _json(cli("init", "--kms", transit, "--json"))
    assert init["master_source"] == "kms" and init["master_reference"] == transit
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    _add_key(cli)
    return transit


# -- init, use, status -------------------------------------------------------------------------
@pytest.mark.slow
def test_init_stores_the_reference_and_the_wrapped_key_and_commands_find_it(cli, transit, bao_server,
                                                                             emulator):
    name = transit.rsplit("/", 1)[1]
    init = _json(cli("init", "--kms", f"vault-transit:{name}", "--json"))  # short form, stored canonical
    assert init["master_reference"] == transit and init["master_source"] == "kms"
    assert _meta("master_source") == "kms" and _meta("master_kms_ref") == transit
    blob = base64.b64decode(_meta("master_kms_blob"))
    assert blob.startswith(b"vault:v1:")  # transit's ciphertext: the master key never stored plain
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    key_id = _add_key(cli)
    r = cli("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--base-url",
            emulator.anthropic_base_url, "--yes")
    assert r.exit_code == 0, r.output
    r = cli("ask", "acme", "hello", "--no-stream", "--json")
    assert _json(r)["key_id"] == key_id
    st = _json(cli("vault", "status", "--json"))
    assert st["master_source"] == "kms" and st["master_reference"] == transit and st["unlocked"]
    assert st["master_location"] == f"Vault transit key {transit.split(':')[1]} at {bao_server.addr}"
    human = cli("vault", "status")
    assert transit in human.stdout and ROOT_TOKEN not in human.output
    check = _json(cli("vault", "check", "--json"))
    assert check["ok"] and check["keys_checked"] == 1


@pytest.mark.slow
def test_init_refuses_a_missing_key_unless_asked_to_create_it(cli, transit, bao_server):
    missing = "vault-transit:transit/not-there-" + os.urandom(3).hex()
    r = cli("init", "--kms", missing)
    assert r.exit_code == ExitCode.VAULT_LOCKED, r.output
    assert "does not exist" in r.stderr and "--create-key" in r.stderr
    if not os.environ.get("BYOKCTL_DB"):
        assert not os.path.exists(vault_db())  # refused before the vault was created
    init = _json(cli("init", "--kms", missing, "--create-key", "--json"))
    assert init["master_reference"] == missing
    key = bao_server.api("GET", f"transit/keys/{missing.rsplit('/', 1)[1]}")["data"]
    assert key["type"] == "aes256-gcm96" and not key["exportable"]  # it never leaves Vault
    assert _json(cli("vault", "status", "--json"))["unlocked"]


def test_init_refuses_kms_with_another_source(cli, transit, env_key):
    r = cli("init", "--kms", transit)
    assert r.exit_code == ExitCode.USAGE and "BYOKCTL_MASTER_KEY" in r.stderr


def test_a_bad_reference_is_a_usage_error(cli, transit):
    for ref in ("vault-transit:", "vault-transit:a b", "nosuch:thing"):
        r = cli("init", "--kms", ref)
        assert r.exit_code == ExitCode.USAGE, (ref, r.output)


@pytest.mark.slow
def test_the_blob_is_bound_to_its_vault(cli, transit, monkeypatch, tmp_path, request):
    """A wrapped master key moved into another vault does not open there (the AAD names the
    vault id and the reference)."""
    _json(cli("init", "--kms", transit, "--json"))
    first = _meta("master_kms_blob")
    monkeypatch.setenv("BYOKCTL_HOME", str(tmp_path / "other"))
    if os.environ.get("BYOKCTL_DB"):  # --engine postgresql: another database
        monkeypatch.setenv("BYOKCTL_DB", request.getfixturevalue("pg_server").database())
    _json(cli("init", "--kms", transit, "--json"))
    _set_meta("master_kms_blob", first)
    r = cli("vault", "check")
    assert r.exit_code == ExitCode.VAULT_LOCKED, r.output
    assert "does not open this vault's wrapped master key" in r.stderr


def test_the_token_comes_from_the_vault_token_file(cli, transit, monkeypatch, tmp_path):
    _json(cli("init", "--kms", transit, "--json"))
    home = tmp_path / "userhome"
    home.mkdir()
    (home / ".vault-token").write_text(ROOT_TOKEN + "\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("VAULT_TOKEN")
    assert _json(cli("vault", "check", "--json"))["ok"]
    (home / ".vault-token").unlink()
    r = cli("vault", "check")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "VAULT_TOKEN" in r.stderr


@pytest.mark.slow
def test_no_token_anywhere(cli, transit, bao_server):
    """The token is in no output, no audit entry and nowhere in the stored vault."""
    token = bao_server.token(transit_policy(transit.rsplit("/", 1)[1]))
    os.environ["VAULT_TOKEN"] = token  # restored by the transit fixture's monkeypatch
    outputs = [cli("init", "--kms", transit, "--json"), cli("org", "create", "acme")]
    _add_key(cli)
    outputs += [cli("vault", "status"), cli("vault", "status", "--json"),
                cli("vault", "check", "--json"), cli("vault", "rotate-master", "--json")]
    bao_server.revoke(token)
    outputs.append(cli("vault", "check"))
    assert outputs[-1].exit_code == ExitCode.VAULT_LOCKED
    for r in outputs:
        assert token not in r.output
    assert token.encode() not in stored_text(vault_db())
    assert all(token not in json.dumps(row, default=str) for row in audit_rows(vault_db()))


# -- the commands that need no secret --------------------------------------------------------
@pytest.mark.slow
def test_cheap_commands_work_with_vault_stopped_and_import_no_kms_client(cli, own_bao, own_kms_vault):
    own_bao.stop()
    for args in (["key", "list", "--json"], ["org", "list", "--json"]):
        proc = _run_with_importtime(*args)
        assert proc.returncode == 0, proc.stderr
        loaded = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
        assert not {m for m in loaded if m in ("byokctl.vault.kms", "byokctl.vault.transit",
                                                "byokctl.vault.pkcs11") or m.startswith("httpx2")}
    r = cli("vault", "check")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "could not be reached" in r.stderr


def _run_with_importtime(*args: str):  # noqa: ANN202
    import subprocess

    from conftest import REPO

    return subprocess.run([sys.executable, "-X", "importtime", "-m", "byokctl", *args],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ}, timeout=60)


# -- failure modes: each exit 10 naming the fix, nothing written, cheap commands still work ----
def _fails_cleanly(cli, needle: str, fix: str) -> None:  # noqa: ANN001
    before = all_rows(vault_db())
    [key] = _json(cli("key", "list", "--json"))  # needs no secret, so it works now too
    for args in (["vault", "check"], ["key", "rotate", key["id"], "--from-stdin"],
                 ["org", "create", "beta"]):
        r = cli(*args, input=ANTHROPIC_TEST_KEY)
        assert r.exit_code == ExitCode.VAULT_LOCKED, (args, r.output)
        assert needle in r.stderr and fix in r.stderr and "Traceback" not in r.output
    assert all_rows(vault_db()) == before  # nothing written on a failed unwrap
    assert cli("key", "list").exit_code == 0 and cli("org", "list").exit_code == 0
    st = _json(cli("vault", "status", "--json"))
    assert not st["unlocked"] and needle in st["locked_reason"] and st["master_source"] == "kms"


@pytest.fixture
def own_kms_vault(cli, own_bao, monkeypatch) -> str:  # noqa: ANN001
    for var, value in own_bao.env().items():
        monkeypatch.setenv(var, value)
    ref = f"vault-transit:transit/{own_bao.new_key()}"
    _json(cli("init", "--kms", ref, "--json"))
    assert cli("org", "create", "acme").exit_code == 0
    _add_key(cli)
    return ref


@pytest.mark.slow
def test_vault_sealed(cli, own_kms_vault, own_bao):
    own_bao.seal()
    _fails_cleanly(cli, "is sealed", "unseal it")
    own_bao.unseal()
    assert _json(cli("vault", "check", "--json"))["ok"]


@pytest.mark.slow
def test_vault_unreachable(cli, own_kms_vault, own_bao):
    own_bao.stop()
    _fails_cleanly(cli, "could not be reached", "check $VAULT_ADDR")


@pytest.mark.slow
def test_token_revoked(cli, kms_vault, bao_server):
    token = bao_server.token(transit_policy(kms_vault.rsplit("/", 1)[1]))
    os.environ["VAULT_TOKEN"] = token
    assert _json(cli("vault", "check", "--json"))["ok"]
    bao_server.revoke(token)
    _fails_cleanly(cli, "refused the token: it is invalid or expired", "log in again")


@pytest.mark.slow
def test_token_expired(cli, kms_vault, bao_server):
    import time

    token = bao_server.token(transit_policy(kms_vault.rsplit("/", 1)[1]), ttl="1s")
    os.environ["VAULT_TOKEN"] = token
    time.sleep(1.6)
    _fails_cleanly(cli, "invalid or expired", "log in again")


@pytest.mark.slow
def test_token_lacking_the_policy(cli, kms_vault, bao_server):
    key = kms_vault.rsplit("/", 1)[1]
    os.environ["VAULT_TOKEN"] = bao_server.token()  # the default policy only
    _fails_cleanly(cli, f"may not decrypt with the transit key transit/{key}",
                   f"`update` on transit/decrypt/{key}")
    os.environ["VAULT_TOKEN"] = bao_server.token(transit_policy(key, read=False, encrypt=False))
    assert _json(cli("vault", "check", "--json"))["ok"]  # decrypt alone is enough for every day
    r = cli("vault", "rotate-master")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "may not read" in r.stderr


def test_key_deleted(cli, kms_vault, bao_server):
    bao_server.delete_key(kms_vault.rsplit("/", 1)[1])
    _fails_cleanly(cli, "does not exist", "restore the key in Vault")


# -- rewrap, rekey ----------------------------------------------------------------------------
def test_rewrap_after_a_transit_key_rotation(cli, kms_vault, bao_server):
    key = kms_vault.rsplit("/", 1)[1]
    data_keys = [tuple(r) for r in connect(vault_db()).execute(
        "SELECT id, wrapped FROM data_keys ORDER BY id").fetchall()]
    secrets = [tuple(r) for r in connect(vault_db()).execute(
        "SELECT id, nonce, ciphertext FROM keys ORDER BY id").fetchall()]
    assert bao_server.rotate_key(key) == 2
    r = _json(cli("vault", "rotate-master", "--rewrap", "--json"))
    assert r["master_reference"] == kms_vault and r["data_keys"] == 0
    assert base64.b64decode(_meta("master_kms_blob")).startswith(b"vault:v2:")
    conn = connect(vault_db())
    assert [tuple(x) for x in conn.execute("SELECT id, wrapped FROM data_keys ORDER BY id")] == data_keys
    assert [tuple(x) for x in conn.execute("SELECT id, nonce, ciphertext FROM keys ORDER BY id")] == secrets
    conn.close()
    # version 1 may no longer decrypt: only the rewrapped blob opens the vault now
    bao_server.api("POST", f"transit/keys/{key}/config", {"min_decryption_version": 2})
    assert _json(cli("vault", "check", "--json"))["ok"]
    assert audit_rows(vault_db(), "vault.rewrap_master")


def test_rewrap_needs_a_kms_vault(cli, vault):
    r = cli("vault", "rotate-master", "--rewrap")
    assert r.exit_code == ExitCode.USAGE and "key manager" in r.stderr


def test_rekey_on_a_transit_vault(cli, kms_vault):
    r = _json(cli("vault", "rekey", "--json"))
    assert r["keys"] == 1 and r["reencrypted"] == 1
    assert _json(cli("vault", "check", "--json"))["ok"]


# -- moving the master key between every pair of sources -------------------------------------
SOURCES = ("env", "keyring", "file", "kms")


def _init(cli, source: str, transit: str, tmp_path, monkeypatch) -> dict:  # noqa: ANN001
    """A vault on `source`, org acme and one key; what the test needs to reach the key."""
    if source == "env":
        key = base64.b64encode(os.urandom(32)).decode()
        monkeypatch.setenv("BYOKCTL_MASTER_KEY", key)
        _json(cli("init", "--json"))
    elif source == "keyring":
        _json(cli("init", "--json"))
    elif source == "file":
        _json(cli("init", "--master-key-file", str(tmp_path / "keys" / "master.key"), "--json"))
    else:
        _json(cli("init", "--kms", transit, "--json"))
    assert cli("org", "create", "acme").exit_code == 0
    _add_key(cli)
    return {}


def _target_args(target: str, transit2: str, tmp_path) -> list[str]:  # noqa: ANN001
    return {"env": ["--env"], "keyring": ["--keyring"], "kms": ["--kms", transit2],
            "file": ["--master-key-file", str(tmp_path / "keys2" / "new.key")]}[target]


@pytest.mark.slow  # half a second or more each, 16 of them
@pytest.mark.parametrize("target", SOURCES)
@pytest.mark.parametrize("source", SOURCES)
def test_rotate_master_moves_between_any_two_sources(cli, source, target, transit, bao_server, tmp_path,
                                                     monkeypatch, isolated):
    _init(cli, source, transit, tmp_path, monkeypatch)
    transit2 = f"vault-transit:transit/{bao_server.new_key()}"  # transit → another transit key
    moved = _json(cli("vault", "rotate-master", *_target_args(target, transit2, tmp_path), "--json"))
    assert moved["master_source"] == target
    left = dict(isolated.entries)  # the keyring after the move
    if target == "env":  # printed once; the old key opens until the new one is first used
        monkeypatch.setenv("BYOKCTL_MASTER_KEY", moved["master_key"])
        assert _json(cli("vault", "check", "--json"))["ok"]
    # Only the target's key is left: every other source is taken away.
    if target != "env":
        monkeypatch.delenv("BYOKCTL_MASTER_KEY", raising=False)
    if target != "keyring":
        isolated.entries.clear()
    if target != "kms":
        monkeypatch.delenv("VAULT_TOKEN")
    if source == "file" and target not in ("file", "env"):  # env: the old key waits for the new one
        assert not (tmp_path / "keys" / "master.key").exists()  # deleted: it opens no copy either
    st = _json(cli("vault", "status", "--json"))
    assert st["unlocked"], st["locked_reason"]
    assert st["master_source"] == target and _meta("master_source") == target
    assert st["master_reference"] == (transit2 if target == "kms" else None)
    check = _json(cli("vault", "check", "--json"))
    assert check["ok"] and check["keys_checked"] == 1
    if target != "kms":
        assert _meta("master_kms_ref") is None and _meta("master_kms_blob") is None
    if source == "keyring" and target not in ("keyring", "env"):
        assert not any(user.startswith("vault-") and not user.endswith(".head") for _, user in left)
    [entry] = [e for e in audit_rows(vault_db(), "vault.rotate_master")]
    assert target in entry["after"] and "hvs." not in entry["after"] and ROOT_TOKEN not in entry["after"]


def test_rotate_master_within_the_same_transit_key(cli, kms_vault):
    blob = _meta("master_kms_blob")
    r = _json(cli("vault", "rotate-master", "--json"))
    assert r["master_source"] == "kms" and r["master_reference"] == kms_vault and r["data_keys"] == 2
    assert _meta("master_kms_blob") != blob
    assert _json(cli("vault", "check", "--json"))["ok"]


def test_a_failed_wrap_changes_nothing(cli, vault, transit, isolated):
    """Moving to a transit key that does not exist fails before anything is written."""
    before = all_rows(vault_db())
    entries = dict(isolated.entries)
    r = cli("vault", "rotate-master", "--kms", "vault-transit:transit/absent-" + os.urandom(3).hex())
    assert r.exit_code == ExitCode.VAULT_LOCKED and "--create-key" in r.stderr
    assert all_rows(vault_db()) == before and isolated.entries == entries
    assert _json(cli("vault", "check", "--json"))["ok"]


def test_conflicting_targets_are_refused(cli, vault, transit):
    r = cli("vault", "rotate-master", "--kms", transit, "--keyring")
    assert r.exit_code == ExitCode.USAGE and "--kms and --keyring" in r.stderr


# -- the framework, the reference, the environment ---------------------------------------------
def test_references_are_parsed_and_stored_canonically():
    from byokctl.errors import UsageError
    from byokctl.vault import kms

    assert kms.canonical("vault-transit:byok") == "vault-transit:transit/byok"
    assert kms.canonical("vault-transit:team/transit/byok") == "vault-transit:team/transit/byok"
    assert kms.scheme("pkcs11:token=t;object=o") == "pkcs11"
    for bad in ("vault-transit:", "vault-transit:a b", "vault-transit:x/../y/", "aws-kms:alias/x", "plain"):
        with pytest.raises(UsageError):
            kms.canonical(bad)
    assert kms.master_aad("v1", "vault-transit:transit/k") != kms.master_aad("v2", "vault-transit:transit/k")


def test_the_transit_wrapper_is_a_kms_wrapper(transit):
    from byokctl.vault import kms

    wrapper = kms.open_wrapper(transit)
    try:
        assert isinstance(wrapper, kms.Wrapper) and wrapper.reference == transit
        blob = wrapper.wrap(b"k" * 32, b"aad")
        assert wrapper.unwrap(blob, b"aad") == b"k" * 32
        assert ROOT_TOKEN not in wrapper.describe() and ROOT_TOKEN.encode() not in blob
    finally:
        wrapper.close()


@pytest.mark.slow
def test_a_namespace_is_sent(cli, bao_server, monkeypatch):
    """$VAULT_NAMESPACE reaches Vault: the key exists only inside the namespace."""
    ns = "team" + os.urandom(3).hex()
    bao_server.api("POST", f"sys/namespaces/{ns}")
    import httpx2

    for path, body in (("sys/mounts/transit", {"type": "transit"}), ("transit/keys/nskey", {})):
        r = httpx2.post(f"{bao_server.addr}/v1/{path}", json=body, timeout=10,
                        headers={"X-Vault-Token": ROOT_TOKEN, "X-Vault-Namespace": ns})
        assert r.is_success, r.text
    for var, value in bao_server.env().items():
        monkeypatch.setenv(var, value)
    r = cli("init", "--kms", "vault-transit:nskey")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "does not exist" in r.stderr  # not at the root
    monkeypatch.setenv("VAULT_NAMESPACE", ns)
    init = _json(cli("init", "--kms", "vault-transit:nskey", "--json"))
    assert f"(namespace {ns})" in init["master_location"]
    assert _json(cli("vault", "check", "--json"))["ok"]
    monkeypatch.delenv("VAULT_NAMESPACE")
    r = cli("vault", "check")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "VAULT_NAMESPACE" in r.stderr


def test_a_wrong_address_is_unreachable(cli, kms_vault, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VAULT_ADDR", f"http://user:hunter2@127.0.0.1:{port}")
    r = cli("vault", "check")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "could not be reached" in r.stderr
    assert "hunter2" not in r.output and f"http://127.0.0.1:{port}" in r.stderr
    assert cli("key", "list").exit_code == 0


def test_an_unreadable_ca_file_is_named(cli, kms_vault, monkeypatch, tmp_path):
    monkeypatch.setenv("VAULT_ADDR", "https://127.0.0.1:8200")
    monkeypatch.setenv("VAULT_CACERT", str(tmp_path / "missing.pem"))
    r = cli("vault", "check")
    assert r.exit_code == ExitCode.VAULT_LOCKED and "VAULT_CACERT" in r.stderr and "missing.pem" in r.stderr
