"""What every provider adapter offers, and what they share: the retry loop, the SDK client
hygiene (no ambient configuration) and the mapping of provider failures onto byokctl's errors.

Mapping (SPEC §4): 401/403 → KeyRejected (7); 429 and 402 (quota/billing) → RateLimited (8);
5xx incl. 529, 408/409 after retries, timeouts, connection errors, malformed or truncated
responses → ProviderDown (11); 404 → NotFound (3: model or endpoint unknown);
400/413/422 → UsageError (2: the request itself was refused); any other status → ProviderDown.
"""

from __future__ import annotations

import contextlib
import email.utils
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from byokctl.errors import ByokError, KeyRejected, NotFound, ProviderDown, RateLimited, UsageError
from byokctl.providers import catalog, registry
from byokctl.providers.bounds import MAX_RESPONSE_BYTES, Bounds, DeadlinePassed, ResponseTooLarge
from byokctl.providers.redact import provider_text, redact, safe_url

if TYPE_CHECKING:
    from byokctl.providers.pool import Pool
    from byokctl.providers.transports import LeasedTransport

T = TypeVar("T")

DEFAULT_TIMEOUT, DEFAULT_RETRIES = registry.DEFAULT_TIMEOUT, registry.DEFAULT_RETRIES
MAX_RETRY_WAIT = 30.0  # a provider asking for a longer pause gets no retry: we fail fast instead
_BACKOFF_START, _BACKOFF_MAX = 0.5, 8.0
DEADLINE_SLACK = 0.05  # a step timed out this close to the call's deadline: the deadline ended it

# Provider error types (Anthropic `error.type`, OpenAI `error.type`/`code`) for failures that
# arrive without a meaningful HTTP status, e.g. an `error` event in the middle of a stream.
_STATUS_BY_TYPE = {
    "authentication_error": 401, "invalid_api_key": 401, "permission_error": 403,
    "billing_error": 402, "insufficient_quota": 429, "rate_limit_error": 429,
    "rate_limit_exceeded": 429, "not_found_error": 404, "invalid_request_error": 400,
    "request_too_large": 413, "timeout_error": 504, "api_error": 500, "server_error": 500,
    "overloaded_error": 529,
}


class Completion(NamedTuple):
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    latency_ms: int

    def to_json(self) -> dict:
        return {"text": self.text, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "model": self.model, "latency_ms": self.latency_ms}


@dataclass
class Failure:
    """A provider failure, in SDK-neutral terms; `detail` is raw and is redacted before use."""

    kind: str  # "status", "timeout", "connection", "malformed", "truncated", "too-large"
    status: int | None = None
    error_type: str | None = None  # the provider's error type or code
    detail: str = ""
    retry_after: float | None = None
    should_retry: bool | None = None  # the provider's `x-should-retry` header, when sent

    @property
    def effective_status(self) -> int | None:
        if self.status and self.status >= 400:
            return self.status
        return _STATUS_BY_TYPE.get(self.error_type or "")

    @property
    def retryable(self) -> bool:
        if self.should_retry is not None:
            return self.should_retry
        if self.kind in ("timeout", "connection"):
            return True
        status = self.effective_status
        return self.kind == "status" and status is not None and (status in (408, 409, 429) or status >= 500)


class StreamTruncated(Exception):
    """The stream ended without its final event: the answer is incomplete."""


class MalformedResponse(Exception):
    """The response parsed, but not into the shape of the provider's API."""


# More tokens than any model's context holds: a count above it is a gateway lying, not usage.
MAX_TOKENS_PER_CALL = 10_000_000


class BadTokenCount(MalformedResponse):
    """A usage count that is not a whole number from 0 to MAX_TOKENS_PER_CALL."""


def token_count(value: object, what: str) -> int:
    """A usage count as the API defines it (an integer, absent meaning 0), else BadTokenCount:
    a negative, fractional or absurd count would bill the org a made-up amount."""
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= MAX_TOKENS_PER_CALL:
        shown = repr(value)[:40]
        raise BadTokenCount(f"{what} {shown} is not a whole number from 0 to {MAX_TOKENS_PER_CALL:,}")
    return value


@contextmanager
def expecting_shape() -> Iterator[None]:
    """Reading a parsed response: a missing field or wrong type means the server is not the API
    (without strict validation the SDKs hand back whatever came, even an HTML page as text)."""
    try:
        yield
    except (AttributeError, TypeError, KeyError, IndexError):
        raise MalformedResponse from None


