"""Errors carry their parts: `what`, `fix` and `details` are fields, the CLI joins them
("what; fix") and `--json` shows them apart; no part, nor `repr()`, carries a secret, even
when a hostile provider echoes the key in its 401."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
from test_attack_redaction import Hostile, assert_no_run_of, new_secret

from byokctl.errors import ExitCode, KeyRejected, NoKey, ProviderDown
from byokctl.services import keytest


def test_the_parts_are_fields_and_the_message_joins_them():
    e = NoKey("No API key for openai in org acme", "add one with `byokctl key add acme`", org="acme")
    assert (e.what, e.fix, e.details, e.code) == (
        "No API key for openai in org acme", "add one with `byokctl key add acme`", {"org": "acme"},
        ExitCode.NO_KEY)
    assert str(e) == e.message == "No API key for openai in org acme; add one with `byokctl key add acme`"
    assert e.args == (e.message,)
    bare = ProviderDown("The provider is down")
    assert bare.fix is None and str(bare) == "The provider is down" and bare.details == {}


def test_reworded_keeps_the_class_outcome_and_details():
    e = ProviderDown("bad usage", "check the base_url", org="acme")
    e.outcome = "malformed"
    r = e.reworded("key 1: bad usage")
    assert type(r) is ProviderDown and r.outcome == "malformed" and r.details == {"org": "acme"}
    assert str(r) == "key 1: bad usage; check the base_url"
    assert e.reworded(fix="nothing was applied").message == "bad usage; nothing was applied"


def test_a_copy_keeps_the_parts():
    e = NoKey("No API key", "add one", org="acme")
    e.outcome = "no-key"
    for c in (copy.deepcopy(e), pickle.loads(pickle.dumps(e))):  # noqa: S301 - our own bytes
        assert (type(c), c.what, c.fix, c.details, c.outcome) == (NoKey, e.what, e.fix, e.details, "no-key")


@pytest.fixture
def hostile():
    h = Hostile()
    yield h
    h.stop()


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("echo", ["base64", "hex", "plain-text-body"])
def test_a_401_echoing_the_key_leaves_no_secret_in_the_error_object(hostile, provider, echo):
    hostile.echo = echo
    secret = new_secret(provider)
    seen = keytest.probe(provider, secret, base_url=hostile.base_url(provider), retries=0)
    assert secret in hostile.seen  # the server did get the key, and echoed it
    err = seen.error
    assert isinstance(err, KeyRejected)
    assert err.fix and "check the key at the provider" in err.fix
    for text in (repr(err), str(err), err.what, err.fix, repr(err.details), repr(err.args)):
        assert_no_run_of(secret, text)


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_a_401_echoing_the_key_leaves_no_secret_in_the_json_error(cli, vault, hostile, provider):
    hostile.echo = "base64"
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    r = cli("org", "set-provider", "acme", provider, "--base-url", hostile.base_url(provider), "--yes")
    assert r.exit_code == 0, r.output
    secret = new_secret(provider)
    r = cli("key", "add", "acme", "--provider", provider, "--from-stdin", "--json", input=secret + "\n")
    key_id = json.loads(r.stdout)["id"]
    for argv in (["key", "test", key_id], ["ask", "acme", "hello", "--retries", "0"]):
        r = cli(*argv, "--json")
        assert r.exit_code == ExitCode.KEY_REJECTED, r.output
        assert secret in hostile.seen
        assert_no_run_of(secret, r.output)
        error = json.loads(r.stderr)["error"]
        assert error["code"] == "key-rejected" and "rejected" in error["message"]
        assert error["fix"] and error["message"].endswith("; " + error["fix"])


def test_the_json_error_has_the_fix_apart(cli, vault):
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    assert cli("org", "set-provider", "acme", "openai", "--yes").exit_code == 0
    r = cli("ask", "acme", "hello", "--json")
    assert r.exit_code == ExitCode.NO_KEY, r.output
    error = json.loads(r.stderr)["error"]
    assert error["code"] == "no-key"
    assert error["fix"] == "add one with `byokctl key add acme --provider openai`"
    assert error["message"] == f"No API key for openai in org acme; {error['fix']}"
    assert error["details"] == {"org": "acme", "provider": "openai"}
    human = cli("ask", "acme", "hello")
    assert human.stderr.strip() == f"error: {error['message']}"


def test_an_error_without_a_fix_has_no_fix_field(cli, vault):
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    r = cli("ask", "acme", "hello", "--timeout", "0", "--json")
    assert r.exit_code == ExitCode.USAGE, r.output
    error = json.loads(r.stderr)["error"]
    assert error == {"code": "usage", "message": "--timeout must be a positive number of seconds, not 0"}


def test_an_unknown_org_names_it_in_details(cli, vault):
    r = cli("member", "list", "ghost", "--json")
    assert r.exit_code == ExitCode.NOT_FOUND, r.output
    error = json.loads(r.stderr)["error"]
    assert error["details"] == {"org": "ghost"}
    assert error["message"] == f"No org 'ghost'; {error['fix']}"


def test_no_code_takes_an_error_message_apart():
    """The parts are fields: nothing in byokctl splits, searches or rewrites a message."""
    import ast
    from pathlib import Path

    import byokctl

    taken_apart = []
    for path in Path(byokctl.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr in ("message", "what", "fix")
                    and node.attr in ("split", "rsplit", "partition", "rpartition", "replace", "find",
                                      "index", "startswith", "endswith", "removesuffix", "removeprefix")):
                taken_apart.append(f"{path.name}:{node.lineno}")
    assert not taken_apart
