"""`byokctl.AsyncVault` under a hostile or broken endpoint: the async clients keep the sync
ones' bounds. The emulator sends an oversized body (more than MAX_RESPONSE_BYTES) or a body
that trickles a byte at a time without end, through the real AsyncAnthropic / AsyncOpenAI,
for `ask()` and for a call inside `client()`; each must fail as the sync `Vault` fails it
(the same error, the same usage record, the reservation given back), in bounded time.

Old code: the async clients bounded only each network step, so an oversized answer was read
whole (and returned), and a call inside `client()` that trickled never ended. (`ask()` had
an asyncio timeout around the whole call already: its trickle test guards that it stays so.)"""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import EMULATOR_KEYS, connect
from test_api_vault import PROMPT, balance, setup_byok

import byokctl
from byokctl import AsyncVault, Vault
from byokctl.providers.bounds import MAX_RESPONSE_BYTES

pytestmark = pytest.mark.slow  # each attack is read to its end (32 MiB) or waited out (timeout)

OVERSIZED = MAX_RESPONSE_BYTES + (8 << 20)  # padding the API ignores: the old code read it all
TRICKLE = 0.1   # seconds between the trickle's bytes: well within each step's timeout
TIMEOUT = 1.0   # the deadline of a call that trickles
ROOMY = 30.0    # the deadline of an oversized call: its size, not its time, must end it
MARGIN = 3.0    # seconds past the deadline a call may take to end (the SDK's retry pauses)
GIVE_UP = 20.0  # an attack still running after this long has won
ORGS = {"acme": "anthropic", "plat": "openai"}  # acme: its own key; plat: platform credits


@pytest.fixture
def byok(cli, env_key, emulator, monkeypatch) -> dict:
    return setup_byok(cli, env_key, emulator, monkeypatch)


@pytest.fixture
def attack(byok):
    """Make the emulator misbehave on every completion: `attack("oversized")` or
    `attack("trickle")`."""
    def inject(kind: str) -> None:
        faults = {"oversized": {"oversized": OVERSIZED}, "trickle": {"trickle": TRICKLE}}
        byok["emulator"].inject(endpoint="completions", **faults[kind])

    return inject


def ledger(byok) -> tuple[list[str], int]:
    """(the usage records' outcomes, oldest first; the reservations still held)."""
    conn = connect(byok["db"])
    try:
        outcomes = [r[0] for r in conn.execute("SELECT outcome FROM usage ORDER BY id").fetchall()]
        held = conn.execute("SELECT count(*) FROM reservations").fetchone()[0]
    finally:
        conn.close()
    return outcomes, held


def within(seconds: float, coro):  # noqa: ANN001, ANN201 - a coroutine and what it returns
    """Run `coro`, failing the test if it is still running after `seconds` (no deadline)."""
    async def bounded():  # noqa: ANN202
        try:
            return await asyncio.wait_for(coro, seconds)
        except TimeoutError:
            pytest.fail(f"the call was still reading after {seconds:g} s: it had no deadline")

    return asyncio.run(bounded())


def opened(byok):  # noqa: ANN001, ANN201
    return AsyncVault.open(byok["db"], master_key=byok["master"], actor="asgi")


async def ask_async(byok, org: str, stream: bool, timeout: float) -> BaseException:
    async with await opened(byok) as v:
        with pytest.raises(byokctl.ByokError) as info:
            await v.ask(org, PROMPT, timeout=timeout, stream=stream)
    return info.value


SAID = [{"role": "user", "content": PROMPT}]


async def client_async(byok, org: str, stream: bool, timeout: float) -> BaseException:
    """A call made inside `client()` with the SDK's async client, its stream read to the end."""
    async with await opened(byok) as v:
        with pytest.raises(byokctl.ByokError) as info:
            async with v.client(org, max_tokens=32, timeout=timeout) as call:
                if call.provider == "anthropic":
                    got = await call.sdk.messages.create(model=call.model, max_tokens=32,
                                                         messages=SAID, stream=stream)
                else:
                    got = await call.sdk.chat.completions.create(
                        model=call.model, max_completion_tokens=32, messages=SAID, stream=stream)
                if stream:
                    async for _ in got:
                        pass
                else:
                    await call.record(got)
    return info.value


def sync_error(byok, org: str, stream: bool, timeout: float, *, in_client: bool) -> BaseException:
    """What the sync `Vault` raises for the same call (`ask`, or inside `client()`): the
    behaviour to match."""
    with Vault.open(byok["db"], master_key=byok["master"], actor="api") as v, \
            pytest.raises(byokctl.ByokError) as info:
        if in_client:
            with v.client(org, max_tokens=32, timeout=timeout) as call:
                if call.provider == "anthropic":
                    got = call.sdk.messages.create(model=call.model, max_tokens=32,
                                                   messages=SAID, stream=stream)
                else:
                    got = call.sdk.chat.completions.create(
                        model=call.model, max_completion_tokens=32, messages=SAID, stream=stream)
                if stream:
                    for _ in got:
                        pass
                else:
                    call.record(got)
        else:
            v.ask(org, PROMPT, timeout=timeout, stream=stream)
    return info.value


def assert_failed_as_sync_does(cli, byok, org: str, error: BaseException, expected: BaseException,
                               phrase: str) -> None:
    """`error` is the sync API's `expected` (class, message, exit code), says `phrase`, shows no
    key, chains no SDK exception; both calls are recorded alike, nothing is charged or held."""
    assert type(error) is type(expected) is byokctl.ProviderDown, error
    assert str(error) == str(expected) and phrase in str(error), str(error)
    secret = EMULATOR_KEYS[ORGS[org]]
    assert secret not in str(error) + repr(error) and error.__cause__ is None
    outcomes, held = ledger(byok)
    assert outcomes == [expected.outcome or expected.code.label] * 2 and held == 0
    assert balance(cli, byok, "plat") == 50


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("org", ORGS)
@pytest.mark.parametrize("in_client", [False, True], ids=["aask", "aclient"])
def test_an_oversized_answer_fails(cli, byok, attack, org, stream, in_client):
    """Old code: the async client read all 40 MiB and answered, in `aask` and in a call inside
    the block alike (streamed, the padding is no text, so the text cap never saw it)."""
    attack("oversized")
    run = client_async if in_client else ask_async
    error = within(GIVE_UP, run(byok, org, stream, ROOMY))
    expected = sync_error(byok, org, stream, ROOMY, in_client=in_client)
    assert_failed_as_sync_does(cli, byok, org, error, expected, "more than 32 MiB")


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("org", ORGS)
@pytest.mark.parametrize("in_client", [False, True], ids=["aask", "aclient"])
def test_a_trickling_answer_ends_at_the_deadline(cli, byok, attack, org, stream, in_client):
    """`timeout` is the deadline of the whole call, however slowly the bytes keep coming. Old
    code: a call inside the block got each read within the step timeout, so it never ended
    (`aask` already had a whole-call timeout)."""
    attack("trickle")
    started = time.monotonic()
    run = client_async if in_client else ask_async
    error = within(GIVE_UP, run(byok, org, stream, TIMEOUT))
    took = time.monotonic() - started
    expected = sync_error(byok, org, stream, TIMEOUT, in_client=in_client)
    assert TIMEOUT <= took < TIMEOUT + MARGIN, took
    assert_failed_as_sync_does(cli, byok, org, error, expected, "the deadline of the whole call")