class Adapter:
    """One provider over its official SDK. Subclasses import the SDK inside their methods only."""

    name: str = ""  # the provider's id; what else is known of it is its row in the registry

    @property
    def label(self) -> str:
        """The provider's name for messages."""
        return registry.label(self.name)

    @property
    def custom_headers_env(self) -> str:
        """The SDK's env var of extra headers, which we neutralise."""
        return registry.facts(self.name).custom_headers_env

    # -- the interface ------------------------------------------------------------------------
    def list_models(self, secret: str, *, base_url: str | None = None,
                    timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES,
                    key_id: str | None = None) -> list[str]:
        """The model ids the key may use: a token-free call that proves the key works."""
        url = self.base_url(base_url)
        return self._run(secret, url, timeout, retries, key_id, lambda c: self._list_models(c))

    def complete(self, secret: str, *, model: str, prompt: str = "", system: str | None = None,
                 max_tokens: int = 1024, base_url: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES, stream: bool = True,
                 on_text: Callable[[str], None] | None = None, key_id: str | None = None,
                 messages: list[dict[str, str]] | None = None,
                 clients: Pool | None = None) -> Completion:
        """One prompt (or a conversation: `messages`, each `{"role": "user"|"assistant",
        "content": text}`, which replaces `prompt`), one answer. When streaming, `on_text` gets
        each piece of text as it arrives (it is not called without streaming: use `.text`). A
        failed attempt is retried only while no text has been handed to `on_text`. `timeout`
        is the deadline of the whole call (every attempt, the whole stream); `latency_ms`
        spans every attempt. `clients`: a pool to take the SDK client from and give it back
        to (a long-lived process), else one is built for the call and closed."""
        url = self.base_url(base_url)
        turns = list(messages) if messages else [{"role": "user", "content": prompt}]
        bounds = Bounds(timeout)
        reading = _Reading(bounds, on_text, stream)

        def attempt(client: Any) -> tuple[str, int, int, str]:
            return reading.counted(self._complete(
                client, model=model, messages=turns, system=system, max_tokens=max_tokens,
                stream=stream, emit=reading.emit))

        started = time.monotonic()
        text, input_tokens, output_tokens, used_model = self._run(
            secret, url, timeout, retries, key_id, attempt, can_retry=reading.can_retry,
            bounds=bounds, clients=clients)
        return Completion(text, input_tokens, output_tokens, used_model or model,
                          int((time.monotonic() - started) * 1000))

    async def acomplete(self, secret: str, *, model: str, messages: list[dict[str, str]],
                        system: str | None = None, max_tokens: int = 1024,
                        base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                        retries: int = DEFAULT_RETRIES, stream: bool = True,
                        on_text: Callable[[str], None] | None = None,
                        key_id: str | None = None) -> Completion:
        """`complete` over the SDK's async client, for an event loop, with `complete`'s retry
        policy and bounds: `timeout` the deadline of the whole call, each response capped at
        MAX_RESPONSE_BYTES and the text at MAX_TEXT_CHARS, no retry once text has arrived."""
        url = self.base_url(base_url)
        bounds = Bounds(timeout)
        reading = _Reading(bounds, on_text, stream)

        async def attempt(client: Any) -> tuple[str, int, int, str]:
            return reading.counted(await self._acomplete(
                client, model=model, messages=messages, system=system, max_tokens=max_tokens,
                stream=stream, emit=reading.emit))

        started = time.monotonic()
        text, input_tokens, output_tokens, used_model = await self._arun(
            secret, url, timeout, retries, key_id, attempt, reading.can_retry, bounds)
        return Completion(text, input_tokens, output_tokens, used_model or model,
                          int((time.monotonic() - started) * 1000))

    async def _acomplete(self, client: Any, *, model: str, messages: list[dict[str, str]],
                         system: str | None, max_tokens: int, stream: bool,
                         emit: Callable[[str], None]) -> tuple[str, int, int, str]:
        raise NotImplementedError

    # -- a client for the caller's own calls (byokctl.Vault.client) ------------------------------
    def sdk_client(self, secret: str, *, base_url: str | None = None,
                   timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES) -> Any:
        """The official SDK client for `secret`, as byokctl's own calls build it (no ambient
        configuration), with the SDK's own retries set to `retries` and `timeout` the deadline
        of everything the client does. The caller closes it."""
        return self._client(secret, self.base_url(base_url), timeout, Bounds(timeout),
                            max_retries=retries)

    def pooled_client(self, secret: str, *, base_url: str, timeout: float,
                      retries: int) -> tuple[Any, LeasedTransport]:
        """An SDK client for a pool (providers/pool.py) and its transport, whose `bounds`
        the pool sets for each call it lends the client to (and clears after: refused)."""
        from byokctl.providers.transports import LeasedTransport

        transport = LeasedTransport()
        return self._client(secret, base_url, timeout, max_retries=retries,
                            transport=transport), transport

    def async_sdk_client(self, secret: str, *, base_url: str | None = None,
                         timeout: float = DEFAULT_TIMEOUT, retries: int = DEFAULT_RETRIES) -> Any:
        """The SDK's async client (`AsyncAnthropic` / `AsyncOpenAI`), built and bounded as
        `sdk_client` is: `timeout` is the deadline of everything the client does, a response
        is capped at MAX_RESPONSE_BYTES. The caller closes it (`await client.close()`)."""
        return self._async_client(secret, self.base_url(base_url), timeout, Bounds(timeout),
                                  max_retries=retries)

    def error_for(self, exc: BaseException, *, secret: str, base_url: str | None,
                  timeout: float, key_id: str | None = None) -> ByokError | None:
        """The byokctl error (redacted) for an exception the SDK raised, or None if it is not a
        provider failure."""
        if not isinstance(exc, Exception):
            return None
        failure = _own_failure(exc) or self._failure(exc)
        if failure is None:
            return None
        return to_error(self.label, failure, secret=secret, attempts=1,
                        base_url=self.base_url(base_url), timeout=timeout, key_id=key_id)

    def base_url(self, base_url: str | None) -> str:
        """The explicit base URL, else the catalog's default — never the SDK's environment variable."""
        return base_url or catalog.load().info[self.name]["default_base_url"]

    # -- for subclasses -----------------------------------------------------------------------
    def _client(self, secret: str, base_url: str, timeout: float, bounds: Bounds | None = None,
                max_retries: int = 0, transport: Any = None) -> Any:
        """The SDK client; its `http_client` must use `transport`, else `bounds.transport()`."""
        raise NotImplementedError

    def _async_client(self, secret: str, base_url: str, timeout: float, bounds: Bounds,
                      max_retries: int = 0) -> Any:
        """The SDK's async client; its `http_client` must use `bounds.async_transport()`."""
        raise NotImplementedError

    def _list_models(self, client: Any) -> list[str]:
        raise NotImplementedError

    def _complete(self, client: Any, *, model: str, messages: list[dict[str, str]], system: str | None,
                  max_tokens: int, stream: bool, emit: Callable[[str], None]) -> tuple[str, int, int, str]:
        raise NotImplementedError

    def _failure(self, exc: Exception) -> Failure | None:
        """The provider failure `exc` stands for, or None if it is not one (a bug: let it rise)."""
        raise NotImplementedError

    def neutral_headers(self, secret: str) -> dict[str, Any]:
        """Default headers that cancel the SDK's `*_CUSTOM_HEADERS` environment variable (each
        name it sets is omitted) and pin `Authorization` to this key, so nothing ambient —
        another credential, a tenant header — rides along with an org's request."""
        omit = self._omit()
        headers: dict[str, Any] = {}
        for line in os.environ.get(self.custom_headers_env, "").split("\n"):
            name = line.partition(":")[0].strip()
            if ":" in line and name and name.lower() != "authorization":
                headers[name] = omit
        headers["Authorization"] = f"Bearer {secret}"
        return headers

    def _omit(self) -> Any:
        raise NotImplementedError

    # -- the retry loop -----------------------------------------------------------------------
    def _run(self, secret: str, base_url: str, timeout: float, retries: int, key_id: str | None,
             call: Callable[[Any], T], can_retry: Callable[[], bool] = lambda: True,
             bounds: Bounds | None = None, clients: Pool | None = None) -> T:
        """`call(client)` with byokctl's retry policy (the SDK's own is off: `max_retries=0`).

        Retries 408/409/429/5xx, timeouts and connection errors with exponential backoff, or
        after the provider's `retry-after` when that is at most MAX_RETRY_WAIT seconds, while
        the deadline (`timeout` from now, for every attempt together) leaves time to. The
        client comes from `clients` (and goes back there), else it is built and closed here.
        """
        bounds = bounds or Bounds(timeout)
        attempt = 0
        with contextlib.ExitStack() as held:
            if clients is None:
                client = self._client(secret, base_url, timeout, bounds)
                held.callback(client.close)
            else:
                client, _ = held.enter_context(clients.lease(
                    self, secret, base_url=base_url, timeout=timeout, retries=0, bounds=bounds))
            while True:
                try:
                    return call(client)
                except Exception as exc:  # noqa: BLE001 - sorted below, bugs re-raised
                    failure = self._sorted(exc, bounds)
                attempt += 1
                wait = _retry_wait(failure, attempt, retries, bounds, can_retry)
                if wait is None:
                    break
                time.sleep(wait)
        # Raised outside the `except` block so the SDK exception is neither chained nor context.
        raise to_error(self.label, failure, secret=secret, attempts=attempt, base_url=base_url,
                       timeout=timeout, key_id=key_id) from None

    async def _arun(self, secret: str, base_url: str, timeout: float, retries: int,
                    key_id: str | None, call: Callable[[Any], Awaitable[T]],
                    can_retry: Callable[[], bool], bounds: Bounds) -> T:
        """`_run` for an event loop: `await call(client)` over the SDK's async client."""
        import asyncio

        client = self._async_client(secret, base_url, timeout, bounds)
        attempt = 0
        try:
            while True:
                try:
                    return await call(client)
                except Exception as exc:  # noqa: BLE001 - sorted below, bugs re-raised
                    failure = self._sorted(exc, bounds)
                attempt += 1
                wait = _retry_wait(failure, attempt, retries, bounds, can_retry)
                if wait is None:
                    break
                await asyncio.sleep(wait)
        finally:
            await client.close()
        raise to_error(self.label, failure, secret=secret, attempts=attempt, base_url=base_url,
                       timeout=timeout, key_id=key_id) from None

    def _sorted(self, exc: Exception, bounds: Bounds) -> Failure:
        """The provider failure `exc` stands for; `exc` itself (a bug) if it is none."""
        failure = _own_failure(exc) or self._failure(exc)
        if failure is None:
            raise exc
        if failure.kind in ("connection", "timeout", "truncated") and (
                bounds.expired or bounds.deadline - time.monotonic() < DEADLINE_SLACK):
            return Failure("timeout", error_type="deadline")  # the deadline cut it
        return failure


