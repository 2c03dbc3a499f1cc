"""A loopback emulator of the Anthropic Messages and OpenAI Chat Completions APIs.

One HTTP server on 127.0.0.1 serves both providers under a path prefix each, in their real wire
formats, so the official SDKs talk to it through `base_url`:

    Anthropic  base_url http://127.0.0.1:PORT/anthropic     GET /v1/models, POST /v1/messages
    OpenAI     base_url http://127.0.0.1:PORT/openai/v1     GET /models,    POST /chat/completions

Replies and token counts are deterministic (a token is a whitespace-separated word), keys are
checked against a configured list (`Authorization: Bearer` or `x-api-key`), and `Fault`s make it
answer errors, stall, send malformed JSON, drop the connection mid-stream, or send more than a
client should read (an oversized body, bytes that trickle without end). Stdlib only.
"""

from __future__ import annotations

import itertools
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from byokctl.providers import emulator_wire as wire
from byokctl.providers.emulator_wire import count_tokens, reply_for

__all__ = ["KEY_BEHAVIOURS", "Config", "Emulator", "Fault", "LoggedRequest", "count_tokens",
           "reply_for"]

HOST = "127.0.0.1"
PREFIXES = {"anthropic": "/anthropic", "openai": "/openai"}


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
    oversized: int = 0               # pad a 200 answer with this many bytes the API ignores:
                                     # whitespace before a JSON body, SSE comments in a stream
    trickle: float = 0.0             # a 200 answer that never ends: one ignorable byte every
                                     # this many seconds (a stream: after its first delta)
    provider: str | None = None
    key: str | None = None
    endpoint: str | None = None      # "models" or "completions"
    times: int | None = None

    def matches(self, provider: str, key: str | None, endpoint: str) -> bool:
        return ((self.provider is None or self.provider == provider)
                and (self.key is None or self.key == key)
                and (self.endpoint is None or self.endpoint == endpoint)
                and (self.times is None or self.times > 0))


# What `serve --key KEY=BEHAVIOUR` makes of a key: it succeeds, stalls, or answers that status.
KEY_BEHAVIOURS = ("ok", "401", "403", "429", "500", "529", "stall")
STALL_SECONDS = 3600.0  # a stalled key's requests wait this long (or until the emulator stops)


@dataclass
class Config:
    port: int = 0
    valid_keys: dict[str, set[str]] = field(default_factory=lambda: {p: set() for p in PREFIXES})
    accept_any_key: bool = False     # any non-empty key succeeds (no 401s unless injected)
    faults: list[Fault] = field(default_factory=list)

    def serve_key(self, key: str, behaviour: str, provider: str | None = None,
                  retry_after: float | None = None) -> None:
        """Answer `key` (for `provider`, or both) as `behaviour` says: `ok` succeeds, `stall`
        waits STALL_SECONDS before it succeeds, and an HTTP status (401, 429, 529...: any of
        400-599) is that error, in the provider's shape, on every request (`retry_after` on a
        429). A status is answered whatever the other keys do: its fault comes first."""
        if behaviour in ("ok", "stall"):
            for p in [provider] if provider else list(PREFIXES):
                self.valid_keys.setdefault(p, set()).add(key)
            if behaviour == "stall":
                self.faults.insert(0, Fault(stall=STALL_SECONDS, provider=provider, key=key))
            return
        status = int(behaviour)
        if not 400 <= status <= 599:
            raise ValueError(f"not an HTTP error status: {status}")
        self.faults.insert(0, Fault(status=status, provider=provider, key=key,
                                    retry_after=retry_after if status == 429 else None))


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
    client_port: int = 0  # the client's side of its TCP connection: one port per connection


