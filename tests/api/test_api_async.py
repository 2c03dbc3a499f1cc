"""`byokctl.AsyncVault`: the data plane under an event loop, through the SDKs' async clients
against the emulator; the store's work off the loop."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import anthropic
import openai
import pytest
from conftest import ANTHROPIC_TEST_KEY, WriteLock
from test_api_vault import PROMPT, balance, setup_byok, usage

import byokctl
from byokctl import AsyncVault


@pytest.fixture
def byok(cli, env_key, emulator, monkeypatch) -> dict:
    return setup_byok(cli, env_key, emulator, monkeypatch)


def run(coro):  # noqa: ANN001, ANN201 - a coroutine and what it returns
    return asyncio.run(coro)


async def opened(byok):  # noqa: ANN001, ANN201
    return await AsyncVault.open(byok["db"], master_key=byok["master"], actor="asgi")


@pytest.mark.parametrize("stream", [True, False])
def test_aask_byok_and_platform(cli, byok, stream):
    async def main():
        async with await opened(byok) as v:
            pieces: list[str] = []
            a = await v.ask("acme", PROMPT, on_text=pieces.append if stream else None)
            p = await v.ask("plat", [{"role": "user", "content": PROMPT}], stream=stream)
            return a, p, pieces

    a, p, pieces = run(main())
    assert a.mode == "byok" and a.text and a.credits_charged == 0
    assert ("".join(pieces) == a.text) if stream else pieces == []
    assert p.mode == "platform" and p.provider == "openai" and p.credits_charged == 1
    assert balance(cli, byok, "plat") == 49
    assert usage(cli, byok, "acme")["totals"]["calls"] == 1
    assert [q.stream for q in byok["emulator"].requests if q.method == "POST"] == [stream, stream]


def test_aclient_and_record_both_providers(cli, byok):
    async def main():
        async with await opened(byok) as v:
            async with v.client("acme") as call:
                assert isinstance(call.sdk, anthropic.AsyncAnthropic)
                msg = await call.sdk.messages.create(
                    model=call.model, max_tokens=32, messages=[{"role": "user", "content": PROMPT}])
                rec_a = await call.record(msg)
            async with v.client("plat") as call:
                assert isinstance(call.sdk, openai.AsyncOpenAI) and call.mode == "platform"
                done = await call.sdk.chat.completions.create(
                    model=call.model, max_completion_tokens=32,
                    messages=[{"role": "user", "content": PROMPT}])
                rec_p = await call.record(done)
            return msg, rec_a, done, rec_p

    msg, rec_a, done, rec_p = run(main())
    assert rec_a.input_tokens == msg.usage.input_tokens and rec_a.credits_charged == 0
    assert rec_p.input_tokens == done.usage.prompt_tokens and rec_p.credits_charged == 1
    assert balance(cli, byok, "plat") == 49
    assert usage(cli, byok, "plat")["totals"]["credits_charged"] == 1


def test_an_async_401_marks_the_key_invalid(cli, byok):
    byok["emulator"].revoke_key(ANTHROPIC_TEST_KEY, "anthropic")

    async def main():
        async with await opened(byok) as v:
            with pytest.raises(byokctl.KeyRejected) as ask_err:
                await v.ask("acme", PROMPT)
            with pytest.raises(byokctl.KeyRejected) as block_err:
                async with v.client("acme") as call:
                    await call.sdk.messages.create(
                        model=call.model, max_tokens=8, messages=[{"role": "user", "content": "x"}])
            return ask_err.value, block_err.value

    for err in run(main()):
        assert ANTHROPIC_TEST_KEY not in str(err) + repr(err) and err.__cause__ is None
    listed = json.loads(cli("key", "list", "acme", "--json", env=byok["env"]).stdout)
    assert {k["id"]: k["status"] for k in listed}[byok["org_key"]] == "invalid"
    assert usage(cli, byok, "acme")["totals"]["calls"] == 2


@pytest.mark.slow  # a hundred calls: seconds
def test_100_concurrent_tasks(cli, byok):
    r = cli("credits", "add", "plat", "1000", env=byok["env"])
    assert r.exit_code == 0, r.output

    async def one(v: AsyncVault, i: int):
        if i % 2:
            return await v.ask("plat", PROMPT)
        async with v.client("plat") as call:
            return await call.record(await call.sdk.chat.completions.create(
                model=call.model, max_completion_tokens=16,
                messages=[{"role": "user", "content": PROMPT}]))

    async def main():
        async with await opened(byok) as v:
            return await asyncio.gather(*(one(v, i) for i in range(100)))

    done = run(main())
    charged = sum(d.credits_charged for d in done)
    assert len(done) == 100 and charged >= 100
    assert balance(cli, byok, "plat") == 1050 - charged
    totals = usage(cli, byok, "plat")["totals"]
    assert totals["calls"] == 100 and totals["credits_charged"] == charged


@pytest.mark.slow  # holds the vault for a second
def test_a_busy_vault_never_blocks_the_loop(cli, byok):
    """Another writer holds the vault: the call waits on a worker thread, the loop goes on."""
    holder = WriteLock(byok["db"])
    holder.take()
    threading.Timer(1.0, holder.release).start()

    async def main():
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        t = asyncio.create_task(ticker())
        started = time.monotonic()
        async with await opened(byok) as v:
            answer = await v.ask("plat", PROMPT)  # its reservation waits for the lock
        waited = time.monotonic() - started
        t.cancel()
        return answer, ticks, waited

    try:
        answer, ticks, waited = run(main())
    finally:
        holder.close()
    assert answer.credits_charged == 1 and waited >= 0.9
    assert ticks >= 30, f"the loop ran only {ticks} ticks in {waited:.2f} s"
