"""Attacks on `--timeout` from the hostile review (issue 6/11, item 8): a stream of endless
pings, an endless answer (streamed, or sent to a `--json` call that asked for none), and a
stalling provider with retries. `--timeout` is the deadline of the whole call and a response
is capped in size, so each ends with exit 11 in bounded time and memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from attack_servers import HostileServer, sse, start_sse
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, REPO, master_key_b64

from byokctl.errors import ExitCode

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out

PROMPT = "Say hello"
# Seconds past --timeout a call may take to end once its request reached the server (the
# failure's record, the process's exit). Counted from the request's arrival, not from the
# process's start: on a loaded machine (16 processes of the billing attacks starting on two
# cores) a process took 10 s to start and import its SDK before sending anything.
MARGIN = 2.0
RSS_BOUND_MB = 400      # the old code reached 3.5 GB in 16 s


def run_bounded(args: list[str], tmp_path, kill_after: float,
                arrivals: list[float] | None = None) -> tuple[int, float, float, str]:
    """Run `byokctl <args>` as a process; (exit code, seconds, peak RSS in MB, stderr). A
    process still running after `kill_after` seconds is killed (the attack won). With
    `arrivals` (the times, time.monotonic(), the server saw requests arrive), the seconds are
    from the first request's arrival to the process's end: what the server could hold it for
    (none arrived: the deadline passed before anything was sent, 0)."""
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as o, err.open("w") as e:
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "byokctl", *args], cwd=REPO,
                                stdout=o, stderr=e, stdin=subprocess.DEVNULL)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > kill_after:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped
    ended = time.monotonic()
    if arrivals is not None:
        started = arrivals[0] if arrivals else ended
    return (os.waitstatus_to_exitcode(status), ended - started, usage.ru_maxrss / 1024,
            err.read_text())


@pytest.fixture
def platform_at(cli, monkeypatch):
    """A vault (master key in the environment, for the subprocess) with org acme on platform
    credits; returns a function pointing the platform at a provider's base URL."""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    assert cli("init").exit_code == 0
    cli("org", "create", "acme", "--credits", "100")
    for provider, secret in (("anthropic", ANTHROPIC_TEST_KEY), ("openai", OPENAI_TEST_KEY)):
        r = cli("key", "add", "--platform", "--provider", provider, "--from-stdin", input=secret)
        assert r.exit_code == 0, r.output

    def point(provider: str, model: str, url: str) -> None:
        r = cli("platform", "set-default", provider, "--model", model, "--base-url", url)
        assert r.exit_code == 0, r.output

    return point


def anthropic_pings_forever(handler, body):
    start_sse(handler)
    msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
           "content": [], "stop_reason": None, "stop_sequence": None,
           "usage": {"input_tokens": 3, "output_tokens": 1}}
    sse(handler, "message_start", {"type": "message_start", "message": msg})
    while True:
        sse(handler, "ping", {"type": "ping"})
        time.sleep(0.01)


def openai_deltas_forever(handler, body):
    start_sse(handler)  # whatever was asked, `stream` or not
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
             "model": body["model"], "choices": [{"index": 0, "delta": {"content": "la " * 200},
                                                  "finish_reason": None}]}
    while True:
        sse(handler, None, chunk)


def test_endless_pings_end_at_the_deadline(cli, platform_at, tmp_path):
    """Old code: the SDK's timeout bounds each read, and a ping arrives every 10 ms: it never ended."""
    with HostileServer(anthropic_pings_forever) as gw:
        platform_at("anthropic", "haiku", gw.url)
        code, took, _, err = run_bounded(["ask", "acme", PROMPT, "--timeout", "2"], tmp_path,
                                         kill_after=30, arrivals=gw.arrivals)
    assert code == ExitCode.PROVIDER_DOWN, err
    assert took < 2 + MARGIN, took
    assert "did not answer within 2 s (--timeout, the deadline of the whole call" in err
    assert "Traceback" not in err
    r = cli("usage", "show", "acme", "--json")
    assert json.loads(r.stdout)["totals"]["errors"] == 1  # recorded
    assert json.loads(cli("credits", "show", "acme", "--json").stdout)["balance"] == 100


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_endless_answer_is_cut_off_with_memory_bounded(cli, platform_at, tmp_path, stream):
    """Old code: with --json an endless body was read whole: 3.5 GB in 16 s."""
    with HostileServer(openai_deltas_forever) as gw:
        platform_at("openai", "gpt-5-nano", gw.url + "/v1")
        args = ["ask", "acme", PROMPT, "--timeout", "20"] + ([] if stream else ["--json"])
        code, took, rss_mb, err = run_bounded(args, tmp_path, kill_after=60)
    assert code == ExitCode.PROVIDER_DOWN, err
    assert rss_mb < RSS_BOUND_MB, rss_mb
    assert took < 20, took  # the size cap ends it, long before the deadline
    assert "MiB" in err and "Traceback" not in err


