"""`byokctl.AsyncVault`: the data plane for an event loop (ASGI servers).

The store's work (resolve, admit, record) runs on worker threads, so a busy vault never
blocks the loop; the provider call goes through the SDKs' async clients (`AsyncAnthropic`,
`AsyncOpenAI`), so a hundred calls in flight need no hundred threads. The rules are the
sync `Vault`'s own: the same services admit, settle and fail every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from os import PathLike
from typing import TYPE_CHECKING, Any, TypeVar

from byokctl.api.vault import Call, Messages, Vault, _log_warning, _request, store_errors
from byokctl.errors import ByokError
from byokctl.providers.registry import DEFAULT_RETRIES, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from byokctl.api.records import Recorded
    from byokctl.domain.resolution import Decision
    from byokctl.services.ask import Answer
    from byokctl.services.keytest import Tested

T = TypeVar("T")
STORE_THREADS = 8  # worker threads for the store's work: each holds its own connection


class AsyncVault:
    """`Vault` for asyncio: the same methods, awaited. Open it with `await AsyncVault.open(...)`
    (same arguments as `Vault.open`) and `await vault.aclose()` it, or `async with` it."""

    def __init__(self, vault: Vault, threads: int = STORE_THREADS) -> None:
        """Use `AsyncVault.open`."""
        self.sync = vault  # the thread-safe Vault the store's work runs on
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="byokctl-store")

    def __repr__(self) -> str:
        return repr(self.sync).replace("byokctl.Vault", "byokctl.AsyncVault")

    @classmethod
    async def open(cls, db: str | PathLike[str] | None = None, *, master_key: bytes | None = None,
                   actor: str | None = None, busy_timeout: float | None = None,
                   threads: int = STORE_THREADS) -> AsyncVault:
        """Open the vault as `Vault.open` does (off the loop); `threads`: how many worker
        threads (each with its own connection) do the store's work. Example::

            vault = await byokctl.AsyncVault.open(os.environ["VAULT_URL"], actor="api")
        """
        vault = cls.__new__(cls)
        vault._pool = ThreadPoolExecutor(threads, thread_name_prefix="byokctl-store")
        try:
            vault.sync = await vault._run(Vault.open, db, master_key=master_key, actor=actor,
                                          busy_timeout=busy_timeout)
        except BaseException:
            vault._pool.shutdown(wait=False)
            raise
        return vault

    async def _run(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _on_store(self, fn: Callable[..., T], member: str | None, /, *args: Any,
                        **kwargs: Any) -> T:
        """`fn(context, *args)` on a worker thread, with that thread's context for `member`."""
        def work() -> T:
            with store_errors(self.sync):
                return fn(self.sync._context(member), *args, **kwargs)

        return await self._run(work)

    async def aclose(self) -> None:
        """Close every connection and the worker threads."""
        await self._run(self.sync.close)
        self._pool.shutdown(wait=True)

    async def __aenter__(self) -> AsyncVault:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def resolve(self, org: str, member: str | None = None, *,
                      at: datetime | None = None) -> Decision:
        """`Vault.resolve`, off the loop."""
        return await self._run(self.sync.resolve, org, member, at=at)

    async def test_key(self, key_id: str, *, member: str | None = None,
                       timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                       base_url: str | None = None) -> Tested:
        """`Vault.test_key`, off the loop."""
        return await self._run(self.sync.test_key, key_id, member=member, timeout=timeout,
                               retries=retries, base_url=base_url)

    async def ask(self, org: str, prompt: str | Messages, *, member: str | None = None,
                  system: str | None = None, max_tokens: int = 1024,
                  timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                  stream: bool | None = None, on_text: Callable[[str], None] | None = None,
                  on_warning: Callable[[str], None] | None = None,
                  at: datetime | None = None) -> Answer:
        """`Vault.ask` for an event loop: the whole chain and its accounting, the provider
        called through the SDK's async client with `Vault.ask`'s retries and bounds (`timeout`
        the deadline of the whole call, a response capped in size). `on_text` runs on the
        loop. Example::

            answer = await vault.ask("acme", [{"role": "user", "content": "Hi"}])
        """
        from byokctl.services import ask as chain

        warn = on_warning or _log_warning
        req = _request(prompt, system, max_tokens, timeout, retries,
                       stream if stream is not None else on_text is not None)
        decision, f, sys_prompt, convo = await self._on_store(chain.prepare, member, org, req, at)
        for w in decision.warnings:
            warn(w)
        try:
            return await self._ask_on(decision, member, req, sys_prompt, convo, on_text, warn)
        except ByokError as exc:
            retry = chain.fallback(f, decision, exc)
            if retry is None:
                raise
            warn(retry.warnings[-1])
            return await self._ask_on(retry, member, req, sys_prompt, convo, on_text, warn)

    async def _ask_on(self, d: Decision, member: str | None, req: Any, system: str | None,
                      convo: list[dict[str, str]], on_text: Callable[[str], None] | None,
                      warn: Callable[[str], None]) -> Answer:
        from byokctl.providers import registry
        from byokctl.services import ask as chain
        from byokctl.services import calls

        call = await self._on_store(chain.admit_for, member, d, req, system, convo)
        assert d.key is not None and d.provider and d.model
        try:
            try:
                result = await registry.get(d.provider).acomplete(
                    call.secret, model=d.model, messages=convo, system=system,
                    max_tokens=req.max_tokens, base_url=d.base_url, timeout=req.timeout,
                    retries=req.retries, stream=req.stream, on_text=on_text, key_id=d.key.id)
            except ByokError as exc:
                await self._on_store(calls.fail, member, call, exc)
                raise
            done = await self._on_store(calls.settle, member, call, result.input_tokens,
                                        result.output_tokens, on_warning=warn)
        except BaseException:
            # A cancelled task or a bug: the reservation goes back now, not at its expiry.
            await asyncio.shield(self._on_store(calls.release, member, call.held))
            raise
        return chain.answer(call, result.text, done)

    @contextlib.asynccontextmanager
    async def client(self, org: str, member: str | None = None, *, max_tokens: int = 1024,
                     timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                     on_warning: Callable[[str], None] | None = None) -> AsyncIterator[AsyncCall]:
        """`Vault.client` for an event loop: `call.sdk` is an `anthropic.AsyncAnthropic` or
        `openai.AsyncOpenAI`, bounded as `Vault.client`'s SDK client is (`timeout` the deadline
        of everything it does, each response at most 32 MiB), and `await call.record(response)`
        accounts for the call. Example::

            async with vault.client("acme") as call:
                msg = await call.sdk.messages.create(model=call.model, max_tokens=256,
                                                     messages=[{"role": "user", "content": "Hi"}])
                await call.record(msg)
        """
        from byokctl.providers import registry

        warn = on_warning or _log_warning
        admitted = await self._run(self.sync._admit, org, member, max_tokens, timeout, retries,
                                   warn)
        d = admitted.decision
        assert d.provider is not None
        try:
            sdk = registry.get(d.provider).async_sdk_client(
                admitted.secret, base_url=d.base_url, timeout=timeout, retries=retries)
        except BaseException:
            await self._run(self.sync._fail, admitted, member, None, "internal")
            raise
        call = AsyncCall(self, Call(self.sync, admitted, member, sdk, timeout, warn))
        try:
            try:
                yield call
            finally:
                with contextlib.suppress(Exception):
                    await sdk.close()
        except BaseException as exc:
            error = await asyncio.shield(self._run(call._call._left, exc))
            if error is not None and error is not exc:
                raise error from None
            raise
        await self._run(call._call._left, None)


class AsyncCall:
    """One call admitted by `AsyncVault.client()`: `sdk` is the SDK's async client."""

    def __init__(self, vault: AsyncVault, call: Call) -> None:
        self._vault, self._call = vault, call
        self.sdk = call.sdk

    def __repr__(self) -> str:
        return repr(self._call).replace("byokctl.Call", "byokctl.AsyncCall")

    @property
    def decision(self) -> Decision:
        """The resolution this call runs on."""
        return self._call.decision

    @property
    def model(self) -> str:
        """The model id to ask for."""
        return self._call.model

    @property
    def provider(self) -> str:
        """`anthropic` or `openai`."""
        return self._call.provider

    @property
    def mode(self) -> str:
        """`byok` or `platform`."""
        return self._call.mode

    @property
    def key_id(self) -> str:
        """The id of the key the client holds."""
        return self._call.key_id

    @property
    def recorded(self) -> Recorded | None:
        """What `record` wrote, once it has."""
        return self._call.recorded

    async def record(self, response: object) -> Recorded:
        """`Call.record`, off the loop. A stream object is read through its final message,
        which for an async stream must be awaited first: pass
        `await stream.get_final_message()`."""
        return await self._vault._run(self._call.record, response)
