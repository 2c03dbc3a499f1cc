"""What a provider response says it used, read from whichever response the caller holds (the
SDKs' objects, sync or async): `byokctl.Vault.client()`'s `record()` prices a call by it."""

from __future__ import annotations

from typing import NamedTuple

from byokctl.providers.base import MalformedResponse, token_count


class Usage(NamedTuple):
    """What a response says it used: the counts that price it, and the model that answered."""

    input_tokens: int
    output_tokens: int
    model: str | None


# Anthropic input tokens written to or read from the prompt cache are billed as input too
# (at their own rates; priced here at the plain input rate, which is never less).
_CACHE_FIELDS = ("cache_creation_input_tokens", "cache_read_input_tokens")


def usage_of(response: object) -> Usage:
    """The usage a provider response reports: an Anthropic `Message` (also a stream's
    `get_final_message()`), an OpenAI `ChatCompletion`, the last `ChatCompletionChunk` of a
    stream sent with `stream_options={"include_usage": True}`, or a Responses API `Response`.
    A stream object itself is read through its `get_final_message()` / `get_final_completion()`.
    MalformedResponse when it carries no usage, BadTokenCount when a count is not one."""
    for final in ("get_final_message", "get_final_completion", "get_final_response"):
        getter = getattr(response, final, None)
        if callable(getter):
            response = getter()
            if hasattr(response, "__await__"):  # an async stream's: the caller awaits it first
                getattr(response, "close", lambda: None)()
                raise MalformedResponse("await the async stream's final message first")
            break
    usage = getattr(response, "usage", None)
    if usage is None:
        raise MalformedResponse("it carries no usage")
    if getattr(usage, "input_tokens", None) is not None:
        extra = sum(token_count(getattr(usage, f, None), f) for f in _CACHE_FIELDS)
        counts = (token_count(usage.input_tokens, "input_tokens") + extra,
                  token_count(getattr(usage, "output_tokens", None), "output_tokens"))
    elif getattr(usage, "prompt_tokens", None) is not None:
        counts = (token_count(usage.prompt_tokens, "prompt_tokens"),
                  token_count(getattr(usage, "completion_tokens", None), "completion_tokens"))
    else:
        raise MalformedResponse("its usage has no token counts")
    model = getattr(response, "model", None)
    return Usage(*counts, model if isinstance(model, str) else None)
