"""SDK clients kept for reuse by a long-lived process (`byokctl.Vault`): a platform's server
builds a client, and opens a TLS connection to the provider, once per key and endpoint rather
than on every request (building one costs about half a millisecond, a TLS handshake with a
distant provider tens of milliseconds).

A pooled client is lent to one call at a time (`lease`): its transport keeps the call's own
`Bounds` (its deadline and caps) for as long as the lease lasts, and refuses any request once
the lease is over, so a client kept past its `with vault.client()` block cannot make calls that
nobody records. Each thread has its own clients (an SDK client serves one call at a time here);
each holds its key's secret, as any SDK client does, and only while the key's secret is the
same: a rotated key gets a new client. At most POOL_SIZE clients a thread; `close()` (the
Vault's) closes them all.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from byokctl.providers.bounds import Bounds

if TYPE_CHECKING:
    from byokctl.providers.base import Adapter

POOL_SIZE = 16  # clients kept per thread (least recently used closed first)


class LeaseEnded(RuntimeError):
    """A pooled SDK client was used after its call's block ended."""


class _Pooled:
    def __init__(self, sdk: Any, transport: Any) -> None:
        self.sdk, self.transport, self.leased = sdk, transport, False

    def close(self) -> None:
        self.transport.bounds = None
        self.sdk.close()


class Pool:
    """SDK clients for reuse, per thread, by provider, secret, base URL, timeout and retries."""

    def __init__(self, size: int = POOL_SIZE) -> None:
        self._size = size
        self._local = threading.local()
        self._lock = threading.Lock()
        self._every: list[tuple[int, OrderedDict[tuple, _Pooled]]] = []  # (pid, a thread's)
        self._closed = False

    def _mine(self) -> OrderedDict[tuple, _Pooled]:
        mine = getattr(self._local, "clients", None)
        if mine is None or self._local.pid != os.getpid():
            # New, or inherited by a forked child (a pre-fork server): the parent's connections
            # are not this process's to use, nor to close (its TLS sessions would end). Left.
            mine = self._local.clients = OrderedDict()
            self._local.pid = os.getpid()
            with self._lock:
                self._every.append((os.getpid(), mine))
        return mine

    @contextmanager
    def lease(self, adapter: Adapter, secret: str, *, base_url: str, timeout: float,
              retries: int, bounds: Bounds | None = None) -> Iterator[tuple[Any, Bounds]]:
        """An SDK client for one call and the `Bounds` its requests keep to (`bounds`, else
        the deadline `timeout` from now): this thread's pooled one for the same key and
        settings, else a new one, kept for the next call. A client already lent (a call inside
        another's block) is not shared: that call gets its own, closed at its end."""
        bounds = bounds or Bounds(timeout)
        key = (adapter.name, secret, base_url, timeout, retries)
        mine = self._mine()
        with self._lock:
            entry = mine.get(key)
            if entry is not None and not entry.leased and entry.sdk.is_closed():
                del mine[key]  # closed by its user: replaced
                entry = None
            spare = entry is not None and entry.leased
        if entry is None or spare:
            entry = _Pooled(*adapter.pooled_client(secret, base_url=base_url, timeout=timeout,
                                                   retries=retries))
            with self._lock:
                spare = spare or self._closed
                if not spare:
                    mine[key] = entry
                    self._trim(mine)
        entry.transport.bounds, entry.leased = bounds, True
        try:
            yield entry.sdk, bounds
        finally:
            entry.transport.bounds, entry.leased = None, False
            with self._lock:
                if not spare:
                    if self._closed:
                        mine.pop(key, None)
                        spare = True
                    else:
                        mine.move_to_end(key)
            if spare:
                entry.close()

    def _trim(self, mine: OrderedDict[tuple, _Pooled]) -> None:
        """Close this thread's least recently used clients past the pool's size (under the lock)."""
        idle = [k for k, e in mine.items() if not e.leased]
        for key in idle[:max(0, len(mine) - self._size)]:
            mine.pop(key).close()

    def close(self) -> None:
        """Close every thread's pooled clients; one lent out closes when its call ends."""
        with self._lock:
            self._closed = True
            every, self._every = self._every, []
            idle = [mine.pop(k) for pid, mine in every if pid == os.getpid()
                    for k, e in list(mine.items()) if not e.leased]
        for entry in idle:
            entry.close()
