"""Hostile review 6/11, item 2: an org admin points the org's base_url at her own server to
collect a member's personal key. A personal key now goes only to the provider's official
endpoint or to a base_url its owner (or the platform operator) approved (SPEC §1)."""

from __future__ import annotations

import json
import secrets
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ANTHROPIC_TEST_KEY, audit_rows, connect, vault_db

ALPHABET = string.ascii_letters + string.digits
PROMPT = "hello"


def personal_secret() -> str:
    return "sk-ant-api03-bob-" + "".join(secrets.choice(ALPHABET) for _ in range(40))


class Collector:
    """A hostile loopback HTTP server: records every credential header it is sent, answers
    every request with a plausible 200 (an empty model list) so that a leak looks like success."""

    def __init__(self) -> None:
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                seen.append({h: self.headers.get(h) for h in ("Authorization", "x-api-key",
                                                                "api-key")})
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                body = json.dumps({"data": [], "object": "list", "has_more": False}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def saw(self, secret: str) -> bool:
        return any(secret in (v or "") for h in self.seen for v in h.values())

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.stop()


@pytest.fixture
def acme_with_bobs_key(cli, vault, emulator) -> dict:
    """acme on growth (Anthropic, official endpoint); alice is its admin, bob an interviewer
    with his own personal key (valid at the emulator)."""
    bob = personal_secret()
    emulator.allow_key(bob, "anthropic")
    for args in (("org", "create", "acme", "--plan", "growth"),
                 ("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--yes"),
                 ("member", "add", "acme", "alice@acme.com", "--role", "admin"),
                 ("member", "add", "acme", "bob@acme.com", "--role", "interviewer")):
        r = cli(*args)
        assert r.exit_code == 0, r.output
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "bob@acme.com",
            "--as", "bob@acme.com", "--from-stdin", "--json", input=bob)
    assert r.exit_code == 0, r.output
    return {"secret": bob, "key": json.loads(r.stdout)["id"]}


def _db() -> Path | str:
    return vault_db()


def point(cli, url: str, *, as_: str | None = "alice@acme.com") -> None:
    args = ["org", "set-provider", "acme", "anthropic", "--base-url", url, "--yes"]
    r = cli(*args, *(["--as", as_] if as_ else []))
    assert r.exit_code == 0, r.output


def resolved(cli, as_: str = "bob@acme.com") -> dict:
    r = cli("resolve", "acme", "--as", as_, "--json")
    return json.loads(r.stdout)


def test_admin_cannot_collect_a_members_key_on_her_server(cli, acme_with_bobs_key, collector):
    point(cli, collector.url)  # alice, admin, points acme at her server
    bob_key = acme_with_bobs_key["key"]

    r = cli("key", "test", bob_key, "--as", "alice@acme.com")
    assert r.exit_code == 4, r.output
    assert "bob@acme.com has not approved" in r.stderr and "nothing was sent" in r.stderr
    assert f"byokctl key approve-endpoint {bob_key}" in r.stderr
    assert "Traceback" not in r.output

    r = cli("key", "test", bob_key, "--as", "bob@acme.com")  # not even the owner, unapproved
    assert r.exit_code == 4, r.output

    d = resolved(cli)
    assert d["key_id"] is None and d["error"]["code"] == "no-key"
    assert d["skipped_keys"] == [{"key_id": bob_key, "key_scope": "member",
                                  "reason": "endpoint-not-approved", "base_url": collector.url,
                                  "fix": f"approve it with `byokctl key approve-endpoint {bob_key} "
                                         "--as bob@acme.com`"}]
    assert any("skipped" in why and collector.url in why for why in d["reasons"])

    r = cli("ask", "acme", PROMPT, "--as", "bob@acme.com", "--no-stream")
    assert r.exit_code == 6, r.output
    assert "not approved" in r.stderr and "key approve-endpoint" in r.stderr

    # alice cannot approve it for him, and nothing she ran was an approval.
    r = cli("key", "approve-endpoint", bob_key, "--as", "alice@acme.com")
    assert r.exit_code == 4, r.output
    assert "only bob@acme.com or the platform operator" in r.stderr
    assert cli("key", "test", bob_key, "--as", "alice@acme.com").exit_code == 4
    # Her own setting approved the URL for her own personal key (she has none yet), not his.
    assert [json.loads(a["after"])["member"] for a in audit_rows(_db(), "key.approve_endpoint")] \
        == ["alice@acme.com"]

    # A rotation (tested first) and a new key added with --test are refused before the
    # secret is even asked for: nothing reaches the server either way.
    r = cli("key", "rotate", bob_key, "--as", "bob@acme.com", "--from-stdin",
            input=personal_secret())
    assert r.exit_code == 4, r.output
    assert not collector.saw(acme_with_bobs_key["secret"]) and collector.seen == []


