"""The loopback emulator speaks both providers' real wire formats: the official SDKs (with strict
response validation) parse what it serves, and it misbehaves exactly when told to."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import anthropic
import openai
import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, REPO

from byokctl.providers import catalog
from byokctl.providers.emulator import Fault, count_tokens

HAIKU = "claude-haiku-4-5-20251001"
NANO = "gpt-5-nano-2025-08-07"


def anthropic_client(emulator, key: str = ANTHROPIC_TEST_KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key, base_url=emulator.anthropic_base_url, max_retries=0,
                               timeout=5, _strict_response_validation=True)


def openai_client(emulator, key: str = OPENAI_TEST_KEY) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=emulator.openai_base_url, max_retries=0, timeout=5,
                         _strict_response_validation=True)


# -- Anthropic ---------------------------------------------------------------------------------
def test_anthropic_models_list(emulator):
    page = anthropic_client(emulator).models.list()
    assert [m.id for m in page] == [m.id for m in catalog.load().for_provider("anthropic")]
    assert page.has_more is False and page.first_id == page.data[0].id and page.last_id == page.data[-1].id


def test_anthropic_models_pages_like_the_api(emulator):
    ids = [m.id for m in catalog.load().for_provider("anthropic")]
    first = anthropic_client(emulator).models.list(limit=1)
    assert [m.id for m in first.data] == ids[:1] and first.has_more is True
    assert [m.id for m in first] == ids  # the SDK follows after_id through every page
    status, body = _raw(emulator, "/anthropic/v1/models?limit=many", {"x-api-key": ANTHROPIC_TEST_KEY})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"


def test_unknown_paths_are_404(emulator):
    status, body = _raw(emulator, "/v1/models", {"x-api-key": ANTHROPIC_TEST_KEY})
    assert status == 404 and "/anthropic" in body["error"]["message"]
    status, body = _raw(emulator, "/openai/v1/embeddings", {"Authorization": f"Bearer {OPENAI_TEST_KEY}"})
    assert status == 404 and body["error"]["type"] == "invalid_request_error"


def test_anthropic_message_with_usage(emulator):
    msg = anthropic_client(emulator).messages.create(
        model=HAIKU, max_tokens=100, system="be brief",
        messages=[{"role": "user", "content": "hello brave new world"}])
    assert msg.content[0].type == "text"
    assert msg.content[0].text == f"Emulated Anthropic reply from {HAIKU}: hello brave new world"
    assert msg.stop_reason == "end_turn" and msg.model == HAIKU
    assert msg.usage.input_tokens == 2 + 4  # system words + prompt words
    assert msg.usage.output_tokens == count_tokens(msg.content[0].text) == 9


def test_anthropic_max_tokens_cuts_the_reply(emulator):
    msg = anthropic_client(emulator).messages.create(
        model=HAIKU, max_tokens=3, messages=[{"role": "user", "content": "hello"}])
    assert msg.content[0].text == "Emulated Anthropic reply"
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3


def test_anthropic_streaming_events_and_usage(emulator):
    events = list(anthropic_client(emulator).messages.create(
        model=HAIKU, max_tokens=100, stream=True, messages=[{"role": "user", "content": "one two"}]))
    types = [e.type for e in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == f"Emulated Anthropic reply from {HAIKU}: one two"
    assert events[0].message.usage.input_tokens == 2
    assert events[-2].usage.output_tokens == len(deltas) == 7


def test_anthropic_stream_helper_accumulates_the_final_message(emulator):
    with anthropic_client(emulator).messages.stream(
            model=HAIKU, max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == f"Emulated Anthropic reply from {HAIKU}: hi"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (1, 6)


def test_anthropic_unknown_model_is_404_not_found_error(emulator):
    with pytest.raises(anthropic.NotFoundError) as info:
        anthropic_client(emulator).messages.create(
            model="claude-nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "not_found_error"


# -- OpenAI ------------------------------------------------------------------------------------
def test_openai_models_list(emulator):
    ids = [m.id for m in openai_client(emulator).models.list()]
    assert ids == [m.id for m in catalog.load().for_provider("openai")]


def test_openai_chat_completion_with_usage(emulator):
    done = openai_client(emulator).chat.completions.create(
        model=NANO, max_completion_tokens=100,
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}])
    assert done.choices[0].message.content == f"Emulated OpenAI reply from {NANO}: hello there"
    assert done.choices[0].finish_reason == "stop"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens, done.usage.total_tokens) == (4, 7, 11)


def test_openai_max_completion_tokens_cuts_the_reply(emulator):
    done = openai_client(emulator).chat.completions.create(
        model=NANO, max_completion_tokens=2, messages=[{"role": "user", "content": "hello"}])
    assert done.choices[0].message.content == "Emulated OpenAI"
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 2


def test_openai_streaming_with_usage_chunk(emulator):
    chunks = list(openai_client(emulator).chat.completions.create(
        model=NANO, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "hello there"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Emulated OpenAI reply from {NANO}: hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (2, 7)
    assert all(c.usage is None for c in chunks[:-1])


def test_openai_streaming_without_usage_option_sends_no_usage(emulator):
    chunks = list(openai_client(emulator).chat.completions.create(
        model=NANO, stream=True, messages=[{"role": "user", "content": "hello"}]))
    assert chunks and all(c.usage is None and c.choices for c in chunks)


def test_openai_unknown_model_is_404_model_not_found(emulator):
    with pytest.raises(openai.NotFoundError) as info:
        openai_client(emulator).chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "model_not_found"


# -- keys and auth headers ---------------------------------------------------------------------
def _raw(emulator, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_both_auth_header_styles_are_accepted(emulator):
    status, body = _raw(emulator, "/anthropic/v1/models", {"x-api-key": ANTHROPIC_TEST_KEY})
    assert status == 200 and body["data"]
    status, body = _raw(emulator, "/anthropic/v1/models", {"Authorization": f"Bearer {ANTHROPIC_TEST_KEY}"})
    assert status == 200 and body["data"]
    status, body = _raw(emulator, "/openai/v1/models", {"Authorization": f"Bearer {OPENAI_TEST_KEY}"})
    assert status == 200 and body["object"] == "list"
    assert [r.auth for r in emulator.requests] == ["x-api-key", "bearer", "bearer"]
    assert [r.key_hint for r in emulator.requests] == [ANTHROPIC_TEST_KEY[-4:]] * 2 + [OPENAI_TEST_KEY[-4:]]


def test_sdks_send_the_key_as_bearer(emulator):
    anthropic_client(emulator).models.list()
    openai_client(emulator).models.list()
    assert [(r.provider, r.auth, r.status) for r in emulator.requests] == [
        ("anthropic", "bearer", 200), ("openai", "bearer", 200)]


def test_unknown_key_gets_401_in_each_providers_shape_echoing_the_key(emulator):
    status, body = _raw(emulator, "/anthropic/v1/models", {"x-api-key": "sk-ant-wrong-0123456789"})
    assert status == 401 and body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "sk-ant-wrong-0123456789" in body["error"]["message"]
    status, body = _raw(emulator, "/openai/v1/models", {"Authorization": "Bearer sk-wrong-0123456789"})
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert "sk-wrong-0123456789" in body["error"]["message"]
    status, _ = _raw(emulator, "/openai/v1/models", {})
    assert status == 401
    # A key valid for one provider is not valid for the other.
    status, _ = _raw(emulator, "/openai/v1/models", {"Authorization": f"Bearer {ANTHROPIC_TEST_KEY}"})
    assert status == 401


def test_keys_can_be_allowed_and_revoked_at_runtime(emulator):
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(emulator, "sk-ant-later").models.list()
    emulator.allow_key("sk-ant-later", "anthropic")
    assert anthropic_client(emulator, "sk-ant-later").models.list().data
    emulator.revoke_key("sk-ant-later")
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(emulator, "sk-ant-later").models.list()


# -- faults ------------------------------------------------------------------------------------
def test_injected_errors_use_provider_shapes_and_retry_after(emulator):
    emulator.inject(status=429, retry_after=7, provider="anthropic")
    emulator.inject(status=529, provider="openai")
    with pytest.raises(anthropic.RateLimitError) as info:
        anthropic_client(emulator).models.list()
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert info.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.InternalServerError) as oinfo:
        openai_client(emulator).models.list()
    assert oinfo.value.status_code == 529 and "retry-after" not in oinfo.value.response.headers


def test_529_is_anthropics_overloaded_error(emulator):
    emulator.inject(status=529)
    with pytest.raises(anthropic.OverloadedError) as info:
        anthropic_client(emulator).models.list()
    assert info.value.body["error"]["type"] == "overloaded_error"


def test_a_fault_with_times_applies_that_often_then_stops(emulator):
    emulator.inject(Fault(status=503, times=2, endpoint="models"))
    client = anthropic_client(emulator)
    for _ in range(2):
        with pytest.raises(anthropic.ServiceUnavailableError):
            client.models.list()
    assert client.models.list().data
    assert [(r.status, r.fault) for r in emulator.requests] == [(503, True), (503, True), (200, False)]


def test_a_fault_scoped_to_a_key_spares_other_keys(emulator):
    emulator.allow_key("sk-ant-other-key")
    emulator.inject(status=403, key="sk-ant-other-key")
    with pytest.raises(anthropic.PermissionDeniedError):
        anthropic_client(emulator, "sk-ant-other-key").models.list()
    assert anthropic_client(emulator).models.list().data


def test_clear_faults_restores_normal_service(emulator):
    emulator.inject(status=500)
    emulator.clear_faults()
    assert anthropic_client(emulator).models.list().data


def test_request_log_keeps_no_bodies_and_no_full_keys(emulator):
    anthropic_client(emulator).messages.create(
        model=HAIKU, max_tokens=10, messages=[{"role": "user", "content": "a very secret prompt"}])
    (entry,) = emulator.requests
    assert "secret prompt" not in repr(entry) and ANTHROPIC_TEST_KEY not in repr(entry)
    assert (entry.method, entry.path, entry.endpoint) == ("POST", "/anthropic/v1/messages", "completions")
    emulator.clear_log()
    assert emulator.requests == []


# -- the network surface -----------------------------------------------------------------------
def test_binds_loopback_only(emulator):
    assert emulator.anthropic_base_url.startswith(f"http://127.0.0.1:{emulator.port}/")
    assert emulator._server.socket.getsockname()[0] == "127.0.0.1"
    # Bound to 127.0.0.1 itself, not to every address: another loopback address is refused.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", emulator.port), timeout=2).close()


def test_stop_ends_a_stalled_request_and_frees_the_port(emulator):
    emulator.inject(stall=30)
    port = emulator.port
    errors: list[Exception] = []

    def call() -> None:
        try:
            anthropic_client(emulator).models.list()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    time.sleep(0.3)
    started = time.monotonic()
    emulator.stop()
    worker.join(timeout=10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def _post(emulator, path: str, body: dict, key: str = OPENAI_TEST_KEY) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", emulator.port, timeout=5)
    conn.request("POST", path, body=json.dumps(body), headers={"Authorization": f"Bearer {key}",
                                                               "Content-Type": "application/json"})
    return conn.getresponse()


def test_oversized_pads_an_answer_with_bytes_the_sdks_ignore(emulator):
    emulator.inject(endpoint="completions", oversized=3 << 20)
    chat = {"model": NANO, "messages": [{"role": "user", "content": "hi"}]}
    raw = _post(emulator, "/openai/v1/chat/completions", chat).read()
    assert len(raw) > 3 << 20 and raw[: 3 << 20].strip() == b""
    assert json.loads(raw)["choices"][0]["message"]["content"]
    done = openai_client(emulator).chat.completions.create(**chat)
    assert done.choices[0].message.content and done.usage.completion_tokens > 0
    streamed = _post(emulator, "/openai/v1/chat/completions", {**chat, "stream": True}).read()
    assert len(streamed) > 3 << 20 and b"\n:   " in streamed  # SSE comment lines
    with anthropic_client(emulator).messages.stream(
            model=HAIKU, max_tokens=32, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) and s.get_final_message().usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_trickle_sends_an_ignorable_byte_at_a_time_without_end(emulator, stream):
    emulator.inject(endpoint="completions", trickle=0.05)
    chat = {"model": NANO, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = _post(emulator, "/openai/v1/chat/completions", chat)
    assert response.status == 200 and response.getheader("Transfer-Encoding") == "chunked"
    if stream:  # the first text delta, then comments
        first = response.readline() + response.readline()
        assert b'"content"' in first or b"role" in first
        while response.readline() not in (b":\n", b""):  # up to the first comment's end
            pass
        assert response.readline() == b"\n"
    piece = b":\n\n" if stream else b" "  # an SSE comment; whitespace before a JSON value
    started = time.monotonic()
    got = b"".join(response.read(len(piece)) for _ in range(6))
    assert time.monotonic() - started >= 0.2  # one piece every 0.05 s
    assert got == piece * 6
    response.close()
    assert emulator.requests[-1].fault and emulator.requests[-1].status == 200


# -- `byokctl emulator serve` ------------------------------------------------------------------
# Runs the real CLI entry; registers the command group itself only if the root app lacks it.
_SERVE = ("import sys\n"
          "from byokctl.cli import app, emulator\n"
          "if not any(g.name == 'emulator' for g in app.registered_groups):\n"
          "    emulator.register(app)\n"
          "app()\n")


def _serve(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _SERVE, "emulator", "serve", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _read_json_document(proc: subprocess.Popen[str]) -> dict:
    lines = []
    while True:
        line = proc.stdout.readline()
        assert line, f"serve ended early: {proc.stderr.read()}"
        lines.append(line)
        if line.rstrip() == "}":
            return json.loads("".join(lines))


def test_serve_prints_base_urls_serves_and_stops_on_sigint():
    proc = _serve("--port", "0", "--json", "--valid-key", f"anthropic:{ANTHROPIC_TEST_KEY}",
                  "--fail", "503", "--fail-times", "1")
    try:
        urls = _read_json_document(proc)
        assert urls["anthropic_base_url"] == f"http://127.0.0.1:{urls['port']}/anthropic"
        assert urls["openai_base_url"] == f"http://127.0.0.1:{urls['port']}/openai/v1"
        request = urllib.request.Request(urls["anthropic_base_url"] + "/v1/models",
                                         headers={"x-api-key": ANTHROPIC_TEST_KEY})
        with pytest.raises(urllib.error.HTTPError) as info:  # --fail 503, the first time only
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 503
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200 and json.load(response)["data"]
        # The key was scoped to anthropic: the OpenAI side refuses it.
        openai_request = urllib.request.Request(urls["openai_base_url"] + "/models",
                                                headers={"Authorization": f"Bearer {ANTHROPIC_TEST_KEY}"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(openai_request, timeout=5)
        assert info.value.code == 401
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, err
    assert "Emulator stopped." in err and "Traceback" not in err
    assert "GET /anthropic/v1/models → 503" in err


def test_serve_human_output_names_each_base_url_and_warns_without_keys():
    proc = _serve("--port", "0")
    try:
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first.split()[0] == "anthropic:" and first.split()[1].endswith("/anthropic")
        assert second.split()[0] == "openai:" and second.split()[1].endswith("/openai/v1")
        talk = [proc.stderr.readline() for _ in range(2)]
        assert talk[0].startswith("warning: no --valid-key given") and "Ctrl-C" in talk[1], talk
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0 and err == "Emulator stopped.\n", (talk, err)


def test_serve_refuses_a_port_in_use(emulator):
    proc = _serve("--port", str(emulator.port))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and out == ""
    assert err.startswith("error: Port ") and "--port" in err


def test_on_arrival_reports_a_request_before_its_stall_and_on_request_once_answered(emulator):
    """A test that acts "while the call is at the provider" waits for `on_arrival`: `on_request`
    reports a request only once it has been answered, after any stall."""
    seen: list[tuple[str, float]] = []
    emulator.on_arrival = lambda provider, endpoint: seen.append((f"arrived {provider} {endpoint}",
                                                                  time.monotonic()))
    emulator.on_request = lambda q: seen.append((f"answered {q.endpoint}", time.monotonic()))
    emulator.inject(endpoint="models", stall=0.6, times=1)
    client = anthropic.Anthropic(api_key=ANTHROPIC_TEST_KEY, base_url=emulator.anthropic_base_url,
                                 max_retries=0)
    start = time.monotonic()
    client.models.list()
    assert [what for what, _ in seen] == ["arrived anthropic models", "answered models"]
    arrived, answered = seen[0][1] - start, seen[1][1] - start
    assert arrived < 0.5 <= answered  # the stall lies between them
