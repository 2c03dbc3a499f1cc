"""`byokctl.Vault`: the data plane a platform's servers call at request time (SPEC §8).

A thin face over the services, the same ones the CLI runs: one `Vault` per process, shared by
its threads. Each thread gets its own store connection and unlocked context on first use
(SQLite connections belong to the thread that opened them), kept until the thread ends or
the vault is closed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from os import PathLike
from typing import TYPE_CHECKING, Any

from byokctl.errors import ByokError, UsageError
from byokctl.providers.registry import DEFAULT_RETRIES, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from byokctl.api.records import Recorded
    from byokctl.domain.resolution import Decision
    from byokctl.services.ask import Answer
    from byokctl.services.calls import Admitted
    from byokctl.services.context import Context
    from byokctl.services.keytest import Tested

Messages = Sequence[Mapping[str, str]]


def _log_warning(message: str) -> None:
    """Where a warning goes when the caller gives no `on_warning`: the `byokctl` logger."""
    import logging  # here: the CLI, which prints its warnings itself, never loads it

    logging.getLogger("byokctl").warning("%s", message)


class Vault:
    """An open byokctl vault (a SQLite file or a PostgreSQL database) for a platform's code.

    Open it once with `Vault.open(...)` and share it between threads; `close()` it (or use it
    as a context manager) at shutdown. Every method raises the typed errors of
    `byokctl.errors` (`NoKey`, `PlanGate`, `Insufficient`, ..., all `ByokError`)."""

    def __init__(self, db: str | PathLike[str] | None, *, master_key: bytes | None,
                 actor: str | None, busy_timeout: float | None) -> None:
        """Use `Vault.open`, which checks its arguments and the vault first."""
        self._db = db
        self._master_key = master_key
        self._actor = actor
        self._busy_ms = None if busy_timeout is None else int(busy_timeout * 1000)
        self._local = threading.local()
        # every thread's context, by number; a thread's goes when the thread does
        self._contexts: weakref.WeakValueDictionary[tuple[int, int], Context] = \
            weakref.WeakValueDictionary()  # by (process id, number)
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        self._closed = False
        from byokctl.providers.pool import Pool

        self._clients = Pool()  # SDK clients kept for the next call with the same key

    def __repr__(self) -> str:  # the location only: never the master key or a password
        from byokctl.store import describe, target

        state = "closed" if self._closed else "open"
        return f"<byokctl.Vault {describe(target(self._db))} ({state})>"

    @classmethod
    def open(cls, db: str | PathLike[str] | None = None, *, master_key: bytes | None = None,
             actor: str | None = None, busy_timeout: float | None = None) -> Vault:
        """Open the vault `db`: a file path or a `postgresql://` URL (None: `$BYOKCTL_DB`, else
        the default file, as the CLI does).

        `master_key`: the vault's raw 32-byte master key, or None to find it where the CLI
        does (`$BYOKCTL_MASTER_KEY`, the OS keyring, the vault's key file). It is needed only
        when a call decrypts a key or writes the audit log. `actor`: the name the audit log
        records for the operator (default `$BYOKCTL_ACTOR`, else the OS user); a `member=`
        argument acts as that member instead. `busy_timeout`: seconds a statement waits for
        another writer's lock (default 30). Example::

            vault = byokctl.Vault.open("postgresql://byok@db/vault", actor="api-server")
        """
        if master_key is not None and (not isinstance(master_key, bytes) or len(master_key) != 32):
            raise UsageError("master_key must be the 32 raw bytes of the vault's master key",
                             "base64-decode the form $BYOKCTL_MASTER_KEY holds, or pass None")
        if busy_timeout is not None and not 0 <= busy_timeout <= 3600:
            raise UsageError(f"busy_timeout must be from 0 to 3600 seconds, not {busy_timeout!r}")
        if actor is not None and (not isinstance(actor, str) or not actor.strip()):
            raise UsageError("actor must be a non-empty name", "pass the name the audit log shows")
        vault = cls(db, master_key=master_key, actor=actor.strip() if actor else None,
                    busy_timeout=busy_timeout)
        with store_errors(vault):
            vault._context(None)  # the vault opens here (NotFound, Integrity...), not at first use
        return vault

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every thread's connection; the vault cannot be used afterwards."""
        with self._lock:
            self._closed = True
            pid = os.getpid()  # a forked child closes its own connections, not its parent's
            contexts = [c for (p, _), c in self._contexts.items() if p == pid]
            self._contexts.clear()
        for ctx in contexts:
            # Another thread's SQLite connection refuses to be closed here; it closes when
            # that thread's reference goes (the thread ends, or its next call finds it closed).
            with contextlib.suppress(Exception):
                ctx.close()
        self._clients.close()
        self._local = threading.local()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _context(self, member: str | None) -> Context:
        """This thread's context, acting for `member` (None: the operator), fresh per call."""
        if self._closed:
            raise UsageError("This byokctl.Vault is closed", "open it again with byokctl.Vault.open")
        ctx: Context | None = getattr(self._local, "ctx", None)
        if ctx is not None and self._local.pid != os.getpid():
            # A process forked from the one that opened it (a pre-fork server): the parent's
            # connection is not this process's to use, nor to close (that would end the
            # parent's session). Left alone; this process opens its own.
            ctx = None
        if ctx is None:
            from byokctl.services.context import Context
            from byokctl.store import open_any

            store = open_any(self._db)
            if self._busy_ms is not None:
                store.set_busy_timeout(self._busy_ms)
            ctx = Context(store, operator=self._actor, master_key=self._master_key,
                          clients=self._clients)
            self._local.ctx, self._local.pid = ctx, os.getpid()
            with self._lock:
                self._contexts[(os.getpid(), next(self._numbers))] = ctx
        if member is not None and not isinstance(member, str):
            raise UsageError(f"member must be an email address, not {type(member).__name__}")
        # "" stays "" (refused as an email), never None: an empty `--as` is not the operator.
        ctx.as_email = member.strip().lower() if member is not None else None
        ctx.acting_members = set()
        ctx.audit_appended = False
        ctx.seen = {}
        return ctx

    # -- the data plane -------------------------------------------------------------------------
    def resolve(self, org: str, member: str | None = None, *, at: datetime | None = None) -> Decision:
        """Which provider, model and key a request by `member` (None: the operator) on `org`
        would use, and why, as `byokctl resolve --json` prints it (`.to_dict()`); no call is
        made and no secret is read. A request that would be refused comes back with `.error`
        set (the exception `ask` would raise); an unknown org or member raises. `at`: judge the
        plan gate and grace as of this time (default now)."""
        from byokctl.services.resolution import resolve_for

        with store_errors(self):
            decision, _ = resolve_for(self._context(member), org, at=at)
        return decision

    def ask(self, org: str, prompt: str | Messages, *, member: str | None = None,
            system: str | None = None, max_tokens: int = 1024, timeout: float = DEFAULT_TIMEOUT,
            retries: int = DEFAULT_RETRIES, stream: bool | None = None,
            on_text: Callable[[str], None] | None = None,
            on_warning: Callable[[str], None] | None = None, at: datetime | None = None) -> Answer:
        """Send one prompt (or a conversation: a list of `{"role": "user"|"assistant"|"system",
        "content": text}`) for `org` through the provider and key the rules resolve, and
        account for it exactly as `byokctl ask` does: the gate, grace and soft fallback, the
        fallback policies, the budget, a reservation while it runs, the usage record, credits.

        `timeout` is the deadline of the whole call (retries and stream included); `retries`
        how often a 429/5xx/network failure is retried. `on_text` gets each piece of the
        answer as it streams (streaming is on when it is given, unless `stream=False`).
        `on_warning` gets the warnings the CLI prints on stderr (soft fallback, 80% of the
        budget...); default: the `byokctl` logger. Example::

            answer = vault.ask("acme", "Summarise this ticket", member="ivan@acme.com")
            print(answer.text, answer.credits_charged)
        """
        from byokctl.services.ask import ask

        req = _request(prompt, system, max_tokens, timeout, retries,
                       stream if stream is not None else on_text is not None)
        with store_errors(self):
            return ask(self._context(member), org, req, on_text=on_text,
                       on_warning=on_warning or _log_warning, at=at)

    @contextlib.contextmanager
    def client(self, org: str, member: str | None = None, *, max_tokens: int = 1024,
               timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
               on_warning: Callable[[str], None] | None = None) -> Iterator[Call]:
        """An admitted call for `org`: `call.sdk` is the official SDK client (`anthropic.Anthropic`
        or `openai.OpenAI`) built from the resolved key, base_url and `timeout` (the deadline of
        the whole block) with `retries` SDK retries; `call.model` the model to ask for.

        Make any call with it and hand the response (or a stream's final message) to
        `call.record(...)`: the usage record and credits are written exactly as `ask` writes
        them. The call reserves the most `max_tokens` of output can cost, like `ask`, until it
        is recorded. An SDK error raised in the block is recorded (401/403 marks the key
        invalid, 429 rate-limited) and comes out as byokctl's own error (`KeyRejected`,
        `RateLimited`, `ProviderDown`...); leaving the block without a record records a failed
        call. The provider-error fallback policy is `ask`'s alone. Example::

            with vault.client("acme") as call:
                msg = call.sdk.messages.create(model=call.model, max_tokens=256,
                                               messages=[{"role": "user", "content": "Hi"}])
                call.record(msg)
        """
        from byokctl.providers import registry

        warn = on_warning or _log_warning
        admitted = self._admit(org, member, max_tokens, timeout, retries, warn)
        d = admitted.decision
        assert d.provider is not None
        adapter = registry.get(d.provider)
        lease = contextlib.ExitStack()
        try:
            sdk, _ = lease.enter_context(self._clients.lease(
                adapter, admitted.secret, base_url=adapter.base_url(d.base_url), timeout=timeout,
                retries=retries))
        except BaseException:
            self._fail(admitted, member, None, "internal")
            raise
        call = Call(self, admitted, member, sdk, timeout, warn)
        try:
            with lease:  # the client serves this block only, then waits for the next one
                yield call
        except BaseException as exc:
            error = call._left(exc)
            if error is not None and error is not exc:  # an SDK failure, as byokctl's error:
                raise error from None  # its exception holds the request, key header included
            raise
        call._left(None)

    def test_key(self, key_id: str, *, member: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                 base_url: str | None = None) -> Tested:
        """Test a stored key with a real, token-free call (list models) where it is used, or
        at `base_url` (an emulator, a regional endpoint; a member's personal key only where its
        owner approved), and record the result on the key, as `byokctl key test` does; a
        failure raises (`KeyRejected`, `RateLimited`, `ProviderDown`) after it is recorded."""
        from byokctl.services import keytest

        with store_errors(self):
            return keytest.run_test(self._context(member), key_id, timeout=timeout,
                                    retries=retries, base_url=base_url)

    # -- for Call and AsyncVault ------------------------------------------------------------------
    def _admit(self, org: str, member: str | None, max_tokens: int, timeout: float,
               retries: int, warn: Callable[[str], None]) -> Admitted:
        from byokctl.services import admission, calls
        from byokctl.services.keys import check_limits
        from byokctl.services.resolution import resolve_for

        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise UsageError(f"max_tokens must be at least 1, not {max_tokens!r}")
        check_limits(timeout, retries)

        def estimate(provider: str, model: str) -> float:
            return admission.estimate_usd(provider, model, prompt="", system=None,
                                          max_tokens=max_tokens)

        with store_errors(self):
            ctx = self._context(member)
            decision, f = resolve_for(ctx, org)
            decision = calls.verified(ctx, decision, f)
            for w in decision.warnings:
                warn(w)
            return calls.admit(ctx, decision, estimate_usd=estimate, deadline_s=timeout)

    def _settle(self, admitted: Admitted, member: str | None, response: object,
                timeout: float, warn: Callable[[str], None]) -> Recorded:
        from byokctl.api.records import Recorded
        from byokctl.providers import registry
        from byokctl.providers.base import BadTokenCount, MalformedResponse
        from byokctl.providers.usage import usage_of
        from byokctl.services import calls

        d = admitted.decision
        assert d.provider and d.mode and d.key
        try:
            used = usage_of(response)
        except BadTokenCount as exc:  # a made-up count: recorded as malformed, never billed
            error = registry.get(d.provider).error_for(exc, secret=admitted.secret,
                                                       base_url=d.base_url, timeout=timeout,
                                                       key_id=d.key.id)
            assert error is not None
            self._fail(admitted, member, error)
            raise error from None
        except MalformedResponse:
            raise UsageError(
                f"call.record() was given a {type(response).__name__}, which carries no token "
                "usage", "pass the SDK's response object or a stream's final message (OpenAI "
                "streams: stream_options={'include_usage': True}, and the last chunk)") from None
        with store_errors(self):
            done = calls.settle(self._context(member), admitted, used.input_tokens,
                                used.output_tokens, model=used.model, on_warning=warn)
        return Recorded(d.mode, d.provider, done.model, d.key.id, d.fallback_reason,
                        done.input_tokens, done.output_tokens, done.cost_usd,
                        done.credits_charged, done.latency_ms)

    def _fail(self, admitted: Admitted, member: str | None, error: ByokError | None,
              outcome: str | None = None) -> None:
        from byokctl.services import calls

        with store_errors(self):
            calls.fail(self._context(member), admitted, error, outcome=outcome)


@contextlib.contextmanager
def store_errors(vault: Vault) -> Iterator[None]:
    """The engine's own failures as byokctl's errors, as the CLI reports them: a lock held
    past the busy timeout or a lost database connection (Conflict), a damaged page
    (Integrity). Anything else is a bug and rises as it is."""
    try:
        yield
    except ByokError:
        raise
    except Exception as exc:
        error = _engine_error(vault, exc)
        if error is None:
            raise
        raise error from None


def _engine_error(vault: Vault, exc: Exception) -> ByokError | None:
    from byokctl import store

    where = store.target(vault._db)
    if store.is_busy(exc):
        return store.busy_error(where, vault._busy_ms)
    if store.is_disconnect(exc):
        return store.disconnect_error(where)
    if getattr(exc, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        from byokctl.errors import Integrity

        return Integrity("The vault file is damaged (database disk image is malformed)",
                         "restore it from a backup and run `byokctl vault check` on it")
    return None


def _request(prompt: str | Messages, system: str | None, max_tokens: int, timeout: float,
             retries: int, stream: bool) -> Any:
    from byokctl.services.ask import Request

    if isinstance(prompt, str):
        return Request(prompt, system, max_tokens, stream, timeout, retries)
    if isinstance(prompt, Sequence) and not isinstance(prompt, bytes | bytearray):
        return Request("", system, max_tokens, stream, timeout, retries, messages=list(prompt))
    raise UsageError(f"The prompt must be text or a list of messages, not {type(prompt).__name__}")


class Call:
    """One call admitted by `Vault.client()`: the SDK client and what to record it with.

    `sdk` holds the key (it must, to call the provider); nothing else here shows it."""

    def __init__(self, vault: Vault, admitted: Admitted, member: str | None, sdk: Any,
                 timeout: float, warn: Callable[[str], None]) -> None:
        self._vault, self._admitted, self._member = vault, admitted, member
        self._timeout, self._warn = timeout, warn
        self.sdk = sdk
        self.recorded: Recorded | None = None
        self._open = True

    def __repr__(self) -> str:
        d = self.decision
        return (f"<byokctl.Call {d.org} {d.mode} {d.provider}/{d.model} key {self.key_id}"
                f"{' recorded' if self.recorded else ''}>")

    @property
    def decision(self) -> Decision:
        """The resolution this call runs on (what `Vault.resolve` returns)."""
        return self._admitted.decision

    @property
    def model(self) -> str:
        """The model id to ask for (the org's pinned model, or the platform default)."""
        assert self.decision.model
        return self.decision.model

    @property
    def provider(self) -> str:
        """`anthropic` or `openai`: which SDK `sdk` is."""
        assert self.decision.provider
        return self.decision.provider

    @property
    def mode(self) -> str:
        """`byok` (the org's key, no credits) or `platform` (billed in credits)."""
        assert self.decision.mode
        return self.decision.mode

    @property
    def key_id(self) -> str:
        """The id of the key the SDK client holds (never the key itself)."""
        assert self.decision.key
        return self.decision.key.id

    def record(self, response: object) -> Recorded:
        """Account for the call the platform made: its usage record, and credits in platform
        mode, from `response`'s token usage (an Anthropic `Message`, an OpenAI `ChatCompletion`,
        a stream's final message or last chunk with usage, or the stream object). Once only."""
        if not self._open:
            raise UsageError("call.record() was called after its `with` block ended",
                             "record the response inside the block")
        if self.recorded is not None:
            raise UsageError("This call is recorded already", "open a new vault.client() per call")
        self.recorded = self._vault._settle(self._admitted, self._member, response,
                                            self._timeout, self._warn)
        return self.recorded

    def _left(self, exc: BaseException | None) -> ByokError | None:
        """The block ended (with `exc`): a call never recorded is recorded as failed. Returns
        the byokctl error `exc` stands for, if any (an SDK failure becomes one)."""
        self._open = False
        error, outcome = _failure_of(self, exc)
        if self.recorded is None:
            self._vault._fail(self._admitted, self._member, error, outcome)
        return error


def _failure_of(call: Call, exc: BaseException | None) -> tuple[ByokError | None, str | None]:
    """(the byokctl error `exc` stands for, else the outcome to record) for a block's end."""
    if exc is None:
        return None, "unrecorded"
    if isinstance(exc, ByokError):
        return exc, None
    from byokctl.providers import registry

    admitted = call._admitted
    error = registry.get(call.provider).error_for(exc, secret=admitted.secret,
                                                  base_url=admitted.decision.base_url,
                                                  timeout=call._timeout, key_id=call.key_id)
    if error is not None:
        return error, None
    return None, "internal" if isinstance(exc, Exception) else "interrupted"
