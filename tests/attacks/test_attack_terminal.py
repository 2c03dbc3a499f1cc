"""Terminal injection: ESC/CSI/OSC and other control characters in an org name, an email, a
base_url, a reason or a provider's text are refused at input and neutralised in everything
printed to a terminal (tested through a real pseudo-terminal) and in every error; `ask`'s answer
to a pipe stays the provider's bytes; --json stays JSON-escaped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import ANTHROPIC_TEST_KEY, REPO, master_key_b64

from byokctl.services import rules

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")

# A clear-screen, an OSC 8 hyperlink, a title change, C1 CSI, CR overwrite and a bidi override.
EVIL = "\x1b[2J\x1b]8;;https://evil.example\x07click\x1b]8;;\x07\x1b]0;pwned\x07\x9b31m\rX\u202eY"
RAW_SEQUENCES = [b"\x1b[2J", b"\x1b]8;;", b"\x1b]0;", "\x9b".encode(), b"\r", "\u202e".encode()]


def on_pty(*args: str) -> bytes:
    """stdout and stderr of `byokctl ARGS` run on a pseudo-terminal, as a person sees them."""
    leader, follower = os.openpty()
    env = {**os.environ, "TERM": "dumb", "COLUMNS": "400"}
    proc = subprocess.Popen([sys.executable, "-m", "byokctl", *args], stdin=subprocess.DEVNULL,
                            stdout=follower, stderr=follower, env=env, cwd=REPO)
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=60)
    os.close(leader)
    return out.replace(b"\r\n", b"\n")  # the terminal's own newline translation


def strings(doc: object) -> list[str]:
    """Every string in a parsed JSON document."""
    if isinstance(doc, dict):
        return [s for v in doc.values() for s in strings(v)]
    if isinstance(doc, list):
        return [s for v in doc for s in strings(v)]
    return [doc] if isinstance(doc, str) else []


def piped(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "byokctl", *args], capture_output=True, cwd=REPO,
                          env=os.environ, timeout=60)


def assert_neutral(out: bytes, shown: bool = True) -> None:
    for seq in RAW_SEQUENCES:
        assert seq not in out, (seq, out)
    assert b"\\x1b" in out or not shown, out  # shown, as its escape


@pytest.fixture
def proc_vault(cli, monkeypatch):
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())  # subprocesses open it too
    assert cli("init").exit_code == 0
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0


@pytest.mark.parametrize("argv", [
    ["org", "create", "evil", "--name", "Acme {e}"],
    ["member", "add", "acme", "a{e}@acme.com", "--role", "admin"],
    ["member", "add", "acme", "a@acme.com{e}", "--role", "admin"],
    ["org", "set-provider", "acme", "anthropic", "--base-url", "https://x.example/{e}", "--yes"],
    ["platform", "set-default", "anthropic", "--model", "haiku", "--base-url", "https://x.example/{e}"],
    ["credits", "add", "acme", "5", "--reason", "{e}"],
    ["plan", "grant-grace", "acme", "--reason", "gift {e}"],
    ["resolve", "acme", "--as", "{e}@acme.com"],
])
def test_control_characters_are_refused_at_input(cli, vault, argv):
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    before = cli("audit", "log", "--json").stdout
    for extra in ([], ["--json"]):
        r = cli(*(a.replace("{e}", EVIL) for a in argv), *extra)
        assert r.exit_code == 2, r.output
        assert "control character" in r.stderr, r.stderr
        assert "\x1b" not in r.output and "\x9b" not in r.output and "\u202e" not in r.output
    assert cli("audit", "log", "--json").stdout == before


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_values_in_an_older_vault_are_neutralised_on_a_terminal(cli, proc_vault, monkeypatch):
    # Write the values as a vault made before the input check would hold them.
    with monkeypatch.context() as m:
        m.setattr(rules, "plain_text", lambda value, what: value)
        assert cli("org", "create", "evil", "--name", f"Acme {EVIL}").exit_code == 0
        email = "ann" + EVIL.replace("\r", "") + "@acme.com"
        assert cli("member", "add", "acme", email, "--role", "admin").exit_code == 0
        assert cli("credits", "add", "acme", "5", "--reason", EVIL).exit_code == 0
        assert cli("plan", "grant-grace", "acme", "--reason", EVIL).exit_code == 0
    for argv in (["org", "list"], ["member", "list", "acme"], ["audit", "log"],
                 ["org", "show", "evil"], ["plan", "show", "acme"]):
        assert_neutral(on_pty(*argv))
    for argv in (["org", "show", "acme"], ["org", "create", "evil", "--name", "Acme"]):
        assert_neutral(on_pty(*argv), shown=False)
    # and piped, as a script reads them, too; --json is escaped JSON that parses back
    assert_neutral(piped("org", "list").stdout)
    for argv in (["org", "list", "--json"], ["member", "list", "acme", "--json"],
                 ["audit", "log", "--json"]):
        out = piped(*argv).stdout
        for seq in RAW_SEQUENCES:
            assert seq not in out, (argv, seq)
        assert any("\x1b]8;;https://evil.example\x07click" in v for v in strings(json.loads(out))), argv
    assert b"\\u001b" in on_pty("org", "list", "--json")


class EvilProvider:
    """A loopback server whose every answer is a 401 carrying EVIL in its message."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = json.dumps({"type": "error", "error": {"type": "authentication_error",
                                                               "message": f"no {EVIL} way"}}).encode()
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever,
                         kwargs={"poll_interval": 0.05}, daemon=True).start()