def test_endless_answer_ends_at_the_deadline_when_it_trickles(cli, platform_at, tmp_path):
    def trickle(handler, body):
        start_sse(handler)
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                 "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]}
        while True:
            sse(handler, None, chunk)
            time.sleep(0.05)

    with HostileServer(trickle) as gw:
        platform_at("openai", "gpt-5-nano", gw.url + "/v1")
        code, took, _, err = run_bounded(["ask", "acme", PROMPT, "--timeout", "2"], tmp_path,
                                         kill_after=30, arrivals=gw.arrivals)
    assert code == ExitCode.PROVIDER_DOWN, err
    assert took < 2 + MARGIN, took


def test_a_head_sent_a_byte_at_a_time_ends_at_the_deadline(cli, platform_at, tmp_path):
    """Old code: the watchdog started once the response's head had arrived, and each byte of
    a head came well within the step timeout: the call never ended (until h11's 16 KiB cap on
    a head, one byte every 0.2 s: about an hour)."""
    def trickled_head(handler, body):
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nx-pad: ")
        while True:
            handler.wfile.write(b"a")
            handler.wfile.flush()
            time.sleep(0.2)

    with HostileServer(trickled_head) as gw:
        platform_at("anthropic", "haiku", gw.url)
        # A deadline long enough for the request to go even on a loaded machine (the SDK's
        # import counts against it): the attack needs the server to hold the call.
        code, took, _, err = run_bounded(["ask", "acme", PROMPT, "--timeout", "8"], tmp_path,
                                         kill_after=40, arrivals=gw.arrivals)
        assert gw.arrivals, err
    assert code == ExitCode.PROVIDER_DOWN, err
    assert took < 8 + MARGIN, took
    assert "did not answer within 8 s" in err and "Traceback" not in err


def test_retries_stay_within_the_deadline(cli, platform_at, tmp_path, emulator):
    """Old code: each of the 6 attempts waited the whole --timeout, plus backoff: ~15 s."""
    emulator.inject(endpoint="completions", stall=30)
    arrivals: list[float] = []
    emulator.on_arrival = lambda provider, endpoint: arrivals.append(time.monotonic())
    platform_at("openai", "gpt-5-nano", emulator.openai_base_url)
    code, took, _, err = run_bounded(
        ["ask", "acme", PROMPT, "--timeout", "2", "--retries", "5", "--no-stream"], tmp_path,
        kill_after=60, arrivals=arrivals)
    assert code == ExitCode.PROVIDER_DOWN, err
    assert took < 2 + MARGIN, took


def test_a_stalled_key_test_ends_at_the_deadline(cli, platform_at, tmp_path):
    r = cli("key", "list", "--json")
    key = next(k["id"] for k in json.loads(r.stdout) if k["provider"] == "openai")
    with HostileServer(lambda handler, body: time.sleep(30)) as gw:
        platform_at("openai", "gpt-5-nano", gw.url + "/v1")
        code, took, _, err = run_bounded(["key", "test", key, "--timeout", "2", "--retries", "4"],
                                         tmp_path, kill_after=60, arrivals=gw.arrivals)
        assert gw.requests and gw.requests[0].endswith("/models")
    assert code == ExitCode.PROVIDER_DOWN, err
    assert took < 2 + MARGIN, took
