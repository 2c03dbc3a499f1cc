"""One emulator, many behaviours: keys configured to succeed, be rejected, be rate-limited, fail
or stall side by side (`Config.serve_key`, what `emulator serve --key` sets), and the model
names the real APIs accept, through the official SDKs."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from byokctl.providers import catalog
from byokctl.providers.emulator import Config, Emulator
from byokctl.providers.emulator_wire import model_names

KEYS = {  # key -> behaviour, for both providers' shapes
    "sk-ant-emu-good-000000": "ok", "sk-ant-emu-gone-000000": "401",
    "sk-ant-emu-deny-000000": "403", "sk-ant-emu-busy-000000": "429",
    "sk-ant-emu-down-000000": "500", "sk-ant-emu-full-000000": "529",
    "sk-ant-emu-slow-000000": "stall",
    "sk-emu-openai-good-0000": "ok", "sk-emu-openai-gone-0000": "401",
    "sk-emu-openai-busy-0000": "429", "sk-emu-openai-down-0000": "500",
}


@pytest.fixture
def many():
    config = Config()
    for key, behaviour in KEYS.items():
        config.serve_key(key, behaviour, retry_after=3)
    emu = Emulator(config).start()
    yield emu
    emu.stop()


def claude(emu: Emulator, key: str, timeout: float = 5) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=emu.anthropic_base_url, max_retries=0,
                               timeout=timeout, _strict_response_validation=True)


def gpt(emu: Emulator, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=emu.openai_base_url, max_retries=0, timeout=5,
                         _strict_response_validation=True)


@pytest.mark.slow  # a dozen SDK clients, each a round trip
def test_each_key_gets_its_own_answer_from_one_emulator(many):
    assert claude(many, "sk-ant-emu-good-000000").models.list().data
    for key, error in (("sk-ant-emu-gone-000000", anthropic.AuthenticationError),
                       ("sk-ant-emu-deny-000000", anthropic.PermissionDeniedError),
                       ("sk-ant-emu-busy-000000", anthropic.RateLimitError),
                       ("sk-ant-emu-down-000000", anthropic.InternalServerError),
                       ("sk-ant-emu-full-000000", anthropic.OverloadedError),
                       ("sk-ant-unknown-0000000", anthropic.AuthenticationError)):
        with pytest.raises(error):
            claude(many, key).models.list()
    with pytest.raises(anthropic.RateLimitError) as info:
        claude(many, "sk-ant-emu-busy-000000").messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert info.value.response.headers["retry-after"] == "3"  # --retry-after rides on a 429 key

    assert gpt(many, "sk-emu-openai-good-0000").models.list().data
    for key, error in (("sk-emu-openai-gone-0000", openai.AuthenticationError),
                       ("sk-emu-openai-busy-0000", openai.RateLimitError),
                       ("sk-emu-openai-down-0000", openai.InternalServerError)):
        with pytest.raises(error):
            gpt(many, key).models.list()
    # The good keys still work after the others failed: nothing was consumed.
    assert claude(many, "sk-ant-emu-good-000000").models.list().data


@pytest.mark.slow  # waits out a one-second client timeout
def test_a_stalling_key_stalls_while_the_others_answer(many):
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        claude(many, "sk-ant-emu-slow-000000", timeout=1).models.list()
    assert time.monotonic() - started < 5
    assert claude(many, "sk-ant-emu-good-000000").models.list().data


def test_a_key_limited_to_one_provider():
    config = Config()
    config.serve_key("sk-ant-emu-only-000000", "ok", "anthropic")
    with Emulator(config) as emu:
        assert claude(emu, "sk-ant-emu-only-000000").models.list().data
        with pytest.raises(openai.AuthenticationError):
            gpt(emu, "sk-ant-emu-only-000000").models.list()


def test_serve_key_refuses_what_is_no_error_status():
    with pytest.raises(ValueError):
        Config().serve_key("sk-ant-emu-good-000000", "200")


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")  # the SDK's own
@pytest.mark.parametrize(("alias", "pinned"), [
    ("claude-opus-4-5", "claude-opus-4-5-20251101"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5-20251001"),
    ("claude-sonnet-5-5", "claude-sonnet-5-5"),
])
def test_anthropic_accepts_the_names_the_api_accepts(emulator, alias, pinned):
    from conftest import ANTHROPIC_TEST_KEY

    reply = claude(emulator, ANTHROPIC_TEST_KEY).messages.create(
        model=alias, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert reply.model == pinned  # answered with the snapshot the alias stands for, as the API does
    assert claude(emulator, ANTHROPIC_TEST_KEY).models.retrieve(alias).id == pinned


@pytest.mark.parametrize(("alias", "pinned"), [
    ("gpt-5-mini", "gpt-5-mini-2025-08-07"), ("gpt-5", "gpt-5-2025-08-07"),
    ("o3", "o3-2025-04-16"), ("o4-mini", "o4-mini-2025-04-16"),
    ("gpt-5-nano-2025-08-07", "gpt-5-nano-2025-08-07"),
])
def test_openai_accepts_the_names_the_api_accepts(emulator, alias, pinned):
    from conftest import OPENAI_TEST_KEY

    client = gpt(emulator, OPENAI_TEST_KEY)
    reply = client.chat.completions.create(model=alias, messages=[{"role": "user", "content": "hi"}])
    assert reply.model == pinned
    for chunk in client.chat.completions.create(model=alias, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]):
        assert chunk.model == pinned
    assert client.models.retrieve(alias).id == alias


def test_byokctls_own_short_aliases_are_no_api_names(emulator):
    from conftest import ANTHROPIC_TEST_KEY

    with pytest.raises(anthropic.NotFoundError):
        claude(emulator, ANTHROPIC_TEST_KEY).messages.create(
            model="sonnet", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def test_every_pinned_id_and_its_undated_alias_is_a_name():
    cat = catalog.load()
    for provider in ("anthropic", "openai"):
        names = model_names(provider)
        for m in cat.for_provider(provider):
            assert names[m.id] == m.id
            assert all(names.get(a) == m.id for a in m.aliases if m.id.startswith(a + "-"))
    assert "sonnet" not in model_names("anthropic") and "gpt-5-mini" in model_names("openai")