class _Reading:
    """One completion's text as it arrives: counted against MAX_TEXT_CHARS, handed to
    `on_text`; once any has been, the call is not retried (the caller has shown it)."""

    def __init__(self, bounds: Bounds, on_text: Callable[[str], None] | None, stream: bool) -> None:
        self.bounds, self.on_text, self.stream = bounds, on_text, stream
        self.delivered = False

    def emit(self, piece: str) -> None:
        if piece:
            self.bounds.add_text(piece)
            self.delivered = True
            if self.on_text is not None:
                self.on_text(piece)

    def can_retry(self) -> bool:
        return not self.delivered

    def counted(self, result: tuple[str, int, int, str]) -> tuple[str, int, int, str]:
        """An attempt's (text, input tokens, output tokens, model), its counts checked."""
        text, input_tokens, output_tokens, used_model = result
        if not self.stream:
            self.bounds.add_text(text)
        return (text, token_count(input_tokens, "input_tokens"),
                token_count(output_tokens, "output_tokens"), used_model)


def _retry_wait(failure: Failure, attempt: int, retries: int, bounds: Bounds,
                can_retry: Callable[[], bool]) -> float | None:
    """Seconds to wait before retrying after `attempt` attempts, or None to give up: no retries
    left, a failure not worth one, a pause too long or past the deadline, text already shown."""
    wait = _wait_before_retry(failure, attempt)
    if (attempt > retries or not failure.retryable or wait is None or not can_retry()
            or wait >= bounds.deadline - time.monotonic()):
        return None
    return wait


