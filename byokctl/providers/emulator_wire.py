"""The wire formats the emulator serves: Anthropic Messages and OpenAI Chat Completions requests
checked and answered as the real APIs do, as plain data (no sockets here).

Replies and token counts are deterministic: the reply echoes the prompt, and a token is a
whitespace-separated word, so tests can assert exact usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from byokctl.providers import catalog, registry

# (chunk of the body, whether it carries text): the server may misbehave after the first text.
Events = Iterator[tuple[bytes, bool]]

_ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 408: "timeout_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 503: "api_error", 504: "timeout_error",
    529: "overloaded_error",
}
_OPENAI_ERRORS = {  # status -> (type, code)
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"), 429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None), 503: ("server_error", None),
}
_MESSAGES = {
    400: "The request is invalid.", 402: "Your credit balance is too low.",
    403: "Your API key does not have permission to use this resource.",
    404: "The requested resource was not found.", 408: "The request timed out.",
    429: "Rate limit reached for requests; please try again later.",
    500: "Internal server error.", 502: "Bad gateway.", 503: "The service is temporarily unavailable.",
    504: "The request timed out.", 529: "Overloaded",
}


@dataclass
class Answer:
    """What to send: an error (status >= 400, `message`), a JSON body, or a stream of events."""

    status: int = 200
    body: Any = None
    events: Callable[[], Events] | None = None
    broken_event: bytes = b""  # an event that is not valid JSON, for the `malformed` fault
    message: str | None = None


def failed(status: int, message: str | None = None) -> Answer:
    return Answer(status=status, message=message)


def count_tokens(text: str) -> int:
    """The emulator's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def reply_for(provider: str, model: str, prompt: str) -> str:
    """The deterministic answer to `prompt`."""
    return f"Emulated {registry.label(provider)} reply from {model}: {prompt}".strip()


def error_body(provider: str, status: int, message: str | None, request_id: str) -> dict:
    """An error in the provider's own JSON shape."""
    message = message or _MESSAGES.get(status) or f"HTTP {status}"
    if provider == "openai":
        etype, code = _OPENAI_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None))
        return {"error": {"message": message, "type": etype, "param": None, "code": code}}
    etype = _ANTHROPIC_ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": etype, "message": message}, "request_id": request_id}


def rejected_key_message(provider: str, key: str | None) -> str:
    """The 401 message. The real APIs are vaguer or mask the key; echoing it whole lets tests
    prove that clients redact what a provider says."""
    if not key:
        return ("x-api-key header is required" if provider == "anthropic" else
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
    if provider == "anthropic":
        return f"invalid x-api-key: {key}"
    return (f"Incorrect API key provided: {key}. You can find your API key at "
            "https://platform.openai.com/account/api-keys.")


def model_names(provider: str) -> dict[str, str]:
    """Every model name the real API accepts, to the pinned id it answers with: each pinned id,
    and each alias that is its undated name (`claude-sonnet-4-5` for
    `claude-sonnet-4-5-20250929`, `gpt-5-mini` for `gpt-5-mini-2025-08-07`). byokctl's own
    short aliases (`sonnet`) are not API names: the APIs answer them 404, and so does this."""
    names: dict[str, str] = {}
    for m in catalog.load().for_provider(provider):
        names[m.id] = m.id
        for alias in m.aliases:
            if m.id.startswith(alias + "-"):
                names.setdefault(alias, m.id)
    return names


def endpoint_of(rest: str) -> str:
    """What a Fault can be scoped to: "models", "completions" or "other"."""
    if rest.startswith("/v1/models"):
        return "models"
    return "completions" if rest in ("/v1/messages", "/v1/chat/completions") else "other"


# -- Anthropic ---------------------------------------------------------------------------------
def anthropic(method: str, rest: str, query: dict[str, list[str]], body: dict, stream: bool,
              new_id: Callable[[str], str]) -> Answer:
    models = [m.id for m in catalog.load().for_provider("anthropic")]
    if method == "GET" and rest == "/v1/models":
        after = (query.get("after_id") or [None])[0]
        try:
            limit = int((query.get("limit") or ["20"])[0])
        except ValueError:
            return failed(400, "limit: Input should be a valid integer")
        start = models.index(after) + 1 if after in models else 0
        page = models[start:start + limit]
        return Answer(body={"data": [_anthropic_model(m) for m in page],
                            "has_more": start + limit < len(models),
                            "first_id": page[0] if page else None, "last_id": page[-1] if page else None})
    names = model_names("anthropic")
    if method == "GET" and rest.startswith("/v1/models/"):
        model = rest.removeprefix("/v1/models/")
        return (Answer(body=_anthropic_model(names[model])) if model in names
                else failed(404, f"model: {model}"))
    if method == "POST" and rest == "/v1/messages":
        return _anthropic_messages(body, stream, names, new_id("msg_emu_"))
    return failed(404, f"Not found: {method} {rest}")


def _anthropic_messages(body: dict, stream: bool, names: dict[str, str], msg_id: str) -> Answer:
    model, max_tokens, messages = body.get("model"), body.get("max_tokens"), body.get("messages")
    if not isinstance(model, str) or not model:
        return failed(400, "model: Field required")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        return failed(400, "max_tokens: Field required (a positive integer)")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return failed(400, "messages: at least one message is required")
    if model not in names:
        return failed(404, f"model: {model}")
    model = names[model]  # the API answers with the pinned id an alias stands for
    prompt = text_of(messages[-1].get("content"))
    input_tokens = max(1, count_tokens(text_of(body.get("system")))
                       + sum(count_tokens(text_of(m.get("content"))) for m in messages))
    words, cut = _truncate(reply_for("anthropic", model, prompt), max_tokens)
    stop_reason = "max_tokens" if cut else "end_turn"
    if not stream:
        return Answer(body={
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": " ".join(words)}],
            "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": len(words)},
        })

    def events() -> Events:
        yield _sse("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}), False
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}), False
        yield _sse("ping", {"type": "ping"}), False
        for i, word in enumerate(words):
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
                "type": "text_delta", "text": word if i == 0 else " " + word}}), True
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0}), False
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                                     "usage": {"output_tokens": len(words)}}), False
        yield _sse("message_stop", {"type": "message_stop"}), False

    return Answer(events=events, broken_event=b'event: content_block_delta\ndata: {"type": "content_\n\n')


