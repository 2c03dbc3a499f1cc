"""The bounds of one provider call: `--timeout` is the deadline of the whole call (every
attempt, every byte of a stream), and a response is capped in size.

The SDKs' own `timeout` bounds each network step, so a server that keeps sending (pings, an
endless answer) would hold a call and grow its memory forever. Both SDKs take an `http_client`;
byokctl gives them one whose transport (httpx's public extension point) sets every step's
timeout to what is left of the deadline, counts the bytes of each response against the cap,
and shuts the connection's socket when the deadline passes, so even a read in progress ends.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

MAX_RESPONSE_BYTES = 32 * 1024 * 1024  # wire bytes of one HTTP response (a stream's included)
MAX_TEXT_CHARS = 1024 * 1024           # characters of answer text in one call


class DeadlinePassed(Exception):
    """The whole call's deadline (`--timeout`) passed."""


class ResponseTooLarge(Exception):
    """The response went past MAX_RESPONSE_BYTES or MAX_TEXT_CHARS."""


class Bounds:
    """The deadline and size cap of one call, shared by its attempts and their responses."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.expired = False  # set when the deadline cut a connection or a stream
        self.text_chars = 0

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            self.expired = True
            raise DeadlinePassed
        return left

    def add_text(self, piece: str) -> None:
        self.text_chars += len(piece)
        if self.text_chars > MAX_TEXT_CHARS:
            raise ResponseTooLarge(f"more than {MAX_TEXT_CHARS // 1024 // 1024} MiB of text")

    def transport(self) -> Any:
        """An httpx transport that keeps every request of the call within these bounds."""
        import threading
        import urllib.request

        import httpx2

        bounds = self

        class BoundedStream(httpx2.SyncByteStream):
            def __init__(self, inner: Any, watchdog: Any) -> None:
                self.inner, self.watchdog, self.received = inner, watchdog, 0

            def __iter__(self) -> Iterator[bytes]:
                try:
                    for chunk in self.inner:
                        self.received += len(chunk)
                        if self.received > MAX_RESPONSE_BYTES:
                            raise ResponseTooLarge(
                                f"a response of more than {MAX_RESPONSE_BYTES // 1024 // 1024} MiB")
                        bounds.remaining()
                        yield chunk
                except httpx2.TransportError:
                    if bounds.expired:  # the watchdog cut the socket at the deadline
                        raise DeadlinePassed from None
                    raise

            def close(self) -> None:
                self.watchdog.cancel()
                self.inner.close()

        class BoundedTransport(httpx2.BaseTransport):
            def __init__(self) -> None:
                self.inner: dict[str | None, Any] = {}

            def _for(self, url: Any) -> Any:
                # A custom transport turns off httpx's proxies from the environment: keep them,
                # except for an endpoint on this machine (the emulator, a local gateway): a
                # proxy would see the key sent there, so HTTP(S)_PROXY never gets that request.
                from byokctl.providers.endpoints import is_loopback

                proxy = None
                if not is_loopback(url.host) and not urllib.request.proxy_bypass(url.host):
                    found = urllib.request.getproxies()
                    proxy = found.get(url.scheme) or found.get("all")
                if proxy not in self.inner:
                    self.inner[proxy] = httpx2.HTTPTransport(proxy=proxy, verify=ssl_context())
                return self.inner[proxy]

            def handle_request(self, request: Any) -> Any:
                left = bounds.remaining()
                steps = request.extensions.get("timeout") or {}
                request.extensions["timeout"] = {
                    k: left if steps.get(k) is None else min(steps[k], left)
                    for k in ("connect", "read", "write", "pool")}
                response = self._for(request.url).handle_request(request)
                stream = response.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                watchdog = threading.Timer(max(0.0, bounds.deadline - time.monotonic()),
                                           _cut, (bounds, sock))
                watchdog.daemon = True
                watchdog.start()
                return httpx2.Response(response.status_code, headers=response.headers,
                                       stream=BoundedStream(response.stream, watchdog),
                                       extensions=response.extensions, request=request)

            def close(self) -> None:
                for t in self.inner.values():
                    t.close()

        return BoundedTransport()


_SSL: list[Any] = []  # the process's one TLS context, made on first use


def ssl_context() -> Any:
    """The TLS context every provider connection verifies with, made once per process: making
    one reads the whole CA bundle (about 80 ms), which a server calling a provider on every
    request must not pay each time. httpx's own default (its CA bundle, `SSL_CERT_FILE`...)."""
    if not _SSL:
        import httpx2

        _SSL.append(httpx2.create_ssl_context())
    return _SSL[0]


def _cut(bounds: Bounds, sock: socket.socket | None) -> None:
    """At the deadline: end the read in progress by shutting the socket down."""
    import socket

    bounds.expired = True
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
