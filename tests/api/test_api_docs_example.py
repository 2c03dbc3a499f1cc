"""docs/python-api.md's request handlers run as written: the WSGI and the ASGI example, against
the emulator, with what they record seen by the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import re
import types
from wsgiref.util import setup_testing_defaults

import pytest
from conftest import REPO
from test_api_vault import balance, setup_byok, usage

DOC = (REPO / "docs" / "python-api.md").read_text()


@pytest.fixture
def byok(cli, env_key, emulator, monkeypatch) -> dict:
    found = setup_byok(cli, env_key, emulator, monkeypatch)
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", env_key)  # the examples use the CLI's sources
    return found


def example(heading: str) -> types.ModuleType:
    """The first python block after `heading`, loaded as a module."""
    section = DOC.split(heading, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = types.ModuleType("example")
    exec(compile(code, f"docs/python-api.md ({heading})", "exec"), module.__dict__)
    return module


def wsgi(app, path: str, doc: dict) -> tuple[str, dict]:
    body = json.dumps(doc).encode()
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "POST", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body)}
    setup_testing_defaults(environ)
    seen = {}

    def start_response(status, headers):
        seen["status"] = status

    out = b"".join(app(environ, start_response))
    return seen["status"], json.loads(out)


def test_the_wsgi_example_resolves_calls_and_records(cli, byok):
    module = example("## A request handler (WSGI, no framework)")
    try:
        status, doc = wsgi(module.app, "/ask", {"org": "acme", "prompt": "Hello"})
        assert status == "200 OK" and doc["text"] and doc["mode"] == "byok"
        status, doc = wsgi(module.app, "/chat", {"org": "plat", "prompt": "Hello"})
        assert status == "200 OK" and doc["text"] and doc["credits_charged"] == 1
        status, doc = wsgi(module.app, "/chat", {"org": "acme", "prompt": "Hello"})
        assert status == "200 OK" and doc["provider"] == "anthropic"
        status, doc = wsgi(module.app, "/ask", {"org": "nope", "prompt": "Hello"})
        assert status == "404 Not Found" and doc["error"]["code"] == "not-found"
        status, _ = wsgi(module.app, "/ask", {"prompt": "no org"})
        assert status == "400 Bad Request"
    finally:
        module.vault.close()
    assert balance(cli, byok, "plat") == 49
    assert usage(cli, byok, "acme")["totals"]["calls"] == 2


def test_the_asgi_example_answers(cli, byok):
    module = example("## The same handler for an event loop (ASGI, no framework)")

    async def call(doc: dict) -> tuple[int, dict]:
        sent = []
        body = json.dumps(doc).encode()

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        await module.app({"type": "http", "method": "POST", "path": "/"}, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])

    async def main():
        try:
            return [await call({"org": "plat", "prompt": "Hi"}),
                    await call({"org": "acme", "prompt": "Hi", "member": "x@y.z"})]
        finally:
            await module.vault.aclose()

    (s1, d1), (s2, d2) = asyncio.run(main())
    assert s1 == 200 and d1["credits_charged"] == 1 and d1["text"]
    assert s2 == 400 and d2["error"]["code"] == "denied"
    assert balance(cli, byok, "plat") == 49
