"""The provider adapters, through the real SDKs against the loopback emulator: answers and usage,
the mapping of every failure onto byokctl's errors and exit codes, retries, timeouts, redaction,
no ambient configuration, lazy imports."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from conftest import EMULATOR_KEYS, REPO

from byokctl.errors import (
    ExitCode,
    KeyRejected,
    NotFound,
    ProviderDown,
    RateLimited,
    UsageError,
)
from byokctl.providers import catalog, registry
from byokctl.providers.base import Completion, Failure, to_error
from byokctl.providers.redact import redact, safe_url

PROVIDERS = ("anthropic", "openai")
MODELS = {"anthropic": "claude-haiku-4-5-20251001", "openai": "gpt-5-nano-2025-08-07"}
LABELS = {"anthropic": "Anthropic", "openai": "OpenAI"}


def ask(emulator, provider: str, *, stream: bool = False, retries: int = 0, timeout: float = 5,
        secret: str | None = None, on_text=None, **kwargs) -> Completion:
    params = {"model": MODELS[provider], "prompt": "hello brave new world", "max_tokens": 100, **kwargs}
    return registry.get(provider).complete(
        secret or EMULATOR_KEYS[provider], base_url=emulator.base_url(provider), timeout=timeout,
        retries=retries, stream=stream, on_text=on_text, **params)


# -- answers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
def test_list_models_is_the_catalog(emulator, provider):
    ids = registry.get(provider).list_models(EMULATOR_KEYS[provider], base_url=emulator.base_url(provider),
                                              timeout=5, retries=0)
    assert ids == [m.id for m in catalog.load().for_provider(provider)]
    assert [(r.endpoint, r.status) for r in emulator.requests] == [("models", 200)]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_complete_returns_text_and_usage(emulator, provider, stream):
    pieces: list[str] = []
    done = ask(emulator, provider, stream=stream, system="be brief", on_text=pieces.append)
    expected = f"Emulated {LABELS[provider]} reply from {MODELS[provider]}: hello brave new world"
    assert done.text == expected
    assert (done.input_tokens, done.output_tokens) == (2 + 4, 9)
    assert done.model == MODELS[provider] and done.latency_ms >= 0
    if stream:
        assert len(pieces) == 9 and "".join(pieces) == expected
    else:
        assert pieces == []
    assert [r.stream for r in emulator.requests] == [stream]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_max_tokens_is_passed_through(emulator, provider):
    done = ask(emulator, provider, stream=True, max_tokens=2)
    assert done.output_tokens == 2 and len(done.text.split()) == 2


# -- failures → byokctl errors -----------------------------------------------------------------
FAILURES = [
    # (fault, expected error, exit code)
    ({"status": 401}, KeyRejected, 7),
    ({"status": 403}, KeyRejected, 7),
    ({"status": 429}, RateLimited, 8),
    ({"status": 429, "retry_after": 1}, RateLimited, 8),
    ({"status": 500}, ProviderDown, 11),
    ({"status": 503}, ProviderDown, 11),
    ({"status": 529}, ProviderDown, 11),
    ({"status": 400}, UsageError, 2),
    ({"status": 404}, NotFound, 3),
    ({"malformed": True}, ProviderDown, 11),
    ({"reset_mid_stream": True}, ProviderDown, 11),
    ({"end_mid_stream": True}, ProviderDown, 11),
]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("fault", "error", "code"), FAILURES,
                         ids=[",".join(f"{k}={v}" for k, v in f.items()) for f, _, _ in FAILURES])
def test_failure_maps_to_error_and_exit_code(emulator, provider, stream, fault, error, code):
    if fault.get("end_mid_stream") and not stream:
        pytest.skip("only a stream can end early without an error")
    emulator.inject(**fault)
    with pytest.raises(error) as info:
        ask(emulator, provider, stream=stream)
    assert type(info.value) is error and info.value.code == ExitCode(code)
    message = info.value.message
    assert message == str(info.value) and "\n" not in message and LABELS[provider] in message
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_failures_of_the_key_test_map_too(emulator, provider):
    adapter = registry.get(provider)
    emulator.inject(status=401, endpoint="models")
    with pytest.raises(KeyRejected):
        adapter.list_models(EMULATOR_KEYS[provider], base_url=emulator.base_url(provider), retries=0)
    emulator.clear_faults()
    emulator.inject(malformed=True, endpoint="models")
    with pytest.raises(ProviderDown, match="not valid JSON"):
        adapter.list_models(EMULATOR_KEYS[provider], base_url=emulator.base_url(provider), retries=0)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_real_404_and_400_from_the_api(emulator, provider):
    with pytest.raises(NotFound, match="byokctl models list"):
        ask(emulator, provider, model="no-such-model")
    with pytest.raises(UsageError, match="--max-tokens"):
        ask(emulator, provider, max_tokens=0)


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_stall_is_cut_off_by_the_timeout(emulator, provider, stream):
    emulator.inject(stall=10)
    started = time.monotonic()
    with pytest.raises(ProviderDown, match="did not answer within 1 s"):
        ask(emulator, provider, stream=stream, timeout=1, retries=0)
    assert 0.9 <= time.monotonic() - started < 1.8


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stall_mid_stream_is_cut_off_after_the_first_text(emulator, provider):
    emulator.inject(stall_mid_stream=10)
    pieces: list[str] = []
    started = time.monotonic()
    with pytest.raises(ProviderDown):
        ask(emulator, provider, stream=True, timeout=1, retries=2, on_text=pieces.append)
    assert time.monotonic() - started < 1.8
    assert pieces == ["Emulated"]  # text already shown is never repeated by a retry
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_unreachable_provider_is_provider_down(emulator, provider):
    url = emulator.base_url(provider)
    emulator.stop()
    with pytest.raises(ProviderDown, match="check the network"):
        registry.get(provider).list_models(EMULATOR_KEYS[provider], base_url=url, timeout=2, retries=0)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_server_that_is_not_the_api_is_provider_down(provider):
    class Html(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>captive portal</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_GET

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}" + ("/v1" if provider == "openai" else "")
    try:
        adapter = registry.get(provider)
        with pytest.raises(ProviderDown, match="not valid JSON"):
            adapter.list_models(EMULATOR_KEYS[provider], base_url=base, timeout=2, retries=0)
        with pytest.raises(ProviderDown, match="not valid JSON"):
            adapter.complete(EMULATOR_KEYS[provider], model=MODELS[provider], prompt="hi", base_url=base,
                             timeout=2, retries=0, stream=False)
        with pytest.raises(ProviderDown, match="before it was complete"):
            adapter.complete(EMULATOR_KEYS[provider], model=MODELS[provider], prompt="hi", base_url=base,
                             timeout=2, retries=0, stream=True)
    finally:
        server.shutdown()
        server.server_close()


def test_error_events_inside_a_stream_map_by_their_type():
    """Anthropic sends `event: error` mid-stream with status 200: the type decides."""
    cases = {"overloaded_error": ProviderDown, "rate_limit_error": RateLimited,
             "authentication_error": KeyRejected, "invalid_request_error": UsageError}
    for error_type, error in cases.items():
        failure = Failure("status", status=200, error_type=error_type, detail="Overloaded")
        assert type(to_error("Anthropic", failure, secret="s", attempts=1, base_url="http://x",
                             timeout=1)) is error
    assert Failure("status", status=200, error_type="overloaded_error").retryable


# -- retries -----------------------------------------------------------------------------------
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_500_then_success_succeeds_with_one_retry(emulator, provider, stream):
    emulator.inject(status=500, times=1)
    done = ask(emulator, provider, stream=stream, retries=1)
    assert done.text.startswith("Emulated")
    assert [r.status for r in emulator.requests] == [500, 200]


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.parametrize("provider", PROVIDERS)
def test_retries_are_counted_and_exhausted(emulator, provider):
    emulator.inject(status=529)
    with pytest.raises(ProviderDown, match="after 3 attempts"):
        ask(emulator, provider, retries=2)
    assert [r.status for r in emulator.requests] == [529, 529, 529]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_retry_with_retries_zero(emulator, provider):
    emulator.inject(status=503, times=1)
    with pytest.raises(ProviderDown):
        ask(emulator, provider, retries=0)
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_rejected_key_is_never_retried(emulator, provider):
    with pytest.raises(KeyRejected):
        ask(emulator, provider, retries=2, secret="sk-wrong-but-plausible-0123456789")
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_retry_after_is_honoured(emulator, provider):
    emulator.inject(status=429, retry_after=0.4, times=1)
    started = time.monotonic()
    ask(emulator, provider, retries=1)
    assert time.monotonic() - started >= 0.4
    assert [r.status for r in emulator.requests] == [429, 200]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_long_retry_after_fails_fast_and_says_so(emulator, provider):
    emulator.inject(status=429, retry_after=3600)
    started = time.monotonic()
    with pytest.raises(RateLimited, match="retry after 3600 s"):
        ask(emulator, provider, retries=2)
    assert time.monotonic() - started < 1
    assert len(emulator.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reset_after_text_was_shown_is_not_retried(emulator, provider):
    emulator.inject(reset_mid_stream=True, times=1)
    pieces: list[str] = []
    with pytest.raises(ProviderDown, match="failed"):
        ask(emulator, provider, stream=True, retries=2, on_text=pieces.append)
    assert pieces == ["Emulated"] and len(emulator.requests) == 1


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_reset_before_any_text_is_retried(emulator, provider):
    emulator.inject(reset_mid_stream=True, times=1)
    done = ask(emulator, provider, stream=False, retries=1)
    assert done.text.startswith("Emulated") and len(emulator.requests) == 2


def aask(emulator, provider: str, *, stream: bool, retries: int, on_text=None) -> Completion:
    """`ask` through the adapter's async path (`acomplete`, the SDK's async client)."""
    return asyncio.run(registry.get(provider).acomplete(
        EMULATOR_KEYS[provider], model=MODELS[provider], max_tokens=100, timeout=5,
        messages=[{"role": "user", "content": "hello brave new world"}], retries=retries,
        base_url=emulator.base_url(provider), stream=stream, on_text=on_text))


RETRY_CASES = {  # fault, stream, retries
    "500-then-ok": ({"status": 500, "times": 1}, False, 1),
    "529-exhausted": ({"status": 529}, False, 1),
    "retry-after-too-long": ({"status": 429, "retry_after": 3600}, False, 2),
    "reset-after-text": ({"reset_mid_stream": True, "times": 1}, True, 2),
}


@pytest.mark.slow  # backoff pauses, twice
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", RETRY_CASES)
def test_acomplete_retries_as_complete_does(emulator, provider, case):
    """The async path retries by byokctl's own policy, not the SDK's: the same attempts, the
    same answer or error (a 1-hour retry-after is not waited out, text shown is not repeated)."""
    fault, stream, retries = RETRY_CASES[case]
    seen = []
    for run in (ask, aask):
        emulator.clear_faults()
        emulator.clear_log()
        emulator.inject(**fault)
        pieces: list[str] = []
        try:
            outcome = run(emulator, provider, stream=stream, retries=retries,
                          on_text=pieces.append).text
        except (ProviderDown, RateLimited) as exc:
            # the OS's words for a reset ("[Errno 104] ...") reach the sync socket's error only
            outcome = f"{type(exc).__name__}: {re.sub(r'failed [(][^)]*[)]', 'failed', str(exc))}"
        seen.append((outcome, pieces, [r.status for r in emulator.requests]))
    assert seen[0] == seen[1]


# -- secrets -----------------------------------------------------------------------------------
def _fragments(secret: str, n: int = 16) -> list[str]:
    return [secret[i:i + n] for i in range(len(secret) - n + 1)]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_401_echoing_the_key_is_redacted(emulator, provider, stream):
    secret = ("sk-ant-api03-" if provider == "anthropic" else "sk-proj-") + "Q7vLm2XpR9sT4wYz8KbN3cHd6FjG"
    with pytest.raises(KeyRejected) as info:
        ask(emulator, provider, stream=stream, secret=secret)
    assert emulator.requests[0].status == 401  # the emulator echoed it...
    text = f"{info.value.message} {info.value!s} {info.value.args!r}"
    assert secret not in text  # ...and none of it came through
    assert not [f for f in _fragments(secret) if f in text]
    assert "[redacted]" in text and "byokctl key rotate" in text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_custom_error_message_quoting_the_key_is_redacted(emulator, provider):
    secret = EMULATOR_KEYS[provider]
    # A proxy quoting a mangled piece of the key, plus someone else's key.
    emulator.inject(status=403, message=f"key …{secret[5:30]}… denied; also saw sk-live-ABCDEFGH12345678")
    with pytest.raises(KeyRejected) as info:
        ask(emulator, provider)
    assert not [f for f in _fragments(secret) if f in info.value.message]
    assert "ABCDEFGH12345678" not in info.value.message and "denied" in info.value.message


def test_key_id_names_the_fix(emulator):
    with pytest.raises(KeyRejected, match="byokctl key rotate key_abc123"):
        registry.get("anthropic").list_models("sk-ant-nope", base_url=emulator.anthropic_base_url,
                                              retries=0, key_id="key_abc123")


def test_redact_masks_secrets_fragments_and_key_like_tokens():
    secret = "sk-ant-api03-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    assert redact(f"bad key {secret}!", secret) == "bad key [redacted]!"
    assert redact(f"…{secret[10:28]}…", secret) == "…[redacted]…"
    assert redact("fragment " + secret[3:15], secret) == "fragment [redacted]"  # 12 chars: masked
    assert redact("fragment " + secret[3:14], secret) == "fragment " + secret[3:14]  # 11 chars: kept
    assert redact("Authorization: Bearer abc.def-ghi", None) == "Authorization: Bearer [redacted]"
    assert redact("use sk-proj-abcd1234 or sk-ant-***wxyz", None) == "use [redacted] or [redacted]"
    assert redact('{"x-api-key": "k3y"}') == '{"x-api-key": "[redacted]"}'
    assert redact("short key pw1 here", "pw1") == "short key [redacted] here"
    assert redact("nothing to hide", "") == "nothing to hide"


def test_safe_url_drops_credentials_and_query():
    assert safe_url("https://user:pw@proxy.example:8443/v1?key=sk-1") == "https://proxy.example:8443/v1"


# -- no ambient configuration ------------------------------------------------------------------
def test_environment_credentials_and_headers_do_not_leak_in(emulator, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "token-from-env")
    monkeypatch.setenv("ANTHROPIC_CUSTOM_HEADERS",
                       "X-Leak: 1\nx-api-key: sk-ant-from-env\nAuthorization: Bearer sk-ant-from-env")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-from-env")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-from-env")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-from-env")
    monkeypatch.setenv("OPENAI_CUSTOM_HEADERS", "X-Leak: 1\nAuthorization: Bearer sk-from-env")
    for provider in PROVIDERS:
        registry.get(provider).list_models(EMULATOR_KEYS[provider], base_url=emulator.base_url(provider),
                                           retries=0)
    for entry in emulator.requests:
        assert entry.status == 200 and entry.auth == "bearer"  # our key, not the environment's
        assert entry.key_hint == EMULATOR_KEYS[entry.provider][-4:]
        assert not {"x-leak", "x-api-key", "openai-organization", "openai-project"} & set(entry.header_names)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_default_base_url_comes_from_the_catalog_not_the_environment(provider, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/elsewhere")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/elsewhere")
    adapter = registry.get(provider)
    default = catalog.load().info[provider]["default_base_url"]
    assert adapter.base_url(None) == default
    client = adapter._client("sk-test", adapter.base_url(None), 1)
    assert str(client.base_url).rstrip("/") == default
    assert client.max_retries == 0


def test_openai_client_never_reads_the_admin_key_from_the_environment(monkeypatch):
    """OPENAI_ADMIN_KEY is an admin credential of whoever runs byokctl: the SDK must not pick it
    up (it reads it whenever its admin_api_key argument is None)."""
    monkeypatch.setenv("OPENAI_ADMIN_KEY", "sk-admin-from-env")
    adapter = registry.get("openai")
    client = adapter._client("sk-test", adapter.base_url(None), 1)
    assert not client.admin_api_key
    assert "sk-admin-from-env" not in repr(vars(client))


# -- the registry ------------------------------------------------------------------------------
def test_registry_rejects_unknown_providers():
    with pytest.raises(NotFound, match="anthropic, openai"):
        registry.get("mistral")


def test_importing_the_registry_imports_no_sdk():
    code = ("import sys\n"
            "import byokctl.providers.registry as r\n"
            "r.get('anthropic'); r.get('openai')\n"
            "print(sorted(m for m in ('anthropic', 'openai', 'httpx2') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_provider_facts_are_read_without_any_adapter_or_sdk():
    """Labels, key prefixes, usage pages: what `key add`, `key list` and `usage show` need, with
    neither the SDKs nor the adapters (whose shared code costs start-up) imported."""
    code = ("import sys\n"
            "from byokctl.providers import registry\n"
            "from byokctl.services import keys\n"
            "keys.check_format('anthropic', 'sk-ant-api03-' + 'a' * 20)\n"
            "print([registry.facts(p).label for p in registry.PROVIDERS])\n"
            "print(sorted(m for m in ('anthropic', 'openai', 'httpx2', 'byokctl.providers.base',\n"
            "                          'byokctl.providers.anthropic') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["['Anthropic', 'OpenAI']", "[]"]


@pytest.mark.parametrize("provider", registry.PROVIDERS)
def test_each_provider_is_one_registry_row_its_adapter_and_its_catalog_rows(provider):
    facts = registry.facts(provider)
    adapter = registry.get(provider)
    assert adapter.name == provider and adapter.label == facts.label
    assert adapter.custom_headers_env == facts.custom_headers_env
    assert provider in catalog.load().info and catalog.load().for_provider(provider)
    assert catalog.PROVIDERS == registry.PROVIDERS == tuple(catalog.load().info)
    module = sys.modules[type(adapter).__module__]
    source = Path(module.__file__).read_text()
    assert f"import {facts.sdk}\n" in source  # the SDK `prefetch` warms is the one it calls


def test_key_formats_follow_the_registry_rows(monkeypatch):
    """A third provider's keys are checked from its row alone, beside the two others."""
    from byokctl.errors import KeyRejected
    from byokctl.services import keys

    row = registry.Provider("acmeai", "AcmeAI", "sk-acme-", "sk-acme-admin", "ACMEAI_CUSTOM_HEADERS",
                            "https://acme.example/usage", "acmeai", "byokctl.providers.acmeai:X",
                            "api.acme.example", True)
    monkeypatch.setitem(registry.FACTS, "acmeai", row)
    keys.check_format("acmeai", "sk-acme-" + "k" * 30)
    with pytest.raises(KeyRejected, match=r"That is an AcmeAI key \(sk-acme-…\), not an OpenAI one; "
                                          "use --provider acmeai"):
        keys.check_format("openai", "sk-acme-" + "k" * 30)
    with pytest.raises(KeyRejected, match=r"That looks like an Anthropic key \(sk-ant-…\), not an "
                                          "AcmeAI one; use --provider anthropic"):
        keys.check_format("acmeai", "sk-ant-" + "k" * 30)
    with pytest.raises(KeyRejected, match=r"not an AcmeAI API key \(AcmeAI keys start with sk-acme-\)"):
        keys.check_format("acmeai", "ak-" + "k" * 30)
    with pytest.raises(KeyRejected, match="AcmeAI admin key"):
        keys.check_format("acmeai", "sk-acme-admin" + "k" * 30)
    keys.check_format("acmeai", "sk-acme-admin" + "k" * 30, allow_admin_key=True)
