"""The audit log: `audit log` filters (no master key needed), and `audit verify` naming the first
entry of every kind of tampering with the file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import connect

from byokctl.vault import macs

ITEM_FIELDS = {"seq", "ts", "actor", "action", "org", "target", "before", "after",
               "os_user"}  # os_user: added by issue 6/11 (the OS account behind --as)


@pytest.fixture
def history(cli, vault: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Seven entries: 1 vault.init, 2-3 org.create, 4 org.set_provider, 5-6 member.add (by
    alice), 7 org.create."""
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    assert cli("org", "create", "beta").exit_code == 0
    assert cli("org", "set-provider", "acme", "anthropic", "--yes").exit_code == 0
    monkeypatch.setenv("BYOKCTL_ACTOR", "alice")
    assert cli("member", "add", "acme", "sam@acme.com", "--role", "staffing").exit_code == 0
    assert cli("member", "add", "acme", "ivy@acme.com", "--role", "interviewer").exit_code == 0
    monkeypatch.setenv("BYOKCTL_ACTOR", "tester")
    assert cli("org", "create", "gamma").exit_code == 0
    return vault


def log(cli, *args: str) -> list[dict]:
    r = cli("audit", "log", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def seqs(cli, *args: str) -> list[int]:
    return [e["seq"] for e in log(cli, *args)]


def tamper(db: Path, *statements: tuple[str, tuple]) -> None:
    conn = connect(db)
    for sql, params in statements:
        conn.execute(sql, params)
    conn.commit()
    conn.close()


def verify(cli) -> tuple[int, dict, str]:
    r = cli("audit", "verify", "--json")
    return r.exit_code, json.loads(r.stdout), r.stderr


# ---- audit log ----------------------------------------------------------------------------------

def test_log_items_newest_first_with_the_stable_fields(cli, history: Path) -> None:
    items = log(cli)
    assert [e["seq"] for e in items] == [7, 6, 5, 4, 3, 2, 1]
    assert all(set(e) == ITEM_FIELDS for e in items)
    change = next(e for e in items if e["action"] == "org.set_provider")
    assert change["org"] == "acme" and change["actor"] == "tester"
    assert change["before"]["provider"] == "platform" and change["after"]["provider"] == "anthropic"
    assert items[-1]["action"] == "vault.init"


def test_log_filters(cli, history: Path) -> None:
    assert seqs(cli, "--org", "acme") == [6, 5, 4, 2]
    assert seqs(cli, "--action", "org.create") == [7, 3, 2]
    assert seqs(cli, "--action", "org") == [7, 4, 3, 2]  # a group: org.*
    assert seqs(cli, "--action", "or") == []  # not a prefix match on characters
    assert seqs(cli, "--actor", "alice") == [6, 5]
    assert seqs(cli, "--org", "acme", "--actor", "tester") == [4, 2]
    assert seqs(cli, "--limit", "2") == [7, 6]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
    assert seqs(cli, "--since", tomorrow) == []
    assert seqs(cli, "--since", yesterday) == [7, 6, 5, 4, 3, 2, 1]
    fifth = log(cli, "--action", "member.add")[-1]["ts"]
    assert seqs(cli, "--since", fifth) == [7, 6, 5]  # an ISO time, to the microsecond


def test_log_rejects_bad_filters(cli, history: Path) -> None:
    r = cli("audit", "log", "--since", "last tuesday")
    assert r.exit_code == 2 and "YYYY-MM-DD" in r.stderr
    r = cli("audit", "log", "--limit", "0")
    assert r.exit_code == 2 and "--limit" in r.stderr


def test_log_for_people_shows_a_compact_change(cli, history: Path) -> None:
    r = cli("audit", "log", "--org", "acme", "--action", "org.set_provider")
    assert r.exit_code == 0, r.output
    text = "".join(r.stdout.split())  # columns may wrap on a narrow terminal
    assert "org.set_provider" in text and "provider:platform→anthropic" in text
    assert r.stderr == ""


def test_log_needs_no_master_key(cli, history: Path, isolated) -> None:
    isolated.entries.clear()  # the keyring lost the master key
    assert cli("org", "create", "delta").exit_code == 10
    assert seqs(cli, "--org", "beta") == [3]
    r = cli("audit", "verify")
    assert r.exit_code == 10, r.output  # verifying needs the MAC key


def test_log_as_a_member_needs_org_view(cli, history: Path) -> None:
    assert seqs(cli, "--org", "acme", "--as", "sam@acme.com") == [6, 5, 4, 2]
    r = cli("audit", "log", "--org", "acme", "--as", "ivy@acme.com")
    assert r.exit_code == 4, r.output
    r = cli("audit", "log", "--org", "beta", "--as", "sam@acme.com")
    assert r.exit_code == 4, r.output
    r = cli("audit", "log", "--as", "sam@acme.com")
    assert r.exit_code == 2 and "--org" in r.stderr


# ---- audit verify -------------------------------------------------------------------------------

def test_clean_log_verifies(cli, history: Path) -> None:
    code, doc, err = verify(cli)
    assert code == 0, err
    assert doc == {"ok": True, "checked": 7, "problems": []}
    r = cli("audit", "verify")
    assert r.exit_code == 0 and "7 entries verified" in r.stdout


COLS = "ts, actor, action, org, target, before, after, mac"


@pytest.mark.parametrize(
    ("statements", "first_bad", "words"),
    [
        pytest.param([("UPDATE audit SET actor = 'mallory' WHERE seq = 4", ())], 4, "MAC mismatch",
                     id="edit-actor"),
        pytest.param([("UPDATE audit SET after = replace(after, 'anthropic', 'openai') WHERE seq = 4",
                       ())], 4, "MAC mismatch", id="edit-after"),
        pytest.param([("UPDATE audit SET ts = '2020-01-01T00:00:00.000000Z' WHERE seq = 2", ())], 2,
                      "MAC mismatch", id="edit-time"),
        # values no entry byokctl writes can hold: reported, never a crash
        pytest.param([("UPDATE audit SET actor = CAST('tester' AS BLOB) WHERE seq = 4", ())], 4,
                     "MAC mismatch", id="blob-actor", marks=pytest.mark.sqlite_only),
        pytest.param([("UPDATE audit SET target = CAST(x'ff00fe' AS TEXT) WHERE seq = 3", ())], 3,
                     "MAC mismatch", id="target-not-utf8"),
        pytest.param([("UPDATE audit SET mac = CAST(x'ff' AS TEXT) WHERE seq = 5", ())], 5,
                     "MAC mismatch", id="mac-not-utf8"),
        pytest.param([("DELETE FROM audit WHERE seq = 3", ())], 3, "missing", id="delete-middle"),
        pytest.param([("DELETE FROM audit WHERE seq = 1", ())], 1, "missing", id="delete-first"),
        pytest.param([("DELETE FROM audit WHERE seq >= 6", ())], 6, "truncated", id="truncate-tail"),
        pytest.param([("DELETE FROM audit WHERE seq = 7", ())], 7, "truncated", id="truncate-last"),
        pytest.param([(f"INSERT INTO audit (seq, {COLS}) SELECT 8, {COLS} FROM audit WHERE seq = 7", ())],
                     8, "MAC mismatch", id="insert-copy-at-end"),
        pytest.param([("INSERT INTO audit (seq, ts, actor, action, org, target, mac) VALUES "
                       "(8, '2030-01-01T00:00:00.000000Z', 'tester', 'credits.add', 'acme', 'acme', ?)",
                       ("ab" * 32,))], 8, "MAC mismatch", id="insert-forged"),
        pytest.param([("UPDATE audit SET seq = seq + 100 WHERE seq >= 5", ()),
                       ("INSERT INTO audit (seq, ts, actor, action, org, target, mac) VALUES "
                        "(5, '2026-01-01T00:00:00.000000Z', 'tester', 'credits.add', 'acme', 'acme', ?)",
                        ("cd" * 32,)),
                       ("UPDATE audit SET seq = seq - 99 WHERE seq >= 100", ())],
                     5, "MAC mismatch", id="insert-in-the-middle"),
        pytest.param([("UPDATE audit SET seq = -2 WHERE seq = 2", ()),
                       ("UPDATE audit SET seq = 2 WHERE seq = 3", ()),
                       ("UPDATE audit SET seq = 3 WHERE seq = -2", ())], 2, "MAC mismatch",
                     id="reorder-swap"),
        pytest.param([("UPDATE meta SET value = '6:' || (SELECT mac FROM audit WHERE seq = 6) "
                       "WHERE key = 'audit_head'", ())], 7, "chain head altered", id="edit-head"),
        pytest.param([("DELETE FROM meta WHERE key = 'audit_head_tag'", ())], 7, "chain head altered",
                     id="delete-head-tag"),
        pytest.param([("DELETE FROM meta WHERE key IN ('audit_head', 'audit_head_tag')", ())], 1,
                     "chain head is missing", id="delete-head"),
        pytest.param([("DELETE FROM audit WHERE seq >= 5", ()),
                      ("DELETE FROM meta WHERE key IN ('audit_head', 'audit_head_tag')", ())], 1,
                     "chain head is missing", id="truncate-and-delete-head"),
        pytest.param([("DELETE FROM audit", ()),
                      ("DELETE FROM meta WHERE key IN ('audit_head', 'audit_head_tag')", ())], 1,
                     "deleted", id="delete-everything"),
    ],
)
def test_verify_names_the_first_bad_entry(cli, history: Path, statements, first_bad: int,
                                          words: str) -> None:
    tamper(history, *statements)
    code, doc, err = verify(cli)
    assert code == 13, err
    assert doc["ok"] is False
    assert doc["problems"][0]["seq"] == first_bad
    assert words in doc["problems"][0]["problem"]
    error = json.loads(err)["error"]
    assert error["code"] == "integrity"
    assert error["message"].startswith(f"Audit entry {first_bad}:")
    # also for people, and through `vault check`
    r = cli("audit", "verify")
    assert r.exit_code == 13 and f"Audit entry {first_bad}:" in r.stderr
    r = cli("vault", "check", "--json")
    assert r.exit_code == 13
    assert json.loads(r.stdout)["problems"][0]["seq"] == first_bad


def test_entries_with_any_text_verify(cli, vault: Path, monkeypatch) -> None:
    """The verifier's fast path (SQLite writes each entry's JSON) and `record` (Python's json)
    agree on quotes, backslashes, control characters and non-ASCII text."""
    from byokctl.services import rules

    # Control characters are refused at input now; a vault written before that may hold them.
    monkeypatch.setattr(rules, "plain_text", lambda value, what: value)
    name = 'Zoë "Q" \\ \t\x01\x7f 日本 🎉 \u2028 </script>'
    assert cli("org", "create", "acme", "--name", name).exit_code == 0
    assert cli("credits", "add", "acme", "5", "--reason", name + " ü").exit_code == 0
    code, doc, err = verify(cli)
    assert code == 0, err
    assert doc["ok"] is True and doc["checked"] == 3
    assert log(cli, "--org", "acme")[0]["after"]["reason"] == name + " ü"
    # the fast path alone, without its fallback: SQLite's JSON is byte for byte the reference
    from byokctl.store import open_any

    store = open_any(vault)
    try:
        fast = [body for _, body, _ in store.audit.chain_bodies()]
        reference = [macs.canonical(list(tuple(r)[:8])) for r in store.audit.in_order()]
    finally:
        store.close()
    assert fast == reference and len(fast) == 3


def test_entries_are_appended_after_a_head_that_verifies(cli, history: Path) -> None:
    """Sanity for the parametrised cases: the head names the last entry and new entries chain on."""
    conn = connect(history)
    head = conn.execute("SELECT value FROM meta WHERE key = 'audit_head'").fetchone()[0]
    last = conn.execute("SELECT seq, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    conn.close()
    assert head == f"{last[0]}:{last[1]}"
    assert cli("org", "create", "delta").exit_code == 0
    code, doc, err = verify(cli)
    assert code == 0 and doc["checked"] == 8, err
