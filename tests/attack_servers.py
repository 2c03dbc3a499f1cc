"""Hostile loopback HTTP servers for the attack tests: a "gateway" that answers as it likes.

Binds 127.0.0.1 only. `answer(handler, body)` gets the BaseHTTPRequestHandler and the request's
parsed JSON body and writes whatever response the attack needs.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[BaseHTTPRequestHandler, dict], None]


class HostileServer:
    def __init__(self, answer: Answer) -> None:
        outer = self
        self.requests: list[str] = []
        self.arrivals: list[float] = []  # time.monotonic() as each request arrived

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                outer.arrivals.append(time.monotonic())
                size = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(size) or b"{}")
                outer.requests.append(self.path)
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    answer(self, body)  # the client giving up is what the attack expects
                self.close_connection = True

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HostileServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def send_json(handler: BaseHTTPRequestHandler, doc: dict, status: int = 200) -> None:
    data = json.dumps(doc).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def openai_completion(model: str, prompt_tokens: object, completion_tokens: object) -> dict:
    return {"id": "chatcmpl-hostile", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": 0}}


def start_sse(handler: BaseHTTPRequestHandler) -> None:
    """Headers of an endless server-sent event stream (no length: it never ends)."""
    handler.send_response(200)
    handler.send_header("content-type", "text/event-stream")
    handler.send_header("cache-control", "no-cache")
    handler.end_headers()


def sse(handler: BaseHTTPRequestHandler, event: str | None, data: dict) -> None:
    head = f"event: {event}\n" if event else ""
    handler.wfile.write(f"{head}data: {json.dumps(data)}\n\n".encode())
    handler.wfile.flush()
