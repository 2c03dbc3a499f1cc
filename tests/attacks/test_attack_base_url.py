"""Where keys go and who is recorded: a plain-http base_url off loopback needs --allow-insecure,
a base_url with user:password@ is refused, a proxy from the environment never sees a request to a
loopback base_url, `--as` is normalised, `--until` obeys the grace cap, and an entry made with
`--as` records the OS user under the chain MAC."""

from __future__ import annotations

import asyncio
import json
import pwd
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import ANTHROPIC_TEST_KEY, EMULATOR_KEYS, connect

PASSWORD = "hunter2-Pa55word"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "provision.toml"
    path.write_text(text)
    return str(path)


# ---- base_url ----------------------------------------------------------------------------------

INSECURE = ["http://gateway.example.com/v1", "http://10.0.0.7:8080", "http://[2001:db8::1]/v1",
            "http://127.0.0.1.evil.example"]
LOOPBACK = ["http://127.0.0.1:9", "http://localhost:9/v1", "http://[::1]:9", "http://127.9.9.9"]


@pytest.mark.parametrize("url", INSECURE)
def test_plain_http_off_loopback_needs_allow_insecure(cli, acme, tmp_path, url):
    for argv in (["org", "set-provider", "acme", "anthropic", "--base-url", url, "--yes"],
                 ["platform", "set-default", "anthropic", "--model", "haiku", "--base-url", url]):
        r = cli(*argv)
        assert r.exit_code == 2, r.output
        assert "plain http" in r.stderr and "--allow-insecure" in r.stderr
        r = cli(*argv, "--allow-insecure", "--json")
        assert r.exit_code == 0, r.output
    for allow in ("", "allow_insecure = true\n"):
        doc = (f'[platform]\nprovider = "openai"\nmodel = "gpt-5-mini"\nbase_url = "{url}/x"\n{allow}'
               f'[orgs.beta]\nplan = "growth"\nprovider = "openai"\nbase_url = "{url}/y"\n{allow}')
        r = cli("apply", write(tmp_path, doc))
        assert r.exit_code == (0 if allow else 2), r.output
    # export writes the flag back, so its file applies again as it is
    exported = cli("export").stdout
    assert "allow_insecure = true" in exported
    assert cli("apply", write(tmp_path, exported), "--dry-run").exit_code == 0


@pytest.mark.parametrize("url", LOOPBACK + ["https://gateway.example.com/v1"])
def test_https_and_loopback_need_no_flag(cli, acme, url):
    r = cli("org", "set-provider", "acme", "anthropic", "--base-url", url, "--yes")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("url", [f"https://bob:{PASSWORD}@gateway.example.com/v1",
                                 f"http://bob:{PASSWORD}@127.0.0.1:9",
                                 f"https://{PASSWORD}@gateway.example.com"])
def test_a_base_url_with_credentials_is_refused_without_echo(cli, acme, tmp_path, url):
    for argv in (["org", "set-provider", "acme", "anthropic", "--base-url", url, "--yes"],
                 ["platform", "set-default", "anthropic", "--model", "haiku", "--base-url", url,
                  "--allow-insecure"]):
        for extra in ([], ["--json"]):
            r = cli(*argv, *extra)
            assert r.exit_code == 2, r.output
            assert "user name or password" in r.stderr
            assert PASSWORD not in r.output
    r = cli("apply", write(tmp_path, f'[orgs.acme]\nprovider = "anthropic"\nbase_url = "{url}"\n'
                                     "allow_insecure = true\n"))
    assert r.exit_code == 2 and PASSWORD not in r.output, r.output
    assert PASSWORD not in cli("audit", "log", "--json").stdout


# ---- the proxy -----------------------------------------------------------------------------------

class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that records every request (CONNECT too) and forwards none."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _record(self) -> None:
                outer.seen.append(f"{self.command} {self.path} {self.headers.get('authorization')}")
                self.send_response(502)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = do_CONNECT = do_PUT = _record

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever,
                         kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.fixture
def proxy(monkeypatch):
    p = RecordingProxy()
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(var, p.url)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    yield p
    p.server.shutdown()
    p.server.server_close()


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.parametrize(("provider", "org"), [("anthropic", "acme"), ("openai", "beta")])
def test_a_proxy_in_the_environment_never_sees_a_loopback_request(cli, vault, emulator, proxy,
                                                                   provider, org):
    assert cli("org", "create", org, "--plan", "growth").exit_code == 0
    assert cli("org", "set-provider", org, provider, "--base-url", emulator.base_url(provider),
               "--yes").exit_code == 0
    r = cli("key", "add", org, "--provider", provider, "--from-stdin", "--test", "--json",
            input=EMULATOR_KEYS[provider] + "\n")
    assert r.exit_code == 0, r.output
    key_id = json.loads(r.stdout)["id"]
    assert cli("key", "test", key_id).exit_code == 0
    for stream in ([], ["--no-stream"]):
        r = cli("ask", org, "hello", *stream)
        assert r.exit_code == 0, r.output
    assert proxy.seen == []
    assert len(emulator.requests) >= 4  # they went straight to the emulator


