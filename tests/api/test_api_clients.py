"""The SDK clients a `Vault` keeps for reuse (byokctl/providers/pool.py): one client, and one
kept-alive connection, per thread and key from call to call; lent to one block at a time and
refusing requests between blocks; a rotated key's secret gets a new client; `close()` closes
them. Through the real SDKs against the emulator."""

from __future__ import annotations

import json
import time

import anthropic
import pytest
from api.test_api_vault import PROMPT, setup_byok
from conftest import ANTHROPIC_TEST_KEY

import byokctl
from byokctl.providers import registry
from byokctl.providers.pool import LeaseEnded, Pool


@pytest.fixture
def byok(cli, env_key, emulator, monkeypatch) -> dict:
    return setup_byok(cli, env_key, emulator, monkeypatch)


@pytest.fixture
def api(byok):
    with byokctl.Vault.open(byok["db"], master_key=byok["master"]) as v:
        yield v


def _say(sdk):  # noqa: ANN001, ANN202 - an anthropic.Anthropic
    return sdk.messages.create(model="claude-haiku-5-5", max_tokens=16,
                               messages=[{"role": "user", "content": PROMPT}])


def _usage_calls(cli, byok) -> int:
    r = cli("usage", "show", "acme", "--json", env=byok["env"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)["totals"]["calls"]


def test_calls_on_one_key_reuse_one_client_and_its_connection(byok, api, emulator):
    sdks = []
    for _ in range(3):
        with api.client("acme") as call:
            call.record(_say(call.sdk))
            sdks.append(call.sdk)
    assert sdks[0] is sdks[1] is sdks[2]
    ports = {r.client_port for r in emulator.requests}
    assert len(emulator.requests) == 3 and len(ports) == 1  # one TCP connection for the three


def test_ask_reuses_its_connection_too(byok, api, emulator):
    for _ in range(2):
        api.ask("acme", PROMPT, max_tokens=16, stream=False)
    assert len(emulator.requests) == 2
    assert len({r.client_port for r in emulator.requests}) == 1


def test_a_client_kept_past_its_block_makes_no_call(cli, byok, api, emulator):
    """Nothing records a call made after the block: the client refuses to send it."""
    with api.client("acme", retries=0) as call:
        call.record(_say(call.sdk))
    kept = call.sdk
    with pytest.raises(anthropic.APIConnectionError) as info:
        _say(kept)
    assert isinstance(info.value.__cause__, LeaseEnded)
    assert "block has ended" in str(info.value.__cause__)
    assert len(emulator.requests) == 1 and _usage_calls(cli, byok) == 1
    with api.client("acme", retries=0) as call:  # the next block has it back
        assert call.sdk is kept
        call.record(_say(call.sdk))
    assert len(emulator.requests) == 2


def test_a_block_inside_another_on_the_same_key_gets_its_own_client(byok, api):
    with api.client("acme") as outer:
        with api.client("acme") as inner:
            assert inner.sdk is not outer.sdk
            inner.record(_say(inner.sdk))
        assert inner.sdk.is_closed()  # not kept: the pooled one was lent out
        outer.record(_say(outer.sdk))  # still the outer block's
    assert not outer.sdk.is_closed()


def test_a_rotated_key_gets_a_new_client_with_its_new_secret(cli, byok, api, emulator):
    with api.client("acme") as call:
        call.record(_say(call.sdk))
    old = call.sdk
    new_secret = "sk-ant-api03-rotated-" + "r" * 40
    emulator.config.valid_keys["anthropic"].add(new_secret)
    r = cli("key", "rotate", byok["org_key"], "--from-stdin", "--no-test", input=new_secret,
            env=byok["env"])
    assert r.exit_code == 0, r.output
    with api.client("acme") as call:
        assert call.sdk is not old and call.sdk.api_key == new_secret
        call.record(_say(call.sdk))
    assert [r.key_hint for r in emulator.requests] == [ANTHROPIC_TEST_KEY[-4:], new_secret[-4:]]


def test_closing_the_vault_closes_its_clients(byok):
    v = byokctl.Vault.open(byok["db"], master_key=byok["master"])
    with v.client("acme") as call:
        call.record(_say(call.sdk))
    assert not call.sdk.is_closed()
    v.close()
    assert call.sdk.is_closed()


def test_a_thread_keeps_at_most_the_pool_s_size_closing_the_least_recently_used(emulator):
    pool = Pool(size=2)
    adapter = registry.get("anthropic")
    url = emulator.anthropic_base_url
    sdks = {}
    for secret in ("sk-ant-api03-a" + "a" * 30, "sk-ant-api03-b" + "b" * 30,
                   "sk-ant-api03-a" + "a" * 30, "sk-ant-api03-c" + "c" * 30):
        with pool.lease(adapter, secret, base_url=url, timeout=5, retries=0) as (sdk, _):
            sdks.setdefault(secret[13], sdk)
    assert sdks["b"].is_closed()  # the least recently used of three when c came
    assert not sdks["a"].is_closed() and not sdks["c"].is_closed()
    pool.close()
    assert sdks["a"].is_closed() and sdks["c"].is_closed()


@pytest.mark.slow
def test_a_kept_client_s_deadline_starts_with_each_block(byok, api):
    """The deadline (`timeout`) of a kept client is its block's: the first block's deadline has
    long passed when the second block calls through the same client, and the call goes."""
    with api.client("acme", timeout=1) as call:
        call.record(_say(call.sdk))
    first = call.sdk
    time.sleep(1.5)
    with api.client("acme", timeout=1) as call:
        assert call.sdk is first
        rec = call.record(_say(call.sdk))
    assert rec.output_tokens > 0


def test_a_forked_process_uses_neither_its_parent_s_clients_nor_its_connection(byok, api, emulator):
    """A pre-fork server opens its Vault, then forks workers: a worker must not send requests
    over its parent's kept-alive connection (the answers would cross) nor use or close the
    parent's database connection. It gets its own; the parent's go on working."""
    import os

    with api.client("acme") as call:
        call.record(_say(call.sdk))
    parent_sdk, parent_store = call.sdk, api._context(None).store
    pid = os.fork()
    if pid == 0:  # the child: its own client and connection, then exit without cleanup
        ok = False
        try:
            with api.client("acme") as call:
                ok = call.sdk is not parent_sdk and api._context(None).store is not parent_store
                call.record(_say(call.sdk))
            api.close()  # closes what is its own only
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    with api.client("acme") as call:
        assert call.sdk is parent_sdk and not parent_sdk.is_closed()
        call.record(_say(call.sdk))
    ports = [r.client_port for r in emulator.requests]
    assert len(ports) == 3 and ports[0] == ports[2] != ports[1]
    r = api.resolve("acme")
    assert r.mode == "byok"  # the parent's database connection still answers