def test_with_an_org_key_the_skipped_personal_key_says_why(cli, acme_with_bobs_key, collector):
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=ANTHROPIC_TEST_KEY)
    assert r.exit_code == 0, r.output
    org_key = json.loads(r.stdout)["id"]
    point(cli, collector.url)
    r = cli("resolve", "acme", "--as", "bob@acme.com")
    assert r.exit_code == 0, r.output
    assert org_key in r.stdout and f"key {acme_with_bobs_key['key']} is skipped" in r.stdout
    assert "approve-endpoint" in r.stderr  # the warning: the org key is used instead
    d = resolved(cli)
    assert (d["key_id"], d["key_scope"], d["mode"]) == (org_key, "org", "byok")
    assert [s["key_id"] for s in d["skipped_keys"]] == [acme_with_bobs_key["key"]]
    cli("ask", "acme", PROMPT, "--as", "bob@acme.com", "--no-stream")  # the org key goes there
    assert collector.seen and not collector.saw(acme_with_bobs_key["secret"])


def test_owner_approval_then_ask_works_and_a_new_base_url_needs_a_new_one(cli, acme_with_bobs_key, emulator,
                                                                          collector):
    bob_key = acme_with_bobs_key["key"]
    point(cli, emulator.anthropic_base_url)  # alice points acme at a (here benign) gateway
    assert resolved(cli)["key_id"] is None
    r = cli("key", "approve-endpoint", bob_key, "--as", "bob@acme.com", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert (done["approved"], done["changed"], done["approved_as"], done["base_url"]) == (
        True, True, "owner", emulator.anthropic_base_url)
    r = cli("key", "approve-endpoint", bob_key, "--as", "bob@acme.com")
    assert r.exit_code == 0 and "already approved" in r.stdout

    r = cli("ask", "acme", PROMPT, "--as", "bob@acme.com", "--no-stream", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["key_id"] == bob_key
    assert emulator.requests[-1].key_hint == acme_with_bobs_key["secret"][-4:]
    assert cli("key", "test", bob_key, "--as", "alice@acme.com").exit_code == 0  # approved: ok
    [entry] = [e for e in audit_rows(_db(), "key.approve_endpoint") if e["actor"] == "bob@acme.com"]
    assert entry["target"] == bob_key and json.loads(entry["after"])["approved_as"] == "owner"
    assert acme_with_bobs_key["secret"][-16:] not in json.dumps(audit_rows(_db()))

    # alice moves the org to her own server: bob's approval does not follow.
    point(cli, collector.url)
    assert resolved(cli)["skipped_keys"][0]["base_url"] == collector.url
    assert cli("ask", "acme", PROMPT, "--as", "bob@acme.com").exit_code == 6
    assert cli("key", "test", bob_key, "--as", "alice@acme.com").exit_code == 4
    assert collector.seen == []
    # Back to the URL bob approved (spelt differently): approved again.
    point(cli, emulator.anthropic_base_url + "/")
    assert resolved(cli)["key_id"] == bob_key

    # bob withdraws it: skipped again.
    r = cli("key", "revoke-endpoint", bob_key, "--as", "bob@acme.com", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["changed"] is True
    assert resolved(cli)["key_id"] is None
    assert [a["action"] for a in audit_rows(_db(), "key.revoke_endpoint")] == ["key.revoke_endpoint"]


def test_operator_approves_for_a_member_and_setting_it_is_no_approval(cli, acme_with_bobs_key, emulator):
    point(cli, emulator.anthropic_base_url, as_=None)  # the operator set it: still not approved
    assert resolved(cli)["key_id"] is None
    r = cli("key", "approve-endpoint", acme_with_bobs_key["key"], "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["approved_as"] == "operator"
    assert resolved(cli)["key_id"] == acme_with_bobs_key["key"]
    r = cli("key", "list", "acme", "--json")
    [listed] = [k for k in json.loads(r.stdout) if k["id"] == acme_with_bobs_key["key"]]
    assert [(a["base_url"], a["approved_as"]) for a in listed["approved_endpoints"]] == [
        (emulator.anthropic_base_url, "operator")]
    assert "may be sent to" in cli("key", "list", "acme").stdout


def test_an_admin_who_sets_the_base_url_has_approved_it_for_her_own_key(cli, acme_with_bobs_key, emulator):
    alice = personal_secret()
    emulator.allow_key(alice, "anthropic")
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "alice@acme.com",
            "--as", "alice@acme.com", "--from-stdin", "--json", input=alice)
    assert r.exit_code == 0, r.output
    alice_key = json.loads(r.stdout)["id"]
    point(cli, emulator.anthropic_base_url)
    assert resolved(cli, "alice@acme.com")["key_id"] == alice_key
    assert resolved(cli, "bob@acme.com")["key_id"] is None  # hers only
    [entry] = audit_rows(_db(), "key.approve_endpoint")
    assert entry["actor"] == "alice@acme.com" and json.loads(entry["after"])["member"] == \
        "alice@acme.com"


def test_an_admin_who_only_changes_the_model_approves_nothing(cli, acme_with_bobs_key, emulator):
    alice = personal_secret()
    emulator.allow_key(alice, "anthropic")
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "alice@acme.com",
            "--as", "alice@acme.com", "--from-stdin", "--json", input=alice)
    assert r.exit_code == 0, r.output
    point(cli, emulator.anthropic_base_url, as_=None)  # set by the operator
    r = cli("org", "set-provider", "acme", "anthropic", "--model", "sonnet", "--yes",
            "--as", "alice@acme.com")
    assert r.exit_code == 0, r.output
    assert resolved(cli, "alice@acme.com")["key_scope"] is None  # the URL is kept, not hers
    assert audit_rows(_db(), "key.approve_endpoint") == []


def test_official_endpoint_needs_no_approval(cli, acme_with_bobs_key):
    d = resolved(cli)
    assert (d["key_id"], d["skipped_keys"]) == (acme_with_bobs_key["key"], [])
    r = cli("key", "approve-endpoint", acme_with_bobs_key["key"], "--as", "bob@acme.com")
    assert r.exit_code == 2 and "official endpoint" in r.stderr and "needs no approval" in r.stderr


def test_key_add_test_refuses_before_the_secret_is_read(cli, acme_with_bobs_key, collector):
    point(cli, collector.url)
    r = cli("member", "add", "acme", "carol@acme.com", "--role", "staffing")
    assert r.exit_code == 0, r.output
    carol = personal_secret()
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "carol@acme.com",
            "--as", "carol@acme.com", "--test", "--from-stdin", input=carol)
    assert r.exit_code == 4, r.output
    assert "store the key without --test" in r.stderr
    assert collector.seen == []
    assert json.loads(cli("key", "list", "acme", "--json").stdout)[0]["member"] == "bob@acme.com"


def test_approval_is_for_members_own_keys_only(cli, acme_with_bobs_key):
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=ANTHROPIC_TEST_KEY)
    org_key = json.loads(r.stdout)["id"]
    r = cli("key", "approve-endpoint", org_key, "--base-url", "https://gw.example.com")
    assert r.exit_code == 2 and "members' personal keys" in r.stderr
    assert cli("org", "create", "beta", "--plan", "growth").exit_code == 0
    assert cli("member", "add", "beta", "eve@beta.com", "--role", "admin").exit_code == 0
    r = cli("key", "approve-endpoint", acme_with_bobs_key["key"], "--as", "eve@beta.com",
            "--base-url", "https://gw.example.com")
    assert r.exit_code == 3, r.output  # another org's key is not even acknowledged


