"""The OpenAI adapter: Chat Completions over the official `openai` SDK (imported lazily)."""

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
    import openai


class OpenAIAdapter(Adapter):
    name = "openai"

    def _client(self, secret: str, base_url: str, timeout: float,
                bounds: Bounds | None = None, max_retries: int = 0,
                transport: Any = None) -> openai.OpenAI:
        import openai

        client = openai.OpenAI(
            # The SDK reads OPENAI_ADMIN_KEY whenever admin_api_key is None; an empty one (the
            # constructor's own argument) keeps it out. byokctl calls no admin endpoint.
            api_key=secret, admin_api_key="", base_url=base_url, timeout=timeout,
            max_retries=max_retries,
            http_client=openai.DefaultHttpxClient(
                transport=transport or (bounds or Bounds(timeout)).transport()),
            # OPENAI_ORG_ID / OPENAI_PROJECT_ID would bill another tenant's org or project.
            default_headers=self._headers(secret),
        )
        return client

    def _async_client(self, secret: str, base_url: str, timeout: float, bounds: Bounds,
                      max_retries: int = 0) -> openai.AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(
            api_key=secret, admin_api_key="", base_url=base_url, timeout=timeout,
            max_retries=max_retries,
            http_client=openai.DefaultAsyncHttpxClient(transport=bounds.async_transport()),
            default_headers=self._headers(secret),
        )

    def _headers(self, secret: str) -> dict[str, Any]:
        omit = self._omit()
        return {**self.neutral_headers(secret), "OpenAI-Organization": omit, "OpenAI-Project": omit}

    def _omit(self) -> Any:
        import openai

        return openai.Omit()

    def _list_models(self, client: openai.OpenAI) -> list[str]:
        with expecting_shape():  # the SDK itself trips over a body that is not the API's
            return [str(m.id) for m in client.models.list()]

    def _complete(self, client: openai.OpenAI, *, model: str, messages: list[dict[str, str]],
                  system: str | None, max_tokens: int, stream: bool,
                  emit: Callable[[str], None]) -> tuple[str, int, int, str]:
        params = _params(model, messages, system, max_tokens)
        if not stream:
            with expecting_shape():
                return _completion_result(client.chat.completions.create(**params))
        chunks = _Chunks(model, emit)
        stream_ = client.chat.completions.create(**params, stream=True,
                                                 stream_options={"include_usage": True})
        with stream_, expecting_shape():
            for chunk in stream_:
                chunks.feed(chunk)
        return chunks.result()

    async def _acomplete(self, client: openai.AsyncOpenAI, *, model: str,
                         messages: list[dict[str, str]], system: str | None, max_tokens: int,
                         stream: bool, emit: Callable[[str], None]) -> tuple[str, int, int, str]:
        params = _params(model, messages, system, max_tokens)
        if not stream:
            with expecting_shape():
                return _completion_result(await client.chat.completions.create(**params))
        chunks = _Chunks(model, emit)
        stream_ = await client.chat.completions.create(**params, stream=True,
                                                       stream_options={"include_usage": True})
        async with stream_:
            with expecting_shape():
                async for chunk in stream_:
                    chunks.feed(chunk)
        return chunks.result()

    def _failure(self, exc: Exception) -> Failure | None:
        import json

        import httpx2
        import openai
        import pydantic

        if isinstance(exc, StreamTruncated):
            return Failure("truncated")
        if isinstance(exc, MalformedResponse):
            return Failure("malformed")
        if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
            return Failure("timeout")
        if isinstance(exc, openai.APIConnectionError):
            return Failure("connection", detail=str(exc.__cause__ or ""))
        if isinstance(exc, httpx2.TransportError):
            return Failure("connection", detail=str(exc))
        if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError
                      | pydantic.ValidationError):
            return Failure("malformed")
        if isinstance(exc, openai.APIStatusError):
            kind, message = error_fields(exc.body)
            headers = exc.response.headers
            return Failure("status", status=exc.status_code, error_type=kind,
                           detail=message or exc.message, retry_after=retry_after(headers),
                           should_retry=should_retry(headers))
        if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
            kind, message = error_fields(exc.body)
            return Failure("status", error_type=kind or "server_error", detail=message or exc.message)
        return None


def _params(model: str, messages: list[dict[str, str]], system: str | None,
            max_tokens: int) -> dict[str, Any]:
    # `system` rather than `developer`: OpenAI treats it as developer for reasoning models,
    # and OpenAI-compatible gateways (a base_url) understand it.
    sent = ([{"role": "system", "content": system}] if system else []) + list(messages)
    return {"model": model, "messages": sent, "max_completion_tokens": max_tokens}


def _completion_result(completion: Any) -> tuple[str, int, int, str]:
    text = (completion.choices[0].message.content or "") if completion.choices else ""
    usage = completion.usage
    return (text, usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
            completion.model)


class _Chunks:
    """A Chat Completions stream's chunks, read one at a time (the sync and async streams alike)."""

    def __init__(self, model: str, emit: Callable[[str], None]) -> None:
        self.parts: list[str] = []
        self.input_tokens = self.output_tokens = 0
        self.model, self.finished, self.emit = model, False, emit

    def feed(self, chunk: Any) -> None:
        self.model = chunk.model or self.model
        if chunk.usage is not None:  # the last chunk, with no choices
            self.input_tokens, self.output_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                self.parts.append(choice.delta.content)
                self.emit(choice.delta.content)
            if choice.finish_reason:
                self.finished = True

    def result(self) -> tuple[str, int, int, str]:
        if not self.finished:
            raise StreamTruncated
        return "".join(self.parts), self.input_tokens, self.output_tokens, self.model