def test_the_async_clients_keep_the_proxy_rule(emulator, proxy):
    """The async SDK clients (AsyncVault's) go through the same transport rule as the sync
    ones: an endpoint on this machine never through the environment's proxy, any other one
    through it (a custom transport turns httpx's own proxy handling off)."""
    import openai

    from byokctl.providers import registry

    async def main() -> None:
        for provider in ("anthropic", "openai"):
            sdk = registry.get(provider).async_sdk_client(
                EMULATOR_KEYS[provider], base_url=emulator.base_url(provider), retries=0)
            try:
                await sdk.models.list()
            finally:
                await sdk.close()
        sdk = registry.get("openai").async_sdk_client("sk-elsewhere", retries=0,
                                                      base_url="http://gateway.invalid/v1")
        try:
            with pytest.raises(openai.InternalServerError):  # the proxy answers 502
                await sdk.models.list()
        finally:
            await sdk.close()

    asyncio.run(main())
    assert [r.endpoint for r in emulator.requests] == ["models", "models"]  # straight there
    assert [s.split()[:2] for s in proxy.seen] == [["GET", "http://gateway.invalid/v1/models"]]


# ---- --as, --until, the OS user in the audit -----------------------------------------------------

def test_as_is_normalised(cli, acme, emulator):
    assert cli("member", "add", "acme", "bob@acme.com", "--role", "admin").exit_code == 0
    assert cli("org", "set-provider", "acme", "anthropic", "--base-url", emulator.anthropic_base_url,
               "--yes").exit_code == 0
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", input=ANTHROPIC_TEST_KEY + "\n")
    assert r.exit_code == 0, r.output
    bob = " BOB@Acme.com "
    r = cli("ask", "acme", "hello", "--as", bob, "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(cli("usage", "show", "acme", "--by", "member", "--json").stdout)["rows"]
    assert [row["member"] for row in rows] == ["bob@acme.com"]
    r = cli("member", "add", "acme", "cy@acme.com", "--role", "staffing", "--as", bob)
    assert r.exit_code == 0, r.output
    assert json.loads(cli("audit", "log", "--json").stdout)[0]["actor"] == "bob@acme.com"
    r = cli("credits", "add", "acme", "5", "--as", bob)
    assert r.exit_code == 4 and r.stderr.startswith("error: bob@acme.com (admin) may not"), r.output


@pytest.mark.parametrize("argv", [["plan", "grant-grace", "acme", "--until", "9999-12-31"],
                                  ["plan", "grant-grace", "acme", "--until", "2040-01-01T00:00Z"]])
def test_until_obeys_the_grace_cap(cli, acme, argv):
    r = cli(*argv)
    assert r.exit_code == 2, r.output
    assert "3650 days" in r.stderr
    assert json.loads(cli("plan", "show", "acme", "--json").stdout)["grace_until"] is None


def test_until_in_an_apply_file_obeys_the_cap(cli, acme, tmp_path):
    r = cli("apply", write(tmp_path, '[orgs.acme]\nplan = "starter"\ngrace = { until = "9999-12-31" }\n'))
    assert r.exit_code == 2 and "3650 days" in r.stderr, r.output
    assert cli("plan", "grant-grace", "acme", "--days", "3650").exit_code == 0


def audit_rows(db: Path) -> list[dict]:
    conn = connect(db)
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY seq")]
    conn.close()
    return rows


def test_an_entry_made_with_as_records_the_os_user_under_the_mac(cli, acme):
    me = pwd.getpwuid(__import__("os").getuid()).pw_name
    assert cli("member", "add", "acme", "ann@acme.com", "--role", "admin").exit_code == 0
    r = cli("member", "add", "acme", "cy@acme.com", "--role", "staffing", "--as", " ANN@acme.com ")
    assert r.exit_code == 0, r.output
    log = json.loads(cli("audit", "log", "--json").stdout)
    assert (log[0]["actor"], log[0]["os_user"]) == ("ann@acme.com", me)
    assert log[1]["os_user"] is None  # the operator's own entry
    assert f"ann@acme.com (os: {me})" in cli("audit", "log").stdout
    assert cli("audit", "verify").exit_code == 0
    # the OS user is covered by the chain MAC: changing or dropping it is tampering
    seq = log[0]["seq"]
    for forged in ("someone-else", None):
        conn = connect(acme)
        conn.execute("UPDATE audit SET os_user = ? WHERE seq = ?", (forged, seq))
        conn.commit()
        conn.close()
        r = cli("audit", "verify", "--json")
        assert r.exit_code == 13, r.output
        assert json.loads(r.stdout)["problems"][0]["seq"] == seq
    conn = connect(acme)
    conn.execute("UPDATE audit SET os_user = ? WHERE seq = ?", (me, seq))
    conn.commit()
    conn.close()
    assert cli("audit", "verify").exit_code == 0


@pytest.mark.sqlite_only
def test_a_vault_from_before_the_os_user_migrates_and_still_verifies(cli, acme):
    assert cli("member", "add", "acme", "ann@acme.com", "--role", "admin").exit_code == 0
    # Make it the previous schema: no os_user column, user_version 4.
    conn = connect(acme)
    conn.execute("ALTER TABLE audit DROP COLUMN os_user")
    conn.execute("DROP TABLE reservations")
    conn.execute("ALTER TABLE orgs DROP COLUMN shortfall")
    conn.execute("DELETE FROM schema_migrations WHERE name IN ('m005_audit_os_user', "
                 "'m006_reservations')")
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    old = audit_rows(acme)
    r = cli("member", "add", "acme", "cy@acme.com", "--role", "staffing", "--as", "ann@acme.com")
    assert r.exit_code == 0, r.output
    rows = audit_rows(acme)
    assert [r["mac"] for r in rows[:len(old)]] == [r["mac"] for r in old]
    assert rows[-1]["os_user"] and all(r["os_user"] is None for r in rows[:-1])
    r = cli("audit", "verify", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["checked"] == len(rows)