@pytest.mark.parametrize(("a", "b", "same"), [
    ("HTTPS://GW.Example.com:443/v1/", "https://gw.example.com/v1", True),
    ("http://gw.example.com:80", "http://gw.example.com", True),
    ("http://gw.example.com", "https://gw.example.com", False),   # another scheme
    ("https://gw.example.com:8443", "https://gw.example.com", False),
    ("https://gw.example.com/V1", "https://gw.example.com/v1", False),  # paths are case-sensitive
    ("https://gw.example.com.evil.io", "https://gw.example.com", False),
    ("https://u:p@gw.example.com", "https://gw.example.com", False),
])
def test_an_approval_is_for_one_endpoint_however_it_is_spelt(a, b, same):
    from byokctl.services.endpoints import normalise

    assert (normalise(a) == normalise(b)) is same


def test_approvals_read_without_the_master_key_and_leave_with_the_member(cli, acme_with_bobs_key, emulator,
                                                                         isolated):
    point(cli, emulator.anthropic_base_url)
    assert cli("key", "approve-endpoint", acme_with_bobs_key["key"], "--as", "bob@acme.com").exit_code == 0
    ring = dict(isolated.entries)
    isolated.entries.clear()  # no master key: read-only commands still see the approval
    assert resolved(cli)["key_id"] == acme_with_bobs_key["key"]
    [bob] = [k for k in json.loads(cli("key", "list", "acme", "--json").stdout) if k["member"]]
    assert len(bob["approved_endpoints"]) == 1
    isolated.entries.update(ring)
    # bob leaves; someone re-added under his email starts with no approval.
    assert cli("member", "remove", "acme", "bob@acme.com", "--yes").exit_code == 0
    assert cli("member", "add", "acme", "bob@acme.com", "--role", "interviewer").exit_code == 0
    r = cli("key", "add", "acme", "--provider", "anthropic", "--member", "bob@acme.com",
            "--from-stdin", "--json", input=personal_secret())
    assert r.exit_code == 0, r.output
    assert resolved(cli)["skipped_keys"][0]["key_id"] == json.loads(r.stdout)["id"]


