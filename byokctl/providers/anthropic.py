"""The Anthropic adapter: the Messages API over the official `anthropic` SDK (imported lazily)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from byokctl.providers.base import (
    Adapter,
    Failure,
    MalformedResponse,
    StreamTruncated,
    error_fields,
    expecting_shape,
    retry_after,
    should_retry,
)
from byokctl.providers.bounds import Bounds

if TYPE_CHECKING:
    import anthropic


class AnthropicAdapter(Adapter):
    name = "anthropic"

    def _client(self, secret: str, base_url: str, timeout: float,
                bounds: Bounds | None = None, max_retries: int = 0,
                transport: Any = None) -> anthropic.Anthropic:
        import anthropic

        # An explicit api_key makes the SDK skip ANTHROPIC_API_KEY/AUTH_TOKEN, profiles and
        # federation; an explicit base_url skips ANTHROPIC_BASE_URL; tracing stays off so no
        # prompt reaches an OpenTelemetry exporter configured in the environment.
        return anthropic.Anthropic(
            api_key=secret, base_url=base_url, timeout=timeout, max_retries=max_retries,
            http_client=anthropic.DefaultHttpxClient(
                transport=transport or (bounds or Bounds(timeout)).transport()),
            default_headers=self.neutral_headers(secret),
            open_telemetry={"traces": False, "propagation": False},
        )

    def _async_client(self, secret: str, base_url: str, timeout: float, bounds: Bounds,
                      max_retries: int = 0) -> anthropic.AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=secret, base_url=base_url, timeout=timeout, max_retries=max_retries,
            http_client=anthropic.DefaultAsyncHttpxClient(transport=bounds.async_transport()),
            default_headers=self.neutral_headers(secret),
            open_telemetry={"traces": False, "propagation": False},
        )

    def _omit(self) -> Any:
        import anthropic

        return anthropic.Omit()

    def _list_models(self, client: anthropic.Anthropic) -> list[str]:
        with expecting_shape():  # the SDK itself trips over a body that is not the API's
            return [str(m.id) for m in client.models.list(limit=1000)]

    def _complete(self, client: anthropic.Anthropic, *, model: str, messages: list[dict[str, str]],
                  system: str | None, max_tokens: int, stream: bool,
                  emit: Callable[[str], None]) -> tuple[str, int, int, str]:
        params = _params(model, messages, system, max_tokens)
        if not stream:
            with expecting_shape():
                return _message_result(client.messages.create(**params))
        events = _Events(model, emit)
        with client.messages.create(**params, stream=True) as stream_, expecting_shape():
            for event in stream_:
                events.feed(event)
        return events.result()

    async def _acomplete(self, client: anthropic.AsyncAnthropic, *, model: str,
                         messages: list[dict[str, str]], system: str | None, max_tokens: int,
                         stream: bool, emit: Callable[[str], None]) -> tuple[str, int, int, str]:
        params = _params(model, messages, system, max_tokens)
        if not stream:
            with expecting_shape():
                return _message_result(await client.messages.create(**params))
        events = _Events(model, emit)
        stream_ = await client.messages.create(**params, stream=True)
        async with stream_:
            with expecting_shape():
                async for event in stream_:
                    events.feed(event)
        return events.result()

    def _failure(self, exc: Exception) -> Failure | None:
        import json

        import anthropic
        import httpx2
        import pydantic

        if isinstance(exc, StreamTruncated):
            return Failure("truncated")
        if isinstance(exc, MalformedResponse):
            return Failure("malformed")
        if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
            return Failure("timeout")
        if isinstance(exc, anthropic.APIConnectionError):
            return Failure("connection", detail=str(exc.__cause__ or ""))
        if isinstance(exc, httpx2.TransportError):  # raised as-is while reading a stream
            return Failure("connection", detail=str(exc))
        if isinstance(exc, anthropic.APIResponseValidationError | json.JSONDecodeError
                      | pydantic.ValidationError):
            return Failure("malformed")
        if isinstance(exc, anthropic.APIStatusError):
            kind, message = error_fields(exc.body)
            headers = exc.response.headers
            return Failure("status", status=exc.status_code, error_type=exc.type or kind,
                           detail=message or exc.message, retry_after=retry_after(headers),
                           should_retry=should_retry(headers))
        return None


def _params(model: str, messages: list[dict[str, str]], system: str | None,
            max_tokens: int) -> dict[str, Any]:
    params: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        params["system"] = system
    return params


def _message_result(message: Any) -> tuple[str, int, int, str]:
    text = "".join(b.text for b in message.content if b.type == "text")
    return text, message.usage.input_tokens, message.usage.output_tokens, message.model


class _Events:
    """A Messages stream's events, read one at a time (the sync and async streams alike)."""

    def __init__(self, model: str, emit: Callable[[str], None]) -> None:
        self.parts: list[str] = []
        self.input_tokens = self.output_tokens = 0
        self.model, self.finished, self.emit = model, False, emit

    def feed(self, event: Any) -> None:
        if event.type == "message_start":
            self.model = event.message.model or self.model
            self.input_tokens = event.message.usage.input_tokens
            self.output_tokens = event.message.usage.output_tokens
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            self.parts.append(event.delta.text)
            self.emit(event.delta.text)
        elif event.type == "message_delta":
            # Cumulative counts: the last message_delta carries the final usage.
            self.output_tokens = event.usage.output_tokens
            if event.usage.input_tokens is not None:
                self.input_tokens = event.usage.input_tokens
        elif event.type == "message_stop":
            self.finished = True

    def result(self) -> tuple[str, int, int, str]:
        if not self.finished:
            raise StreamTruncated
        return "".join(self.parts), self.input_tokens, self.output_tokens, self.model