def _own_failure(exc: BaseException) -> Failure | None:
    """A failure byokctl itself detected, however the SDK wrapped it."""
    seen: BaseException | None = exc
    for _ in range(4):  # the exception, and what the SDK wrapped
        if seen is None:
            break
        if isinstance(seen, BadTokenCount):
            return Failure("malformed", error_type="usage", detail=str(seen))
        if isinstance(seen, DeadlinePassed):
            return Failure("timeout", error_type="deadline")
        if isinstance(seen, ResponseTooLarge):
            return Failure("too-large", detail=str(seen))
        seen = seen.__cause__ or seen.__context__
    return None


def _wait_before_retry(failure: Failure, attempt: int) -> float | None:
    """Seconds to wait before the next attempt, or None if the provider's pause is too long."""
    if failure.retry_after is not None and failure.retry_after > 0:
        return failure.retry_after if failure.retry_after <= MAX_RETRY_WAIT else None
    backoff = min(_BACKOFF_START * 2 ** (attempt - 1), _BACKOFF_MAX)
    return backoff * (1 - 0.25 * random.random())


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """The pause a response asks for (`retry-after-ms`, `retry-after` seconds or HTTP date)."""
    if not headers:
        return None
    try:
        return float(headers["retry-after-ms"]) / 1000
    except (KeyError, TypeError, ValueError):
        pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


