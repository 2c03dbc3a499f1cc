"""A plain BYOK call's record (nothing reserved, the key active and staying so) is written
without the vault's whole write lock: the usage record and the key's last use in one
transaction that reads nothing first, guarded by the key's row as admission checked it
(services/calls.py `_recorded_alone`). These tests attack the guard: a key changed or forged
during the call, many calls on one key at once, a writer holding the vault."""

from __future__ import annotations

import json
import threading
import time

import pytest
from conftest import WriteLock, anthropic_answer, connect, in_threads, pg_byok
from test_api_vault import PROMPT, setup_byok, usage

from byokctl import Vault


@pytest.fixture
def byok(cli, env_key, emulator, monkeypatch) -> dict:
    return setup_byok(cli, env_key, emulator, monkeypatch)


@pytest.fixture
def response(byok):
    return anthropic_answer(byok["emulator"], PROMPT)


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


def test_a_key_changed_by_a_writer_the_record_waited_for_keeps_its_change(cli, byok, response,
                                                                            monkeypatch):
    """A writer changes the key's row (a test result) and holds the vault while the record
    waits for it: the record, once it runs, finds the row changed, and the usual way records
    the call over the writer's change (a MAC computed from the row as admission read it
    would have undone the change's MAC: `vault check` would fail)."""
    from byokctl.services import keys
    from byokctl.services.context import open_context

    monkeypatch.setenv("BYOKCTL_MASTER_KEY", byok["env"]["BYOKCTL_MASTER_KEY"])
    holding, go = threading.Event(), threading.Event()

    def change() -> None:
        writer = open_context(byok["db"])  # its own connection, in its own thread
        try:
            with writer.write():
                keys.mark_tested(writer, byok["org_key"], result="ok", status="active")
                holding.set()
                go.wait(10)
        finally:
            writer.close()

    with Vault.open(byok["db"], master_key=byok["master"]) as v, v.client("acme") as call:
        t = threading.Thread(target=change)
        t.start()
        assert holding.wait(10)
        threading.Timer(0.5, go.set).start()  # the record is waiting by then
        started = time.monotonic()
        call.record(response)
        waited = time.monotonic() - started
        t.join(10)
    assert waited >= 0.4, waited
    key = _key(cli, byok)
    assert key["test_result"] == "ok" and key["last_used_at"] >= key["last_tested_at"]
    assert usage(cli, byok, "acme")["totals"]["calls"] == 1
    r = cli("vault", "check", env=byok["env"])
    assert r.exit_code == 0, r.output


def _pg_byok(pg_url, monkeypatch, cli, emulator) -> tuple[bytes, dict, object]:  # noqa: ANN001
    """A PostgreSQL vault with provision_byok's orgs: (master key, what it made, an answer)."""
    master, made = pg_byok(pg_url, monkeypatch, cli, emulator)
    return master, made, anthropic_answer(emulator, PROMPT)


def _calls(cli) -> dict:
    r = cli("usage", "show", "acme", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["totals"]


def _waiting_for_the_lock(pg_url: str, n: int) -> None:
    """Until `n` requests for the vault's write lock wait on the server."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as c:
        for _ in range(200):
            if c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                         "AND NOT granted").fetchone()[0] >= n:
                return
            time.sleep(0.02)
    raise AssertionError(f"{n} waiting lock requests never showed")


def test_a_record_holds_the_write_lock_shared_until_it_is_written(pg_url, monkeypatch, cli,
                                                                  emulator):
    """PostgreSQL: the write lock is held, shared, while the record's statement writes (a
    trigger makes the usage insert slow enough to look), not only while it is taken."""
    import psycopg

    from byokctl.store.postgres import WRITE_LOCK

    master, _, answer = _pg_byok(pg_url, monkeypatch, cli, emulator)
    watcher = psycopg.connect(pg_url, autocommit=True)
    watcher.execute("CREATE FUNCTION slow_insert() RETURNS trigger AS $$ BEGIN "
                    "PERFORM pg_sleep(0.5); RETURN NEW; END $$ LANGUAGE plpgsql")
    watcher.execute("CREATE TRIGGER slow BEFORE INSERT ON usage FOR EACH ROW "
                    "EXECUTE FUNCTION slow_insert()")
    held = []
    with Vault.open(pg_url, master_key=master) as v, v.client("acme") as call:
        t = threading.Thread(target=call.record, args=(answer,))
        t.start()
        while t.is_alive() and not held:
            held = watcher.execute(
                "SELECT mode FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE "
                "l.locktype = 'advisory' AND l.objid = %s AND l.granted AND a.wait_event = "
                "'PgSleep'", (WRITE_LOCK,)).fetchall()
            time.sleep(0.02)
        t.join(10)
    watcher.close()
    assert [m for (m,) in held] == ["ShareLock"]
    assert _calls(cli)["calls"] == 1


def test_a_writer_s_schema_change_does_not_deadlock_with_a_waiting_record(pg_url, monkeypatch,
                                                                          cli, emulator):
    """PostgreSQL: a writer holding the vault (a migration) changes a table's schema while a
    record waits for the lock. The record takes the lock before it touches any table, as
    every write transaction does, so the writer's DDL goes through and so does the record."""
    import psycopg

    from byokctl.store.postgres import WRITE_LOCK

    master, _, answer = _pg_byok(pg_url, monkeypatch, cli, emulator)
    writer = psycopg.connect(pg_url, autocommit=True)
    # Were the record to hold a table lock while it waits, the server would find the cycle
    # only after deadlock_timeout, and end either side: set past the writer's lock timeout,
    # the writer's DDL fails, whichever side the server would have picked.
    name = writer.execute("SELECT current_database()").fetchone()[0]
    writer.execute(f'ALTER DATABASE "{name}" SET deadlock_timeout = \'60s\'')
    writer.execute("SET deadlock_timeout = '60s'")
    writer.execute("SET lock_timeout = 5000")
    errors: list[BaseException] = []
    with Vault.open(pg_url, master_key=master, busy_timeout=10) as v, v.client("acme") as call:
        writer.execute("BEGIN")
        writer.execute(f"SELECT pg_advisory_xact_lock({WRITE_LOCK})")

        def record() -> None:
            try:
                call.record(answer)
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)

        t = threading.Thread(target=record)
        t.start()
        _waiting_for_the_lock(pg_url, 1)
        writer.execute("CREATE INDEX keys_probe ON keys (hint)")  # a deadlock raises here
        writer.execute("COMMIT")
        t.join(20)
    writer.close()
    assert errors == []
    assert _calls(cli)["calls"] == 1


