"""A hostile provider answers 401 with the key echoed in an encoding (base64, hex, percent,
`\\u` escapes) or with a message of a megabyte: through `key test` and `ask`, for both real SDKs,
no 12-character run of the key in any of those forms reaches the output, and the message stays
short."""

from __future__ import annotations

import base64
import json
import secrets
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from byokctl.providers.redact import MIN_FRAGMENT

ALPHABET = string.ascii_letters + string.digits


def _b64(key: str, prefix: str = "") -> str:
    return base64.b64encode((prefix + key).encode()).decode()


# How the hostile server echoes the key it was sent.
ECHOES = {
    "base64": lambda k: f"bad key {_b64(k)}",
    "base64-basic-auth": lambda k: f"Basic {_b64(k, 'user:')}",
    "base64-url-unpadded": lambda k: base64.urlsafe_b64encode(("x" + k).encode()).decode().rstrip("="),
    "hex": lambda k: f"key hex {k.encode().hex()}",
    "HEX": lambda k: f"key hex {k.encode().hex().upper()}",
    "percent": lambda k: "key=" + "".join(f"%{b:02X}" for b in k.encode()),
    "u-escapes": lambda k: "key " + "".join(f"\\u{ord(c):04x}" for c in k),
    "plain-text-body": None,  # not JSON at all: the SDK's own message carries the body
}


class Hostile:
    """A loopback server that rejects every key, echoing it as `self.echo` says."""

    def __init__(self) -> None:
        self.echo = "base64"
        self.message: str | None = None  # overrides the echo
        self.seen: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                key = (self.headers.get("x-api-key")
                       or (self.headers.get("authorization") or "").removeprefix("Bearer "))
                outer.seen.append(key)
                echo = ECHOES[outer.echo]
                text = outer.message or (echo(key) if echo else "")
                if echo is None and outer.message is None:
                    body = f"401 Unauthorized: {_b64(key)} / {key.encode().hex()}".encode()
                    ctype = "text/plain"
                elif self.path.startswith("/v1/chat") or "openai" in self.path:
                    body = json.dumps({"error": {"message": text, "type": "invalid_request_error",
                                                 "code": "invalid_api_key"}}).encode()
                    ctype = "application/json"
                else:
                    body = json.dumps({"type": "error", "error": {
                        "type": "authentication_error", "message": text}}).encode()
                    ctype = "application/json"
                self.send_response(401)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever,
                         kwargs={"poll_interval": 0.05}, daemon=True).start()

    def base_url(self, provider: str) -> str:
        return self.url if provider == "anthropic" else self.url + "/v1"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echoing_server():
    h = Hostile()
    yield h
    h.stop()


def new_secret(provider: str) -> str:
    tail = "".join(secrets.choice(ALPHABET) for _ in range(48))
    return ("sk-ant-api03-" if provider == "anthropic" else "sk-proj-") + tail


def forms(secret: str) -> list[str]:
    """The key and the encodings the server uses, each as every run of MIN_FRAGMENT characters."""
    raw = secret.encode()
    whole = [secret, raw.hex(), "".join(f"%{b:02x}" for b in raw),
             "".join(f"\\u{ord(c):04x}" for c in secret)]
    for prefix in (b"", b"x", b"user:"):
        b64 = base64.b64encode(prefix + raw).decode()
        whole += [b64[4:-4], b64[4:-4].replace("+", "-").replace("/", "_")]
    return [w[i:i + MIN_FRAGMENT].lower() for w in whole for i in range(len(w) - MIN_FRAGMENT + 1)]


def assert_no_run_of(secret: str, text: str) -> None:
    low = text.lower()
    leaked = [f for f in forms(secret) if f in low]
    assert not leaked, f"a run of the key leaked as {leaked[0]!r} in {text!r}"


@pytest.fixture
def hostile_orgs(cli, vault, echoing_server) -> dict[str, tuple[str, str]]:
    """One org per provider at the hostile server, each with an org key: {provider: (org, key_id)}."""
    out = {}
    for org, provider in (("acme", "anthropic"), ("beta", "openai")):
        assert cli("org", "create", org, "--plan", "growth").exit_code == 0
        r = cli("org", "set-provider", org, provider, "--base-url", echoing_server.base_url(provider),
                "--yes")
        assert r.exit_code == 0, r.output
        secret = new_secret(provider)
        r = cli("key", "add", org, "--provider", provider, "--from-stdin", "--json", input=secret + "\n")
        assert r.exit_code == 0, r.output
        out[provider] = (org, json.loads(r.stdout)["id"], secret)
    return out


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("echo", list(ECHOES))
@pytest.mark.parametrize("how", ["key test", "ask"])
def test_a_401_echoing_the_key_encoded_never_shows_it(cli, hostile_orgs, echoing_server, provider, echo, how):
    org, key_id, secret = hostile_orgs[provider]
    echoing_server.echo = echo
    for extra in ([], ["--json"]):
        argv = ["key", "test", key_id] if how == "key test" else ["ask", org, "hello", "--retries", "0"]
        r = cli(*argv, *extra)
        assert r.exit_code == 7, r.output
        assert secret in echoing_server.seen  # the server did get the key, and echoed it
        assert_no_run_of(secret, r.output)
        assert "rejected" in r.stderr


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
@pytest.mark.parametrize("how", ["key test", "ask"])
def test_a_provider_message_is_capped(cli, hostile_orgs, echoing_server, provider, how):
    org, key_id, secret = hostile_orgs[provider]
    echoing_server.message = "You are not allowed. " * 50_000  # a megabyte
    argv = ["key", "test", key_id] if how == "key test" else ["ask", org, "hello", "--retries", "0"]
    r = cli(*argv)
    assert r.exit_code == 7, r.output
    assert "You are not allowed" in r.stderr
    assert len(r.stderr) < 600, len(r.stderr)