def should_retry(headers: Mapping[str, str] | None) -> bool | None:
    value = (headers or {}).get("x-should-retry")
    return {"true": True, "false": False}.get(value or "")


def error_fields(body: object) -> tuple[str | None, str | None]:
    """(type or code, message) from a provider error body, wrapped in `error` or not."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping):
            kind = inner.get("code") if inner.get("code") in _STATUS_BY_TYPE else inner.get("type")
            message = inner.get("message")
            return (kind if isinstance(kind, str) else None,
                    message if isinstance(message, str) else None)
        if isinstance(inner, str):
            return None, inner
    if isinstance(body, str):
        return None, body
    return None, None


def to_error(label: str, failure: Failure, *, secret: str, attempts: int, base_url: str,
             timeout: float, key_id: str | None = None) -> ByokError:
    """The byokctl error for `failure`: one redacted sentence that names the fix."""
    where = safe_url(base_url)
    detail = provider_text(failure.detail, secret) if failure.detail else ""
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    key = f"`byokctl key rotate {key_id}`" if key_id else "`byokctl key rotate KEY_ID`"
    status = failure.effective_status
    what = f"HTTP {status}" if failure.status and failure.status >= 400 else (failure.error_type or "error")
    said = f" ({what}: {detail})" if detail else f" ({what})"

    if failure.kind == "timeout" and failure.error_type == "deadline":
        error: ByokError = ProviderDown(
            f"{label} did not answer within {timeout:g} s (--timeout, the deadline of the whole "
            f"call: every attempt and the whole stream) at {where}{tries}", "try again later, or "
            "raise --timeout")
    elif failure.kind == "timeout":
        error = ProviderDown(
            f"{label} did not answer within {timeout:g} s at {where}{tries}", "try again later, "
            "or raise --timeout")
    elif failure.kind == "too-large":
        error = ProviderDown(
            f"{label} sent {failure.detail} at {where} (byokctl reads at most "
            f"{MAX_RESPONSE_BYTES // 1024 // 1024} MiB of response and 1 MiB of text per call)",
            "lower --max-tokens, or check that the base_url points at the real API")
    elif failure.kind == "connection":
        error = ProviderDown(
            f"The connection to {label} at {where} failed{tries}{f' ({detail})' if detail else ''}",
            "check the network and that base URL, or try again later")
    elif failure.kind == "malformed" and failure.error_type == "usage":
        error = ProviderDown(
            f"{label} sent a malformed response at {where}: its {detail}; the call is recorded "
            "and nothing was charged", "check that the base_url points at the real API")
    elif failure.kind == "malformed":
        error = ProviderDown(
            f"{label} sent a response that is not valid JSON for its API (at {where})", "check that the "
            "base_url points at the real API, or try again later")
    elif failure.kind == "truncated":
        error = ProviderDown(
            f"{label} ended the response before it was complete (at {where})", "try again later")
    elif status in (401, 403):
        refused = "rejected the API key" if status == 401 else "refused this API key access"
        error = KeyRejected(
            f"{label} {refused}{said}", f"check the key at the provider and replace it with {key}")
    elif status == 429 or status == 402:
        pause = (f", retry after {failure.retry_after:g} s" if failure.retry_after else "")
        if status == 402 or failure.error_type in ("insufficient_quota", "billing_error"):
            error = RateLimited(f"{label} says the account behind this key is out of quota or credit"
                                f"{said}", "add credit or raise its limits at the provider")
        else:
            error = RateLimited(f"{label} rate-limited this key{said}{tries}{pause}", "wait and try again, "
                                "or raise the account's rate limits at the provider")
    elif status == 404:
        error = NotFound(f"{label} answered not found{said} at {where}", "check the model (`byokctl "
                         "models list`) and the base URL")
    elif status in (400, 413, 422):
        error = UsageError(f"{label} refused the request as invalid{said}", "check the model, "
                           "--max-tokens and the prompt")
    elif status is not None and status >= 500:
        error = ProviderDown(f"{label} is unavailable at {where}{said}{tries}", "try again later, or raise "
                             "--retries")
    else:
        error = ProviderDown(f"{label} answered unexpectedly{said} at {where}", "check that base URL")
    if failure.kind == "malformed" and failure.error_type == "usage":
        error.outcome = "malformed"  # made-up token counts: the usage record says so
    # The message as a whole is scrubbed once more: nothing of the secret may leave this function.
    error.what, error.fix = redact(error.what, secret), error.fix and redact(error.fix, secret)
    error.args = (error.message,)
    return error