class Emulator:
    """The server, running in a daemon thread after `start()`; safe to reconfigure while running."""

    def __init__(self, config: Config | None = None,
                 on_request: Callable[[LoggedRequest], None] | None = None,
                 on_arrival: Callable[[str, str], None] | None = None) -> None:
        self.config = config or Config()
        self.on_request = on_request  # each request once answered (LoggedRequest)
        self.on_arrival = on_arrival  # (provider, endpoint) of each request as it arrives, before any stall
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

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}"


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
    disable_nagle_algorithm = True  # headers, then body: no wait for a delayed ACK on a kept-alive connection
    server: _Server
    server_version = "byokctl-emulator"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are reported through Emulator.on_request instead

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        emu = self.server.emulator
        url = urlsplit(self.path)
        provider, rest = self._route(url.path)
        raw = self._read_body()
        key, auth = self._credentials()
        call = _Call(provider or "unknown", wire.endpoint_of(rest), key, auth, {}, False, None)
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
            if emu.on_arrival is not None:
                emu.on_arrival(provider, call.endpoint)
            call.fault = emu._take_fault(provider, key, call.endpoint)
            if call.fault is not None:
                emu._sleep(call.fault.stall)
                if call.fault.status:
                    message = call.fault.message
                    if call.fault.status == 401 and not message:
                        message = wire.rejected_key_message(provider, key)
                    self._error(call, call.fault.status, message, call.fault.retry_after)
                    return
            if not emu._key_ok(provider, key):
                self._error(call, 401, wire.rejected_key_message(provider, key))
                return
            serve = wire.anthropic if provider == "anthropic" else wire.openai
            answer = serve(self.command, rest, parse_qs(url.query), call.body, call.stream, emu._new_id)
            if answer.status >= 400:
                self._error(call, answer.status, answer.message)
            elif answer.events is not None:
                self._stream(call, answer)
            else:
                self._send_json(answer.status, answer.body, call)
        except _Aborted:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:  # noqa: BLE001 - an emulator bug still answers, as the API's 500
            if not call.logged:
                call.fault = None
                self._error(call, 500, "The emulator failed to answer this request.")
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
            tuple(sorted({k.lower() for k in self.headers})), self.client_address[1]))

    def _route(self, path: str) -> tuple[str | None, str]:
        for provider, prefix in PREFIXES.items():
            if path == prefix or path.startswith(prefix + "/"):
                return provider, path[len(prefix):]
        return None, path

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

    # -- answers -----------------------------------------------------------------------------
    def _error(self, call: _Call, status: int, message: str | None = None,
               retry_after: float | None = None) -> None:
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        body = wire.error_body(call.provider, status, message, self.server.emulator._new_id("req_emu_"))
        self._send_json(status, body, call, headers)

    def _send_json(self, status: int, data: Any, call: _Call, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        fault = call.fault if status == 200 else None
        if fault and fault.malformed:
            payload = payload[: len(payload) // 2]  # cut mid-value: no parser accepts it
        call.status = status
        self._log(call)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if fault and fault.trickle:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str((fault.oversized if fault else 0) + len(payload)))
        self.send_header("request-id", self.server.emulator._new_id("req_emu_"))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if fault and fault.trickle:
            self._trickle(b" ", fault.trickle)  # JSON allows whitespace before the value
            return
        if fault and fault.reset_mid_stream:
            self.wfile.write(payload[: len(payload) // 2])
            self._abort()
        if fault and fault.oversized:
            self._pad(fault.oversized, sse=False)
        self.wfile.write(payload)

    def _stream(self, call: _Call, answer: wire.Answer) -> None:
        """Server-sent events in chunked encoding, so a dropped connection is visibly incomplete."""
        assert answer.events is not None
        emu, fault = self.server.emulator, call.fault
        call.status = 200
        self._log(call)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        texts = 0
        for event, has_text in answer.events():
            self._chunk(event)
            texts += has_text
            if texts == 1 and has_text and fault is not None:
                if fault.malformed:
                    self._chunk(answer.broken_event)
                    break
                if fault.reset_mid_stream:
                    self._abort()
                if fault.end_mid_stream:
                    break
                if fault.oversized:
                    self._pad(fault.oversized, sse=True)
                if fault.trickle:
                    self._trickle(b":\n\n", fault.trickle)
                    break
                emu._sleep(fault.stall_mid_stream)
        self.wfile.write(b"0\r\n\r\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _pad(self, total: int, *, sse: bool) -> None:
        """`total` bytes the API ignores, 1 MiB at a time: spaces (before a JSON value), or
        SSE comment lines (as chunks of a stream)."""
        piece = 1 << 20
        for start in range(0, total, piece):
            size = min(piece, total - start)
            if sse:
                self._chunk(b":" + b" " * max(0, size - 3) + b"\n\n")
            else:
                self.wfile.write(b" " * size)

    def _trickle(self, piece: bytes, every: float) -> None:
        """One chunk of `piece` every `every` seconds, until the client hangs up (the write
        fails) or the emulator stops."""
        emu = self.server.emulator
        while not emu._stopping.is_set():
            self._chunk(piece)
            emu._sleep(every)

    def _abort(self) -> None:
        """Reset the TCP connection (RST, not a clean close) and end this request."""
        self.close_connection = True
        sock = self.connection
        try:
            # What was sent before the reset reaches the client first: an RST makes the peer's
            # kernel drop data it has not read yet, so on a loaded machine a stream's first text
            # could vanish and the "text already shown, no retry" case would not be exercised.
            self.wfile.flush()
            time.sleep(0.1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.wfile.close()
            self.rfile.close()
            sock.close()
        except OSError:
            pass
        raise _Aborted
