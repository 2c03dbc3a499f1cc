"""A plain BYOK call's record (nothing reserved, the key active and staying so) is written
without the vault's whole write lock: the usage record and the key's last use in one
transaction that reads nothing first, guarded by the key's row as admission checked it
(services/calls.py `_recorded_alone`). These tests attack the guard: a key changed or forged
during the call, many calls on one key at once, a writer holding the vault."""

from __future__ import annotations

import json
import threading
import time

import anthropic
import pytest
from conftest import ANTHROPIC_TEST_KEY, WriteLock, connect, in_threads
from test_api_vault import PROMPT, setup_byok, usage

from byokctl import Vault


@pytest.fixture
def byok(cli, env_key, emulator, monkeypatch) -> dict:
    return setup_byok(cli, env_key, emulator, monkeypatch)


@pytest.fixture
def response(byok):
    """An Anthropic answer to hand to `call.record()` (the call itself is the platform's)."""
    with anthropic.Anthropic(api_key=ANTHROPIC_TEST_KEY,
                             base_url=byok["emulator"].anthropic_base_url) as sdk:
        return sdk.messages.create(model="claude-haiku-5-5", max_tokens=16,
                                   messages=[{"role": "user", "content": PROMPT}])


def _key(cli, byok) -> dict:
    r = cli("key", "list", "acme", "--json", env=byok["env"])
    assert r.exit_code == 0, r.output
    return next(k for k in json.loads(r.stdout) if k["id"] == byok["org_key"])


def test_a_key_tested_during_the_call_keeps_its_test_and_a_valid_mac(cli, byok, response):
    """`key test` elsewhere changes the key's row (test result, time) while the call runs:
    the record's guard sees the row is no longer the one admission read, so the record is
    written the checked way, and the row ends with both changes under a MAC that matches (a
    MAC written over the row as admission read it would make `vault check` fail)."""
    with Vault.open(byok["db"], master_key=byok["master"]) as v, v.client("acme") as call:
        r = cli("key", "test", byok["org_key"], env=byok["env"])
        assert r.exit_code == 0, r.output
        call.record(response)
    key = _key(cli, byok)
    assert key["test_result"] == "ok" and key["last_tested_at"] is not None
    assert key["last_used_at"] is not None and key["last_used_at"] >= key["last_tested_at"]
    assert usage(cli, byok, "acme")["totals"]["calls"] == 1
    r = cli("vault", "check", env=byok["env"])
    assert r.exit_code == 0, r.output


def test_a_key_row_forged_during_the_call_is_not_made_valid_by_its_record(cli, byok, response):
    """An attacker with write access rewrites the key's hint behind byokctl's back while the
    call runs, leaving its MAC: recording the call must not re-MAC the forged row into
    legitimacy (`vault check` still names it)."""
    with Vault.open(byok["db"], master_key=byok["master"]) as v, v.client("acme") as call:
        conn = connect(byok["db"])
        conn.execute("UPDATE keys SET hint = 'forged' WHERE id = ?", (byok["org_key"],))
        conn.close()
        call.record(response)
    r = cli("vault", "check", "--json", env=byok["env"])
    assert r.exit_code == 13, r.output
    assert byok["org_key"] in r.stdout


def test_calls_on_one_key_from_many_threads_are_each_recorded_once(cli, byok, response):
    """16 threads recording calls on the same key at once: their guards collide (each record
    changes the row the others read), and every call is still recorded exactly once."""
    with Vault.open(byok["db"], master_key=byok["master"]) as v:
        def work() -> None:
            for _ in range(4):
                with v.client("acme") as call:
                    call.record(response)

        assert in_threads(16, work) == []
    totals = usage(cli, byok, "acme")["totals"]
    assert totals["calls"] == 64 and totals["errors"] == 0
    assert totals["input_tokens"] == 64 * response.usage.input_tokens
    r = cli("usage", "show", "acme", "--by", "member", "--json", env=byok["env"])  # the records
    assert json.loads(r.stdout)["totals"]["calls"] == 64
    r = cli("vault", "check", env=byok["env"])
    assert r.exit_code == 0, r.output


def test_a_record_waits_for_a_writer_holding_the_vault(cli, byok, response):
    """Another process's write transaction holds the vault: the record waits for it (it
    never writes beside a writer's transaction), then goes in."""
    holder = WriteLock(byok["db"])
    done = threading.Event()
    with Vault.open(byok["db"], master_key=byok["master"]) as v, v.client("acme") as call:
        holder.take()
        try:
            def record() -> None:
                call.record(response)
                done.set()

            t = threading.Thread(target=record)
            t.start()
            assert not done.wait(0.5)  # waiting for the lock
        finally:
            holder.release()
        t.join(10)
        assert done.is_set()
    holder.close()
    assert usage(cli, byok, "acme")["totals"]["calls"] == 1
    assert _key(cli, byok)["last_used_at"] is not None


def test_a_record_does_not_wait_for_another_record(pg_url, monkeypatch, cli, emulator):
    """PostgreSQL: a plain BYOK record holds the write lock shared, so another one holding it
    (the lock held shared elsewhere, as a record in flight holds it) does not stop it."""
    import base64

    import psycopg
    from conftest import provision_byok

    from byokctl.store.postgres import WRITE_LOCK

    master = base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master)
    monkeypatch.setenv("BYOKCTL_DB", pg_url)
    assert cli("init").exit_code == 0
    provision_byok(cli, emulator)
    with anthropic.Anthropic(api_key=ANTHROPIC_TEST_KEY, base_url=emulator.anthropic_base_url) as sdk:
        answer = sdk.messages.create(model="claude-haiku-5-5", max_tokens=16,
                                     messages=[{"role": "user", "content": PROMPT}])
    other = psycopg.connect(pg_url, autocommit=True)
    try:
        with Vault.open(pg_url, master_key=base64.b64decode(master), busy_timeout=5) as v, \
                v.client("acme") as call:
            other.execute("BEGIN")
            other.execute(f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK})")
            started = time.monotonic()
            call.record(answer)
            took = time.monotonic() - started
        other.execute("ROLLBACK")
    finally:
        other.close()
    assert took < 2, took  # not the 5 s busy timeout
    r = cli("usage", "show", "acme", "--json")
    assert json.loads(r.stdout)["totals"]["calls"] == 1
