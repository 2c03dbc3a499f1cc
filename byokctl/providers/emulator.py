"""A loopback emulator of the Anthropic Messages and OpenAI Chat Completions APIs.

One HTTP server on 127.0.0.1 serves both providers under a path prefix each, in their real wire
formats, so the official SDKs talk to it through `base_url`:

    Anthropic  base_url http://127.0.0.1:PORT/anthropic     GET /v1/models, POST /v1/messages
    OpenAI     base_url http://127.0.0.1:PORT/openai/v1     GET /models,    POST /chat/completions

Replies and token counts are deterministic (a token is a whitespace-separated word), keys are
checked against a configured list (`Authorization: Bearer` or `x-api-key`), and `Fault`s make it
answer errors, stall, send malformed JSON or drop the connection mid-stream. Stdlib only.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from byokctl.providers import catalog

HOST = "127.0.0.1"
PREFIXES = {"anthropic": "/anthropic", "openai": "/openai"}
ENDPOINTS = ("models", "completions")  # what a Fault can be scoped to

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 503: "api_error", 504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS = {  # status -> (type, code)
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"), 429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None), 503: ("server_error", None),
}
_MESSAGES = {
    400: "The request is invalid.", 402: "Your credit balance is too low.",
    403: "Your API key does not have permission to use this resource.",
    404: "The requested resource was not found.", 408: "The request timed out.",
    429: "Rate limit reached for requests; please try again later.",
    500: "Internal server error.", 502: "Bad gateway.", 503: "The service is temporarily unavailable.",
    504: "The request timed out.", 529: "Overloaded",
}


@dataclass
class Fault:
    """Misbehaviour for the requests it matches (by provider, key and endpoint; None = any).

    Matching faults apply before the key is checked. `times` limits a fault to its next N
    matching requests (None: every one), after which the emulator behaves normally again.
    """

    status: int | None = None        # answer with this HTTP error status (provider's error shape)
    retry_after: float | None = None  # `retry-after` header (seconds) on that error
    message: str | None = None       # the error message (default: the provider's usual wording)
    stall: float = 0.0               # sleep this long before answering
    stall_mid_stream: float = 0.0    # sleep this long after the first text delta of a stream
    malformed: bool = False          # 200 OK with a body that is not valid JSON
    reset_mid_stream: bool = False   # reset the connection after the first delta (non-streaming:
                                     # after half the body)
    end_mid_stream: bool = False     # end the stream cleanly right after the first delta
    provider: str | None = None
    key: str | None = None
    endpoint: str | None = None      # "models" or "completions"
    times: int | None = None

    def matches(self, provider: str, key: str | None, endpoint: str) -> bool:
        return ((self.provider is None or self.provider == provider)
                and (self.key is None or self.key == key)
                and (self.endpoint is None or self.endpoint == endpoint)
                and (self.times is None or self.times > 0))


@dataclass
class Config:
    port: int = 0
    valid_keys: dict[str, set[str]] = field(default_factory=lambda: {p: set() for p in PREFIXES})
    accept_any_key: bool = False     # any non-empty key succeeds (no 401s unless injected)
    faults: list[Fault] = field(default_factory=list)


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it; bodies are never kept, and of the key only its end."""

    provider: str
    method: str
    path: str
    endpoint: str
    auth: str | None       # "x-api-key", "bearer" or None
    key_hint: str | None   # last 4 characters of the presented key
    stream: bool
    status: int
    fault: bool            # a Fault decided (part of) the answer
    header_names: tuple[str, ...] = ()  # lower-cased names of the request headers (no values)