@pytest.mark.slow  # six processes that load a provider SDK
def test_a_providers_error_text_is_neutralised(cli, proc_vault):
    evil = EvilProvider()
    try:
        assert cli("org", "set-provider", "acme", "anthropic", "--base-url", evil.url,
                   "--yes").exit_code == 0
        r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
                input=ANTHROPIC_TEST_KEY + "\n")
        key_id = json.loads(r.stdout)["id"]
        for argv in (["key", "test", key_id], ["ask", "acme", "hi", "--retries", "0"]):
            out = on_pty(*argv)
            assert b"rejected the API key" in out, out
            assert_neutral(out)
            p = piped(*argv)  # an error message is neutralised wherever it goes
            assert p.returncode == 7
            assert_neutral(p.stderr)
            p = piped(*argv, "--json")
            assert all(seq not in p.stderr for seq in RAW_SEQUENCES), p.stderr
            assert "\x1b]8;;https://evil.example\x07click" in json.loads(p.stderr)["error"]["message"]
    finally:
        evil.server.shutdown()
        evil.server.server_close()


@pytest.mark.slow  # processes that load a provider SDK
@pytest.mark.parametrize("stream", [[], ["--no-stream"]])
def test_asks_answer_is_neutralised_on_a_terminal_and_kept_on_a_pipe(cli, proc_vault, emulator,
                                                                   stream):
    assert cli("org", "set-provider", "acme", "anthropic", "--base-url", emulator.anthropic_base_url,
               "--yes").exit_code == 0
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin",
            input=ANTHROPIC_TEST_KEY + "\n")
    assert r.exit_code == 0, r.output
    prompt = f"say {EVIL} now"  # the emulator's answer repeats the prompt
    out = on_pty("ask", "acme", prompt, *stream)
    assert b"Emulated Anthropic reply" in out, out
    assert_neutral(out)
    p = piped("ask", "acme", prompt, *stream)
    assert p.returncode == 0, p.stderr
    sent = EVIL.replace("\r", " ")  # the emulator's answer repeats the prompt's words
    assert f"say {sent} now".encode() in p.stdout  # to a pipe: the provider's bytes, exactly
    p = piped("ask", "acme", prompt, "--json")
    assert all(seq not in p.stdout for seq in RAW_SEQUENCES)
    assert sent in json.loads(p.stdout)["text"]