def test_a_record_whose_connection_was_lost_while_it_waited_is_counted_once(
        pg_url, monkeypatch, cli, emulator):
    """PostgreSQL: the record is sent (BEGIN, lock, statement and COMMIT together) and waits
    for a writer; its connection is lost meanwhile. The server still runs what it was sent
    once the writer is done, and byokctl, on a new connection, must not record the call a
    second time: it looks at the key's row under the lock first."""
    import os
    import socket

    master, _, answer = _pg_byok(pg_url, monkeypatch, cli, emulator)
    holder = WriteLock(pg_url)
    with Vault.open(pg_url, master_key=master, busy_timeout=10) as v, v.client("acme") as call:
        conn = v._context(None).store.conn  # this thread's: the one the record goes through
        holder.take()

        def cut_then_release() -> None:
            _waiting_for_the_lock(pg_url, 1)  # the record, sent, waits
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as s:
                s.shutdown(socket.SHUT_RDWR)
            time.sleep(0.3)
            holder.release()

        t = threading.Thread(target=cut_then_release)
        t.start()
        call.record(answer)
        t.join(20)
    holder.close()
    totals = _calls(cli)
    assert (totals["calls"], totals["errors"]) == (1, 0)
    assert totals["input_tokens"] == answer.usage.input_tokens


@pytest.mark.parametrize("kept", [True, False])
def test_a_record_whose_answer_was_lost_is_counted_once(pg_url, monkeypatch, cli, emulator, kept):
    """PostgreSQL: the connection is lost after the record was sent, either once the server
    kept it (its answer never came) or before it got there. Either way the call is recorded
    once, and no error comes out: the usual way finds the record kept, or writes it."""
    import psycopg

    from byokctl.store.postgres import PostgresStore

    master, _, answer = _pg_byok(pg_url, monkeypatch, cli, emulator)
    sent = PostgresStore.shared_write

    def lost(self, sql, params):  # noqa: ANN001, ANN202 - PostgresStore.shared_write's
        if kept:
            sent(self, sql, params)
        self.conn.close()  # the network failed: this connection is gone
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresStore, "shared_write", lost)
    with Vault.open(pg_url, master_key=master) as v, v.client("acme") as call:
        call.record(answer)
    totals = _calls(cli)
    assert (totals["calls"], totals["errors"]) == (1, 0)
    assert cli("vault", "check").exit_code == 0


def test_a_record_does_not_wait_for_another_record(pg_url, monkeypatch, cli, emulator):
    """PostgreSQL: a plain BYOK record holds the write lock shared, so another one holding it
    (the lock held shared elsewhere, as a record in flight holds it) does not stop it."""
    import psycopg

    from byokctl.store.postgres import WRITE_LOCK

    master, _, answer = _pg_byok(pg_url, monkeypatch, cli, emulator)
    other = psycopg.connect(pg_url, autocommit=True)
    try:
        with Vault.open(pg_url, master_key=master, busy_timeout=5) as v, \
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
    assert _calls(cli)["calls"] == 1
