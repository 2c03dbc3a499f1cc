"""The httpx transports that keep a call's requests within its `Bounds` (bounds.py holds the
rules): `BoundedTransport` for the sync SDK clients, `AsyncBoundedTransport` for the async
ones. They differ only in how a read in progress ends at the deadline: a watchdog thread
shuts the socket under a blocking read; an asyncio timeout cancels an awaited one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, TypeVar

import httpx2

from byokctl.providers.bounds import Bounds, DeadlinePassed, ResponseMeter, proxy_for, ssl_context

Inner = TypeVar("Inner", httpx2.HTTPTransport, httpx2.AsyncHTTPTransport)


class _Routes(Generic[Inner]):
    """What both transports share: each request's step timeouts capped at what is left of the
    deadline, sent through one inner transport per proxy (None: direct), each on the process's
    TLS context, and its response's body handed back through a bounded stream."""

    def __init__(self, bounds: Bounds, make: Callable[..., Inner]) -> None:
        self.bounds, self._make = bounds, make
        self.inner: dict[str | None, Inner] = {}

    def _route(self, request: httpx2.Request) -> Inner:
        request.extensions["timeout"] = self.bounds.step_timeouts(request.extensions.get("timeout"))
        proxy = proxy_for(request.url)
        if proxy not in self.inner:
            self.inner[proxy] = self._make(proxy=proxy, verify=ssl_context())
        return self.inner[proxy]

    @staticmethod
    def _bounded(request: httpx2.Request, response: httpx2.Response, stream: Any) -> httpx2.Response:
        return httpx2.Response(response.status_code, headers=response.headers, stream=stream,
                               extensions=response.extensions, request=request)


class BoundedTransport(_Routes[httpx2.HTTPTransport], httpx2.BaseTransport):
    """The sync transport: a watchdog, armed as each request starts, shuts the sockets of its
    connections down at the deadline, so whatever read or write is in progress then ends:
    the response's head (a server may send it a byte at a time, each within the step
    timeout), or its body. The sockets are learnt from httpcore's `trace` extension as each
    connection opens; a transport serves one call at a time (its own, or a pooled client's
    lease), so every one of them belongs to the call whose deadline passed."""

    def __init__(self, bounds: Bounds) -> None:
        super().__init__(bounds, httpx2.HTTPTransport)
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        inner = self._route(request)  # DeadlinePassed if it has passed already
        bounds = self.bounds
        request.extensions["trace"] = self._tracer(request.extensions.get("trace"))
        watchdog = threading.Timer(max(0.0, bounds.deadline - time.monotonic()), _cut,
                                   (bounds, self._sockets))
        watchdog.daemon = True
        watchdog.start()
        try:
            response = inner.handle_request(request)
        except httpx2.TransportError:
            watchdog.cancel()
            if bounds.expired:  # the watchdog cut the head (or the request) short
                raise DeadlinePassed from None
            raise
        except BaseException:
            watchdog.cancel()
            raise
        return self._bounded(request, response, _BoundedStream(bounds, response.stream, watchdog))

    def _tracer(self, outer: Callable[[str, dict], Any] | None) -> Callable[[str, dict], None]:
        """httpcore's `trace` callback: keeps the socket of each connection it opens (TCP,
        then TLS over it), then hands the event on to the caller's own callback, if any."""
        sockets = self._sockets

        def trace(name: str, info: dict) -> None:
            if name.endswith((".connect_tcp.complete", ".start_tls.complete")):
                stream = info.get("return_value")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if sock is not None:
                    sockets.add(sock)
            if outer is not None:
                outer(name, info)

        return trace

    def close(self) -> None:
        for inner in self.inner.values():
            inner.close()


class LeasedTransport(BoundedTransport):
    """The transport of a pooled SDK client (providers/pool.py): the bounds of the call it is
    lent to, set by the pool for that call; between calls none, and every request is refused,
    so a client kept past its call's block makes no call that nobody records. Its connections
    stay open from call to call."""

    def __init__(self) -> None:
        super().__init__(None)  # type: ignore[arg-type] - set for each call by the pool

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if self.bounds is None:
            from byokctl.providers.pool import LeaseEnded

            raise LeaseEnded("this SDK client belongs to a call whose `with vault.client()` block "
                             "has ended: make provider calls inside the block")
        return super().handle_request(request)


class AsyncBoundedTransport(_Routes[httpx2.AsyncHTTPTransport], httpx2.AsyncBaseTransport):
    """The async transport: the response's head, then each read of its body, awaited under an
    asyncio timeout that ends at the deadline."""

    def __init__(self, bounds: Bounds) -> None:
        super().__init__(bounds, httpx2.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        inner = self._route(request)
        async with _until_deadline(self.bounds):  # a head sent a byte at a time ends too
            response = await inner.handle_async_request(request)
        return self._bounded(request, response, _AsyncBoundedStream(self.bounds, response.stream))

    async def aclose(self) -> None:
        for inner in self.inner.values():
            await inner.aclose()


class _BoundedStream(httpx2.SyncByteStream):
    def __init__(self, bounds: Bounds, inner: Any, watchdog: threading.Timer) -> None:
        self.bounds, self.inner, self.watchdog = bounds, inner, watchdog
        self.meter = ResponseMeter(bounds)

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self.inner:
                self.meter.took(chunk)
                yield chunk
        except httpx2.TransportError:
            if self.bounds.expired:  # the watchdog cut the socket at the deadline
                raise DeadlinePassed from None
            raise

    def close(self) -> None:
        self.watchdog.cancel()
        self.inner.close()


class _AsyncBoundedStream(httpx2.AsyncByteStream):
    def __init__(self, bounds: Bounds, inner: Any) -> None:
        self.bounds, self.inner = bounds, inner
        self.meter = ResponseMeter(bounds)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = aiter(self.inner)
        while True:
            async with _until_deadline(self.bounds):
                chunk = await anext(chunks, None)
            if chunk is None:
                return
            self.meter.took(chunk)
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


@contextlib.asynccontextmanager
async def _until_deadline(bounds: Bounds) -> AsyncIterator[None]:
    """The awaited step, cancelled when the call's deadline passes (DeadlinePassed)."""
    timeout = asyncio.timeout(bounds.remaining())
    try:
        async with timeout:
            yield
    except TimeoutError:
        if timeout.expired():
            raise bounds.expire() from None
        raise


def _cut(bounds: Bounds, sockets: weakref.WeakSet[socket.socket]) -> None:
    """At the deadline: end the blocking read or write in progress by shutting the sockets of
    the call's connections down."""
    bounds.expired = True
    for sock in list(sockets):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
