"""The bounds of one provider call: `--timeout` is the deadline of the whole call (every
attempt, every byte of a stream), and a response is capped in size.

The SDKs' own `timeout` bounds each network step, so a server that keeps sending (pings, an
endless answer) would hold a call and grow its memory forever. Both SDKs take an `http_client`;
byokctl gives them, sync and async alike, one whose transport (httpx's public extension point,
in transports.py) sets every step's timeout to what is left of the deadline, counts the bytes
of each response against the cap, and ends a read still in progress at the deadline. The rules
live here, once, for both transports: the deadline, the byte cap, the proxy rule, the TLS
context.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

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
            raise self.expire()
        return left

    def add_text(self, piece: str) -> None:
        self.text_chars += len(piece)
        if self.text_chars > MAX_TEXT_CHARS:
            raise ResponseTooLarge(f"more than {MAX_TEXT_CHARS // 1024 // 1024} MiB of text")

    def expire(self) -> DeadlinePassed:
        """The deadline cut the call (a connection, a read in progress): the error to raise."""
        self.expired = True
        return DeadlinePassed()

    def step_timeouts(self, steps: Mapping[str, float | None] | None) -> dict[str, float]:
        """A request's step timeouts (connect, read, write, pool), each capped at what is left
        of the deadline; raises DeadlinePassed once it has passed."""
        left = self.remaining()
        steps = steps or {}
        return {k: left if (step := steps.get(k)) is None else min(step, left)
                for k in ("connect", "read", "write", "pool")}

    def transport(self) -> Any:
        """An httpx transport that keeps every request of the call within these bounds (the
        sync SDK clients: `http_client=DefaultHttpxClient(transport=...)`)."""
        from byokctl.providers.transports import BoundedTransport

        return BoundedTransport(self)

    def async_transport(self) -> Any:
        """`transport()` for the async SDK clients (`DefaultAsyncHttpxClient(transport=...)`)."""
        from byokctl.providers.transports import AsyncBoundedTransport

        return AsyncBoundedTransport(self)


class ResponseMeter:
    """One response's wire bytes as they arrive, against MAX_RESPONSE_BYTES and the deadline."""

    def __init__(self, bounds: Bounds) -> None:
        self.bounds, self.received = bounds, 0

    def took(self, chunk: bytes) -> None:
        """Count `chunk`: ResponseTooLarge past the cap, DeadlinePassed past the deadline."""
        self.received += len(chunk)
        if self.received > MAX_RESPONSE_BYTES:
            raise ResponseTooLarge(f"a response of more than {MAX_RESPONSE_BYTES // 1024 // 1024} MiB")
        self.bounds.remaining()


def proxy_for(url: Any) -> str | None:
    """The environment's proxy (HTTP(S)_PROXY, ALL_PROXY, minus NO_PROXY) for `url`, an httpx
    URL, or None to go direct. A custom transport turns off httpx's own proxies from the
    environment, so byokctl keeps them itself, except for an endpoint on this machine (the
    emulator, a local gateway): a proxy would see the key sent there."""
    import urllib.request

    from byokctl.providers.endpoints import is_loopback

    if is_loopback(url.host) or urllib.request.proxy_bypass(url.host):
        return None
    found = urllib.request.getproxies()
    return found.get(url.scheme) or found.get("all")


_SSL: list[Any] = []  # the process's one TLS context, made on first use


def ssl_context() -> Any:
    """The TLS context every provider connection verifies with, made once per process: making
    one reads the whole CA bundle (about 80 ms), which a server calling a provider on every
    request must not pay each time. httpx's own default (its CA bundle, `SSL_CERT_FILE`...)."""
    if not _SSL:
        import httpx2

        _SSL.append(httpx2.create_ssl_context())
    return _SSL[0]