def _anthropic_model(model_id: str) -> dict:
    models = catalog.load().for_provider("anthropic")
    alias = next((m.aliases[0] for m in models if m.id == model_id), model_id)
    return {"type": "model", "id": model_id, "display_name": f"Claude {alias.title()}",
            "created_at": "2025-01-01T00:00:00Z", "lifecycle": "active"}


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


# -- OpenAI ------------------------------------------------------------------------------------
def openai(method: str, rest: str, query: dict[str, list[str]], body: dict, stream: bool,
           new_id: Callable[[str], str]) -> Answer:
    models = [m.id for m in catalog.load().for_provider("openai")]
    if method == "GET" and rest == "/v1/models":
        return Answer(body={"object": "list", "data": [_openai_model(m) for m in models]})
    names = model_names("openai")
    if method == "GET" and rest.startswith("/v1/models/"):
        model = rest.removeprefix("/v1/models/")  # an alias is a model of its own there
        return Answer(body=_openai_model(model)) if model in names else failed(404, _no_model(model))
    if method == "POST" and rest == "/v1/chat/completions":
        return _openai_chat(body, stream, names, new_id("chatcmpl-emu"))
    return failed(404, f"Invalid URL ({method} {rest})")


def _openai_chat(body: dict, stream: bool, names: dict[str, str], cid: str) -> Answer:
    model, messages = body.get("model"), body.get("messages")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if not isinstance(model, str) or not model:
        return failed(400, "you must provide a model parameter")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        return failed(400, "'messages' must contain at least one message")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        return failed(400, "max_completion_tokens must be a positive integer")
    if model not in names:
        return failed(404, _no_model(model))
    model = names[model]  # the API answers with the pinned id an alias stands for
    users = [m for m in messages if m.get("role") == "user"]
    prompt = text_of(users[-1].get("content")) if users else ""
    prompt_tokens = max(1, sum(count_tokens(text_of(m.get("content"))) for m in messages))
    words, cut = _truncate(reply_for("openai", model, prompt), limit or 1_000_000)
    finish = "length" if cut else "stop"
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
             "total_tokens": prompt_tokens + len(words)}
    created = int(time.time())
    if not stream:
        return Answer(body={
            "id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(words),
                                                 "refusal": None, "annotations": []},
                         "logprobs": None, "finish_reason": finish}],
            "usage": usage, "service_tier": "default", "system_fingerprint": None,
        })
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(choices: list[dict], **extra: Any) -> bytes:
        data = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "service_tier": "default", "system_fingerprint": None, "choices": choices, **extra}
        if include_usage and "usage" not in extra:
            data["usage"] = None  # every chunk but the last, as the API does
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    def events() -> Events:
        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
                      "logprobs": None, "finish_reason": None}]), False
        for i, word in enumerate(words):
            yield chunk([{"index": 0, "delta": {"content": word if i == 0 else " " + word},
                          "logprobs": None, "finish_reason": None}]), True
        yield chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}]), False
        if include_usage:
            yield chunk([], usage=usage), False
        yield b"data: [DONE]\n\n", False

    return Answer(events=events, broken_event=b'data: {"id": "' + cid.encode() + b'", "choices": [{\n\n')


def _openai_model(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 1735689600, "owned_by": "openai"}


def _no_model(model: str) -> str:
    return f"The model `{model}` does not exist or you do not have access to it."


# -- shared ------------------------------------------------------------------------------------
def text_of(content: Any) -> str:
    """The text of a message's content: a string or a list of text blocks/parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _truncate(text: str, limit: int) -> tuple[list[str], bool]:
    words = text.split()
    return words[:limit], len(words) > limit