def test_another_member_may_not_approve_either(cli, acme_with_bobs_key):
    assert cli("member", "add", "acme", "sam@acme.com", "--role", "staffing").exit_code == 0
    r = cli("key", "approve-endpoint", acme_with_bobs_key["key"], "--as", "sam@acme.com",
            "--base-url", "https://gw.example.com")
    assert r.exit_code == 4 and "only bob@acme.com or the platform operator" in r.stderr


def test_an_approval_written_into_the_file_without_the_master_key_is_refused(cli, acme_with_bobs_key,
                                                                              collector):
    """The approval rows decide where a personal key may go, so they carry a row MAC: one
    inserted (or copied) with sqlite3 alone is refused at use, exit 13, nothing sent, and
    `vault check` names it."""

    point(cli, collector.url)  # alice points acme at her server; bob never approves it
    conn = connect(_db())
    conn.execute("INSERT INTO endpoint_approvals (org, member, provider, base_url, approved_by, "
                 "approved_as, approved_at, mac) VALUES ('acme', 'bob@acme.com', 'anthropic', ?, "
                 "'bob@acme.com', 'owner', '2026-01-01T00:00:00Z', ?)",
                 (collector.url, "0" * 64))
    conn.close()

    for args in (("key", "test", acme_with_bobs_key["key"], "--as", "alice@acme.com"),
                 ("ask", "acme", PROMPT, "--as", "bob@acme.com", "--no-stream")):
        r = cli(*args)
        assert r.exit_code == 13, r.output
        assert "approval" in r.stderr and "changed outside byokctl" in r.stderr
    assert not collector.saw(acme_with_bobs_key["secret"]) and collector.seen == []

    r = cli("vault", "check", "--json")
    assert r.exit_code == 13, r.output
    assert {"approval": "acme/bob@acme.com/anthropic",
            "problem": "endpoint approval changed outside byokctl (MAC mismatch)"} in \
        json.loads(r.stdout)["problems"]
