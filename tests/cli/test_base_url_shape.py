"""A base_url that cannot be right for its provider's SDK is corrected (with a warning) or
refused when it is given, not discovered as a 404 at the first call (issue 15, item 11).

Corrected: Anthropic's SDK appends /v1/messages itself, so a trailing /v1 is dropped; OpenAI's
appends /chat/completions to a URL that carries the API version, so one with no version
segment gets /v1. Refused: another provider's official host. Each correction is then proven
through the real SDK against the emulator."""

from __future__ import annotations

import json

import pytest
from conftest import ANTHROPIC_TEST_KEY, EMULATOR_KEYS

from byokctl.services import rules
from byokctl.services.rules import UsageError

WRONG = {  # what an operator pastes, from the emulator's printed URLs
    "anthropic": lambda emu: emu.anthropic_base_url + "/v1",
    "openai": lambda emu: emu.openai_base_url.removesuffix("/v1"),
}


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_set_provider_corrects_the_version_and_the_sdk_then_works(cli, acme, emulator, provider):
    given, right = WRONG[provider](emulator), emulator.base_url(provider)
    r = cli("org", "set-provider", "acme", provider, "--base-url", given, "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["after"]["base_url"] == right
    assert f"warning: base URL {given} corrected to {right}" in r.stderr
    r = cli("key", "add", "acme", "--provider", provider, "--from-stdin", "--test",
            input=EMULATOR_KEYS[provider])
    assert r.exit_code == 0, r.output
    r = cli("ask", "acme", "hello", "--no-stream", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["mode"] == "byok"


def test_a_right_url_is_stored_as_given_without_a_warning(cli, acme, emulator):
    for provider in ("anthropic", "openai"):
        r = cli("org", "set-provider", "acme", provider, "--base-url", emulator.base_url(provider),
                "--yes", "--json")
        assert r.exit_code == 0 and "warning" not in r.stderr, r.output
        assert json.loads(r.stdout)["after"]["base_url"] == emulator.base_url(provider)


@pytest.mark.parametrize("provider, url, stored", [
    ("anthropic", "https://api.anthropic.com/v1/", "https://api.anthropic.com"),
    ("anthropic", "https://eu.gateway.example.com/anthropic/V1", "https://eu.gateway.example.com/anthropic"),
    ("openai", "https://api.openai.com", "https://api.openai.com/v1"),
    ("openai", "https://gw.example.com/openai?region=eu", "https://gw.example.com/openai/v1?region=eu"),
    ("openai", "https://generativelanguage.googleapis.com/v1beta/openai",
     "https://generativelanguage.googleapis.com/v1beta/openai"),  # a version segment: kept
    ("openai", "https://gateway.ai.cloudflare.com/v1/acct/gw/openai",
     "https://gateway.ai.cloudflare.com/v1/acct/gw/openai"),
    ("anthropic", "https://proxy.example.com/v1/anthropic", "https://proxy.example.com/v1/anthropic"),
])
def test_the_rule_for_each_sdk(provider, url, stored):
    fixed, warning = rules.provider_base_url(provider, url)
    assert fixed == stored
    assert (warning is None) == (url.rstrip("/") == stored)


@pytest.mark.parametrize("provider, url", [("openai", "https://api.anthropic.com"),
                                           ("anthropic", "https://api.openai.com/v1")])
def test_another_providers_official_host_is_refused(cli, acme, provider, url):
    with pytest.raises(UsageError):
        rules.provider_base_url(provider, url)
    r = cli("org", "set-provider", "acme", provider, "--base-url", url, "--yes", "--json")
    assert r.exit_code == 2
    assert "leave the base URL out" in json.loads(r.stderr)["error"]["fix"]


def test_platform_set_default_corrects_too(cli, vault, emulator):
    r = cli("platform", "set-default", "openai", "--model", "gpt-5-mini", "--base-url",
            WRONG["openai"](emulator), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["base_url"] == emulator.openai_base_url
    assert "corrected to" in r.stderr


def test_apply_corrects_with_a_warning_naming_the_field_and_stays_idempotent(cli, vault, emulator,
                                                                              tmp_path):
    f = tmp_path / "vault.toml"
    f.write_text(f'[orgs.acme]\nplan = "growth"\nprovider = "anthropic"\n'
                 f'base_url = "{WRONG["anthropic"](emulator)}"\n'
                 '[[orgs.acme.keys]]\nprovider = "anthropic"\nfrom_env = "ACME_KEY"\n')
    env = {"ACME_KEY": ANTHROPIC_TEST_KEY}
    r = cli("apply", str(f), "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["warnings"] == [
        f"orgs.acme.base_url: base URL {WRONG['anthropic'](emulator)} corrected to "
        f"{emulator.anthropic_base_url}: the Anthropic SDK adds /v1 itself"]
    r = cli("org", "show", "acme", "--json")
    assert json.loads(r.stdout)["base_url"] == emulator.anthropic_base_url
    again = cli("apply", str(f), "--json", env=env)
    assert again.exit_code == 0 and json.loads(again.stdout)["changes"] == [], again.output
    r = cli("ask", "acme", "hello", "--no-stream")
    assert r.exit_code == 0, r.output
