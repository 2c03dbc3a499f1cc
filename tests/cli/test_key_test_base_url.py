"""`key test KEY --base-url URL` and `key add --test --base-url URL`: a key tested at any endpoint
(the emulator, a regional one) whatever the org's provider, through the real SDKs; a personal key
only where its owner approved; an unreachable endpoint named in the error, never a secret."""

from __future__ import annotations

import json
import socket

import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY
from conftest import added_key as add
from conftest import listed_keys as listed

from byokctl.services import audit
from byokctl.services.context import open_context


def audited_tests() -> list[audit.Entry]:
    ctx = open_context(None)
    try:
        return audit.log(ctx, action="key.test")
    finally:
        ctx.close()


def model_calls(emulator) -> list:
    return [r for r in emulator.requests if r.endpoint == "models"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def platform_org(cli, acme) -> str:
    """acme stays on platform mode: its keys have no base_url to go to but the provider's."""
    assert cli("member", "add", "acme", "bob@acme.com", "--role", "interviewer").exit_code == 0
    assert cli("member", "add", "acme", "ann@acme.com", "--role", "admin").exit_code == 0
    return "acme"


@pytest.mark.parametrize(("provider", "secret"), [("anthropic", ANTHROPIC_TEST_KEY),
                                                  ("openai", OPENAI_TEST_KEY)])
def test_an_org_key_of_a_provider_the_org_does_not_use_is_tested_at_the_url(
        cli, platform_org, emulator, provider, secret):
    k = add(cli, "acme", "--provider", provider, secret=secret)
    url = emulator.base_url(provider)
    r = cli("key", "test", k["id"], "--base-url", url, "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["test_result"], got["base_url"]) == ("ok", url) and got["models"] > 0
    [call] = model_calls(emulator)
    assert (call.provider, call.key_hint, call.status) == (provider, secret[-4:], 200)
    [entry] = audited_tests()
    assert entry.after["base_url"] == url and entry.after["test_result"] == "ok"

    human = cli("key", "test", k["id"], "--base-url", url)
    assert human.exit_code == 0, human.output
    assert f"models visible at {url}" in human.stdout


def test_the_platform_key_is_tested_at_the_url_without_a_platform_default(cli, vault, emulator):
    k = add(cli, "--platform", "--provider", "openai", secret=OPENAI_TEST_KEY)
    r = cli("key", "test", k["id"], "--base-url", emulator.openai_base_url, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["test_result"] == "ok"
    assert [c.key_hint for c in model_calls(emulator)] == [OPENAI_TEST_KEY[-4:]]


def test_a_test_elsewhere_records_the_result_but_leaves_the_status(cli, platform_org, emulator):
    k = add(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    emulator.revoke_key(ANTHROPIC_TEST_KEY, "anthropic")
    r = cli("key", "test", k["id"], "--base-url", emulator.anthropic_base_url)
    assert r.exit_code == 7, r.output
    [row] = listed(cli, "acme")
    assert (row["status"], row["test_result"]) == ("active", "rejected")  # judged elsewhere

    # Where the key is used, the same answer marks it invalid, as a plain `key test` would.
    r = cli("org", "set-provider", "acme", "anthropic", "--base-url", emulator.anthropic_base_url,
            "--yes")
    assert r.exit_code == 0, r.output
    r = cli("key", "test", k["id"], "--base-url", emulator.anthropic_base_url + "/")
    assert r.exit_code == 7, r.output
    assert listed(cli, "acme")[0]["status"] == "invalid"


def test_add_with_test_at_a_url_stores_the_key_only_if_it_passes_there(cli, platform_org, emulator):
    url = emulator.openai_base_url
    r = cli("key", "add", "acme", "--provider", "openai", "--from-stdin", "--test", "--base-url",
            url, "--json", input=OPENAI_TEST_KEY + "\n")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["test_result"], got["status"]) == ("ok", "active")
    assert len(model_calls(emulator)) == 1

    bad = "sk-proj-" + "q" * 40
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--test",
            "--base-url", emulator.anthropic_base_url, input="sk-ant-api03-" + "q" * 40 + "\n")
    assert r.exit_code == 7, r.output
    assert [k["provider"] for k in listed(cli, "acme")] == ["openai"]  # nothing stored
    assert bad not in r.output

    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--base-url", url,
            input=ANTHROPIC_TEST_KEY + "\n")
    assert r.exit_code == 2 and "--test" in r.stderr, r.output


def test_an_unreachable_url_is_named_in_the_error_without_the_secret(cli, platform_org, emulator):
    k = add(cli, "acme", "--provider", "openai", secret=OPENAI_TEST_KEY)
    url = f"http://127.0.0.1:{closed_port()}/openai/v1"
    r = cli("key", "test", k["id"], "--base-url", url, "--retries", "0", "--json")
    assert r.exit_code == 11, r.output
    error = json.loads(r.stderr)["error"]
    assert error["code"] == "provider-down" and url in error["message"]
    assert OPENAI_TEST_KEY[8:24] not in r.output
    assert listed(cli, "acme")[0]["test_result"] == "unreachable"

    emulator.inject(provider="openai", status=500)  # up, but failing: the URL is named too
    r = cli("key", "test", k["id"], "--base-url", emulator.openai_base_url, "--retries", "0")
    assert r.exit_code == 11, r.output
    assert f"is unavailable at {emulator.openai_base_url}" in r.stderr


def test_a_url_that_cannot_be_right_is_refused_before_any_call(cli, platform_org, emulator):
    k = add(cli, "acme", "--provider", "openai", secret=OPENAI_TEST_KEY)
    for url, says in (("http://gateway.example.com/v1", "give an https URL"),
                      ("https://user:pw@gateway.example.com/v1", "user name or password"),
                      ("ftp://x", "not an http(s) URL")):
        r = cli("key", "test", k["id"], "--base-url", url)
        assert r.exit_code == 2, r.output
        assert says in r.stderr and "--allow-insecure" not in r.stderr and "pw@" not in r.stderr
    assert model_calls(emulator) == [] and audited_tests() == []


def test_a_personal_key_goes_only_where_its_owner_approved(cli, platform_org, emulator):
    url = emulator.anthropic_base_url
    own = add(cli, "acme", "--provider", "anthropic", "--member", "bob@acme.com",
              secret=ANTHROPIC_TEST_KEY)
    for actor in (("--as", "ann@acme.com"), ("--as", "bob@acme.com"), ()):  # admin, owner, operator
        r = cli("key", "test", own["id"], "--base-url", url, *actor)
        assert r.exit_code == 4, r.output
        assert "has not approved" in r.stderr
        assert f"approve-endpoint {own['id']} --base-url {url} --as bob@acme.com" in r.stderr
    assert model_calls(emulator) == [] and audited_tests() == []  # nothing was sent

    # The same before a personal key is even typed: `key add --member ... --test --base-url`.
    r = cli("key", "add", "acme", "--provider", "openai", "--member", "bob@acme.com",
            "--from-stdin", "--test", "--base-url", emulator.openai_base_url,
            input=OPENAI_TEST_KEY + "\n")
    assert r.exit_code == 4, r.output
    assert model_calls(emulator) == []

    r = cli("key", "approve-endpoint", own["id"], "--base-url", url, "--as", "bob@acme.com")
    assert r.exit_code == 0, r.output
    r = cli("key", "test", own["id"], "--base-url", url, "--as", "ann@acme.com")
    assert r.exit_code == 0, r.output
    assert len(model_calls(emulator)) == 1
    # Approved for that URL only: another path on the same host is another endpoint.
    r = cli("key", "test", own["id"], "--base-url", url + "/other")
    assert r.exit_code == 4, r.output
    assert len(model_calls(emulator)) == 1


@pytest.mark.parametrize(("provider", "secret", "shape"), [
    ("anthropic", ANTHROPIC_TEST_KEY, lambda url: url + "/v1"),  # the SDK adds /v1 itself
    ("openai", OPENAI_TEST_KEY, lambda url: url.removesuffix("/v1")),  # the SDK expects it
])
def test_a_url_of_the_wrong_shape_for_the_sdk_is_tested_where_it_must_go(cli, platform_org, emulator,
                                                                          provider, secret, shape):
    """As `set-provider` shapes a base URL for the key's SDK (item 11), so does a test at one:
    the call reaches the endpoint (not a 404 at …/v1/v1 or a missing /v1), and the result
    names the URL it was made at."""
    k = add(cli, "acme", "--provider", provider, secret=secret)
    url = emulator.base_url(provider)
    assert shape(url) != url
    r = cli("key", "test", k["id"], "--base-url", shape(url), "--json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert (got["test_result"], got["base_url"]) == ("ok", url)
    [call] = model_calls(emulator)
    assert call.status == 200