def count_tokens(text: str) -> int:
    """The emulator's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def reply_for(provider: str, model: str, prompt: str) -> str:
    """The deterministic answer to `prompt`."""
    name = "Anthropic" if provider == "anthropic" else "OpenAI"
    return f"Emulated {name} reply from {model}: {prompt}".strip()


class Emulator:
    """The server, running in a daemon thread after `start()`; safe to reconfigure while running."""

    def __init__(self, config: Config | None = None,
                 on_request: Callable[[LoggedRequest], None] | None = None) -> None:
        self.config = config or Config()
        self.on_request = on_request
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def bind(self) -> Emulator:
        """Open the listening socket (raises OSError if the port is taken)."""
        if self._server is None:
            self._server = _Server((HOST, self.config.port), _Handler)
            self._server.emulator = self
        return self

    def start(self) -> Emulator:
        self.bind()
        assert self._server is not None
        self._thread = threading.Thread(target=self._server.serve_forever, name="byokctl-emulator",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None and self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._close()

    def _close(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.server_close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None, "call start() first"
        return self._server.server_address[1]

    @property
    def anthropic_base_url(self) -> str:
        return f"http://{HOST}:{self.port}{PREFIXES['anthropic']}"

    @property
    def openai_base_url(self) -> str:
        return f"http://{HOST}:{self.port}{PREFIXES['openai']}/v1"

    def base_url(self, provider: str) -> str:
        return {"anthropic": self.anthropic_base_url, "openai": self.openai_base_url}[provider]

    # -- runtime control ---------------------------------------------------------------------
    def allow_key(self, key: str, provider: str | None = None) -> None:
        with self._lock:
            for p in [provider] if provider else list(PREFIXES):
                self.config.valid_keys.setdefault(p, set()).add(key)

    def revoke_key(self, key: str, provider: str | None = None) -> None:
        with self._lock:
            for p in [provider] if provider else list(PREFIXES):
                self.config.valid_keys.get(p, set()).discard(key)

    def inject(self, fault: Fault | None = None, **kwargs: Any) -> Fault:
        """Add a fault (or build one from keyword arguments); the first matching fault wins."""
        fault = replace(fault, **kwargs) if fault else Fault(**kwargs)
        with self._lock:
            self.config.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self.config.faults.clear()

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- used by the handler -----------------------------------------------------------------
    def _take_fault(self, provider: str, key: str | None, endpoint: str) -> Fault | None:
        with self._lock:
            for fault in self.config.faults:
                if fault.matches(provider, key, endpoint):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def _key_ok(self, provider: str, key: str | None) -> bool:
        if not key:
            return False
        with self._lock:
            return self.config.accept_any_key or key in self.config.valid_keys.get(provider, set())

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)
        if self.on_request is not None:
            self.on_request(entry)

    def _sleep(self, seconds: float) -> None:
        """A stall that ends early when the emulator stops."""
        if seconds > 0:
            self._stopping.wait(seconds)

    def _next_id(self) -> int:
        return next(self._ids)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    emulator: Emulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer is business as usual here


class _Aborted(Exception):
    """The connection was reset on purpose (a fault)."""


@dataclass
class _Call:
    provider: str
    endpoint: str
    key: str | None
    auth: str | None
    body: dict
    stream: bool
    fault: Fault | None
    status: int = 200
    logged: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "byokctl-emulator"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are reported through Emulator.on_request instead

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # -- routing -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        emu = self.server.emulator
        url = urlsplit(self.path)
        provider, rest = self._route(url.path)
        raw = self._read_body()
        key, auth = self._credentials()
        call = _Call(provider or "unknown", self._endpoint(provider, rest), key, auth, {}, False, None)
        try:
            if provider is None:
                message = f"No emulated API at {url.path}; use /anthropic or /openai/v1"
                self._send_json(404, {"error": {"type": "not_found_error", "message": message}}, call)
                return
            if self.command == "POST":
                try:
                    parsed = json.loads(raw or b"{}")
                except ValueError:
                    self._error(call, 400, "The request body is not valid JSON.")
                    return
                call.body = parsed if isinstance(parsed, dict) else {}
                call.stream = call.body.get("stream") is True
            call.fault = emu._take_fault(provider, key, call.endpoint)
            if call.fault is not None:
                emu._sleep(call.fault.stall)
                if call.fault.status == 401 and not call.fault.message:
                    self._reject_key(call)
                    return
                if call.fault.status:
                    self._error(call, call.fault.status, call.fault.message, call.fault.retry_after)
                    return
            if not emu._key_ok(provider, key):
                self._reject_key(call)
                return
            getattr(self, f"_{provider}")(call, rest, parse_qs(url.query))
        except _Aborted:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self._log(call)

    def _log(self, call: _Call) -> None:
        """Record the request once, as soon as its status is known: before the answer goes out,
        so a client that has its answer can rely on the log."""
        if call.logged:
            return
        call.logged = True
        key = call.key
        self.server.emulator._record(LoggedRequest(
            call.provider, self.command, urlsplit(self.path).path, call.endpoint, call.auth,
            key[-4:] if key else None, call.stream, call.status, call.fault is not None,
            tuple(sorted({k.lower() for k in self.headers}))))

    def _route(self, path: str) -> tuple[str | None, str]:
        for provider, prefix in PREFIXES.items():
            if path == prefix or path.startswith(prefix + "/"):
                return provider, path[len(prefix):]
        return None, path

    def _endpoint(self, provider: str | None, rest: str) -> str:
        if rest.startswith("/v1/models"):
            return "models"
        if rest in ("/v1/messages", "/v1/chat/completions"):
            return "completions"
        return "other"

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _credentials(self) -> tuple[str | None, str | None]:
        api_key = self.headers.get("x-api-key")
        if api_key:
            return api_key.strip(), "x-api-key"
        authorization = self.headers.get("Authorization") or ""
        if authorization[:7].lower() == "bearer ":
            return authorization[7:].strip(), "bearer"
        return None, None

    # -- Anthropic ---------------------------------------------------------------------------
    def _anthropic(self, call: _Call, rest: str, query: dict[str, list[str]]) -> None:
        models = [m.id for m in catalog.load().for_provider("anthropic")]
        if self.command == "GET" and rest == "/v1/models":
            after = (query.get("after_id") or [None])[0]
            limit = int((query.get("limit") or ["20"])[0])
            start = models.index(after) + 1 if after in models else 0
            page = models[start:start + limit]
            self._send_json(200, {
                "data": [_anthropic_model(m) for m in page],
                "has_more": start + limit < len(models),
                "first_id": page[0] if page else None, "last_id": page[-1] if page else None,
            }, call)
        elif self.command == "GET" and rest.startswith("/v1/models/"):
            model = rest.removeprefix("/v1/models/")
            if model not in models:
                self._error(call, 404, f"model: {model}")
            else:
                self._send_json(200, _anthropic_model(model), call)
        elif self.command == "POST" and rest == "/v1/messages":
            self._anthropic_messages(call, models)
        else:
            self._error(call, 404, f"Not found: {self.command} {rest}")

    def _anthropic_messages(self, call: _Call, models: list[str]) -> None:
        body = call.body
        model, max_tokens, messages = body.get("model"), body.get("max_tokens"), body.get("messages")
        if not isinstance(model, str) or not model:
            return self._error(call, 400, "model: Field required")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self._error(call, 400, "max_tokens: Field required (a positive integer)")
        if not isinstance(messages, list) or not messages:
            return self._error(call, 400, "messages: at least one message is required")
        if model not in models:
            return self._error(call, 404, f"model: {model}")
        prompt = _text_of(messages[-1].get("content") if isinstance(messages[-1], dict) else "")
        input_tokens = max(1, count_tokens(_text_of(body.get("system")))
                           + sum(count_tokens(_text_of(m.get("content"))) for m in messages
                                 if isinstance(m, dict)))
        words, stop = _truncate(reply_for("anthropic", model, prompt), max_tokens)
        stop_reason = "max_tokens" if stop else "end_turn"
        msg_id = f"msg_emu_{self.server.emulator._next_id():06d}"
        if not call.stream:
            text = " ".join(words)
            return self._send_json(200, {
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": len(words)},
            }, call)

        def events() -> Iterator[tuple[bytes, bool]]:
            yield _sse("message_start", {"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}), False
            yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}), False
            yield _sse("ping", {"type": "ping"}), False
            for i, word in enumerate(words):
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                    "type": "text_delta", "text": word if i == 0 else " " + word}}), True
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0}), False
            yield _sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                         "usage": {"output_tokens": len(words)}}), False
            yield _sse("message_stop", {"type": "message_stop"}), False

        self._stream(call, events(), malformed=b"event: content_block_delta\ndata: {\"type\": \"content_")

    # -- OpenAI ------------------------------------------------------------------------------
    def _openai(self, call: _Call, rest: str, query: dict[str, list[str]]) -> None:
        models = [m.id for m in catalog.load().for_provider("openai")]
        if self.command == "GET" and rest == "/v1/models":
            self._send_json(200, {"object": "list", "data": [_openai_model(m) for m in models]}, call)
        elif self.command == "GET" and rest.startswith("/v1/models/"):
            model = rest.removeprefix("/v1/models/")
            if model not in models:
                self._error(call, 404, f"The model `{model}` does not exist or you do not have access to it.")
            else:
                self._send_json(200, _openai_model(model), call)
        elif self.command == "POST" and rest == "/v1/chat/completions":
            self._openai_chat(call, models)
        else:
            self._error(call, 404, f"Invalid URL ({self.command} {rest})")

    def _openai_chat(self, call: _Call, models: list[str]) -> None:
        body = call.body
        model, messages = body.get("model"), body.get("messages")
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if not isinstance(model, str) or not model:
            return self._error(call, 400, "you must provide a model parameter")
        if not isinstance(messages, list) or not messages:
            return self._error(call, 400, "'messages' must contain at least one message")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return self._error(call, 400, "max_completion_tokens must be a positive integer")
        if model not in models:
            return self._error(call, 404, f"The model `{model}` does not exist or you do not have access "
                                          "to it.")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        prompt = _text_of(users[-1].get("content")) if users else ""
        prompt_tokens = max(1, sum(count_tokens(_text_of(m.get("content"))) for m in messages
                                   if isinstance(m, dict)))
        words, cut = _truncate(reply_for("openai", model, prompt), limit or 1_000_000)
        finish = "length" if cut else "stop"
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": prompt_tokens + len(words)}
        cid, created = f"chatcmpl-emu{self.server.emulator._next_id():06d}", int(time.time())
        if not call.stream:
            return self._send_json(200, {
                "id": cid, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words),
                                                     "refusal": None, "annotations": []},
                             "logprobs": None, "finish_reason": finish}],
                "usage": usage, "service_tier": "default", "system_fingerprint": None,
            }, call)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(choices: list[dict], **extra: Any) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "service_tier": "default", "system_fingerprint": None, "choices": choices, **extra}
            if include_usage and "usage" not in extra:
                data["usage"] = None
            return b"data: " + json.dumps(data).encode() + b"\n\n"

        def events() -> Iterator[tuple[bytes, bool]]:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                          "logprobs": None, "finish_reason": None}]), False
            for i, word in enumerate(words):
                yield chunk([{"index": 0, "delta": {"content": word if i == 0 else " " + word},
                              "logprobs": None, "finish_reason": None}]), True
            yield chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]), False
            if include_usage:
                yield chunk([], usage=usage), False
            yield b"data: [DONE]\n\n", False

        self._stream(call, events(), malformed=b'data: {"id": "' + cid.encode() + b'", "choices": [{')

    # -- answers -----------------------------------------------------------------------------
    def _reject_key(self, call: _Call) -> None:
        if not call.key:
            message = ("x-api-key header is required" if call.provider == "anthropic" else
                       "You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        elif call.provider == "anthropic":
            # The real API is vaguer; echoing the key lets tests prove the client redacts it.
            message = f"invalid x-api-key: {call.key}"
        else:
            message = (f"Incorrect API key provided: {call.key}. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.")
        self._error(call, 401, message)

    def _error(self, call: _Call, status: int, message: str | None = None,
               retry_after: float | None = None) -> None:
        message = message or _MESSAGES.get(status) or f"HTTP {status}"
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = f"{retry_after:g}"
        if call.provider == "openai":
            etype, code = _OPENAI_ERRORS.get(status, ("server_error" if status >= 500 else
                                                      "invalid_request_error", None))
            body: dict = {"error": {"message": message, "type": etype, "param": None, "code": code}}
        else:
            etype = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500
                                               else "invalid_request_error")
            body = {"type": "error", "error": {"type": etype, "message": message},
                    "request_id": f"req_emu_{self.server.emulator._next_id():06d}"}
        self._send_json(status, body, call, headers)

    def _send_json(self, status: int, data: Any, call: _Call, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        if call.fault and call.fault.malformed and status == 200:
            payload = payload[: len(payload) // 2]  # cut mid-value: no parser accepts it
        self._send_raw(status, payload, "application/json", call, headers)

    def _send_raw(self, status: int, payload: bytes, content_type: str, call: _Call,
                  headers: dict[str, str] | None = None) -> None:
        call.status = status
        self._log(call)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("request-id", f"req_emu_{self.server.emulator._next_id():06d}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if call.fault and call.fault.reset_mid_stream and status == 200:
            self.wfile.write(payload[: len(payload) // 2])
            self._abort()
        self.wfile.write(payload)

    def _stream(self, call: _Call, events: Iterator[tuple[bytes, bool]], malformed: bytes) -> None:
        """Server-sent events in chunked encoding, so a dropped connection is visibly incomplete."""
        emu, fault = self.server.emulator, call.fault
        call.status = 200
        self._log(call)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deltas = 0
        for event, is_delta in events:
            self._chunk(event)
            if is_delta:
                deltas += 1
                if deltas == 1 and fault is not None:
                    if fault.malformed:
                        self._chunk(malformed + b"\n\n")
                        break
                    if fault.reset_mid_stream:
                        self._abort()
                    if fault.end_mid_stream:
                        break
                    emu._sleep(fault.stall_mid_stream)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _abort(self) -> None:
        """Reset the TCP connection (RST, not a clean close) and end this request."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.wfile.close()
            self.rfile.close()
            sock.close()
        except OSError:
            pass
        raise _Aborted


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def _text_of(content: Any) -> str:
    """The text of a message's content: a string or a list of text blocks/parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _truncate(text: str, limit: int) -> tuple[list[str], bool]:
    words = text.split()
    return words[:limit], len(words) > limit


def _anthropic_model(model_id: str) -> dict:
    models = catalog.load().for_provider("anthropic")
    alias = next((m.aliases[0] for m in models if m.id == model_id), model_id)
    return {"type": "model", "id": model_id, "display_name": f"Claude {alias.title()}",
            "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"}


def _openai_model(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 1735689600, "owned_by": "openai"}
