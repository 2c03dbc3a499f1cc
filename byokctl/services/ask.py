"""`ask`: resolve, call the provider, account for it. One usage record per call, never any text."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from byokctl.domain.resolution import Decision, Facts, after_provider_error
from byokctl.errors import ByokError, KeyRejected, RateLimited
from byokctl.providers import catalog, registry
from byokctl.services import admission, calls, keys, rules
from byokctl.services.context import Context
from byokctl.services.resolution import resolve_for

ROLES = ("user", "assistant")  # a conversation's turns; "system" turns go to the system prompt


@dataclass
class Request:
    prompt: str
    system: str | None = None
    max_tokens: int = 1024
    stream: bool = True
    timeout: float = registry.DEFAULT_TIMEOUT
    retries: int = registry.DEFAULT_RETRIES
    # A conversation instead of one prompt: `{"role": "user"|"assistant"|"system", "content":
    # text}` each, the last one the user's. `system` turns join the system prompt.
    messages: Sequence[Mapping[str, str]] | None = None


@dataclass(frozen=True)
class Recorded:
    """What a call came to once recorded: the `ask --json` fields but the text (for a call the
    platform made itself, `Call.record`, byokctl never sees it), and the latency from admission
    to record. Never a secret."""

    mode: str
    provider: str
    model: str
    key_id: str
    fallback_reason: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    credits_charged: int
    latency_ms: int

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class Answer(Recorded):
    """An answered `ask` and its accounting (SPEC §4 `ask --json`): its record and its text;
    never a secret."""

    text: str

    def to_json(self) -> dict:
        """The fields of `byokctl ask --json` (the text first, as it always came)."""
        fields = asdict(self)
        return {"text": fields.pop("text"), **fields}

    to_dict = to_json


def turns(req: Request) -> tuple[str | None, list[dict[str, str]]]:
    """(system prompt, the conversation) the provider is sent; UsageError for a malformed one."""
    system, convo = _turns(req)
    for what, text in (("The system prompt", system), *(("The prompt", m["content"]) for m in convo)):
        try:
            if isinstance(text, str):
                text.encode()
        except UnicodeEncodeError:  # a lone surrogate: bytes that were not UTF-8, decoded leniently
            raise rules.UsageError(f"{what} is not valid text (it holds bytes that are not UTF-8)",
                                   "pass it as UTF-8 text") from None
    return system, convo


def _turns(req: Request) -> tuple[str | None, list[dict[str, str]]]:
    if req.messages is None:
        if not isinstance(req.prompt, str) or not req.prompt.strip():
            raise rules.UsageError("The prompt is empty", "pass it as an argument or on stdin with -")
        return req.system, [{"role": "user", "content": req.prompt}]
    systems = [req.system] if req.system else []
    convo: list[dict[str, str]] = []
    for i, m in enumerate(req.messages):
        role = m.get("role") if isinstance(m, Mapping) else None
        content = m.get("content") if isinstance(m, Mapping) else None
        if role not in (*ROLES, "system") or not isinstance(content, str):
            raise rules.UsageError(f"Message {i} is not {{'role': 'user'|'assistant'|'system', "
                                   "'content': text}", "pass text content with one of those roles")
        if role == "system":
            systems.append(content)
        else:
            convo.append({"role": role, "content": content})
    if not convo or convo[-1]["role"] != "user" or not convo[-1]["content"].strip():
        raise rules.UsageError("The conversation does not end with a user message that has text",
                               "end it with {'role': 'user', 'content': ...}")
    return ("\n\n".join(systems) or None), convo


def check(req: Request) -> tuple[str | None, list[dict[str, str]]]:
    """Every limit of a request, before anything is resolved; the turns it sends."""
    sent = turns(req)
    if req.max_tokens < 1:
        raise rules.UsageError(f"--max-tokens must be at least 1, not {req.max_tokens}")
    keys.check_limits(req.timeout, req.retries)
    return sent


def prepare(ctx: Context, org: str, req: Request, at: datetime | None = None
            ) -> tuple[Decision, Facts, str | None, list[dict[str, str]]]:
    """Steps before any call: the request's limits, the decision for the context's actor on
    `org` (refused with Integrity if a row it rests on was changed outside byokctl), the facts
    it was made from, and the (system prompt, turns) to send."""
    system, convo = check(req)
    decision, f = resolve_for(ctx, org, at=at)
    return calls.verified(ctx, decision, f), f, system, convo


def fallback(f: Facts, d: Decision, exc: ByokError) -> Decision | None:
    """The one retry on platform mode the `provider-error` policy allows after the provider
    refused the key (401/403/429), or None: the error stands."""
    if not isinstance(exc, KeyRejected | RateLimited):
        return None
    return after_provider_error(f, d, catalog.load())


def admit_for(ctx: Context, d: Decision, req: Request, system: str | None,
              convo: list[dict[str, str]]) -> calls.Admitted:
    """Admit `req` on decision `d`: reserved at its most possible cost, secret decrypted."""
    text = "\n".join(m["content"] for m in convo)

    def estimate(provider: str, model: str) -> float:
        return admission.estimate_usd(provider, model, prompt=text, system=system,
                                      max_tokens=req.max_tokens)

    return calls.admit(ctx, d, estimate_usd=estimate, deadline_s=req.timeout)


def answer(call: calls.Admitted, text: str, done: calls.Settled) -> Answer:
    d = call.decision
    assert d.key is not None and d.provider and d.model and d.mode
    return Answer(d.mode, d.provider, d.model, d.key.id, d.fallback_reason, done.input_tokens,
                  done.output_tokens, done.cost_usd, done.credits_charged, done.latency_ms, text=text)


def ask(ctx: Context, org: str, req: Request, *, on_text: Callable[[str], None] | None = None,
        on_warning: Callable[[str], None] = lambda _: None, at: datetime | None = None) -> Answer:
    """Run the whole chain for one request by the context's actor on `org`: resolve, admit,
    call, record and charge; the provider-error policy's one retry on platform mode."""
    decision, f, system, convo = prepare(ctx, org, req, at)
    for w in decision.warnings:
        on_warning(w)
    try:
        return _call(ctx, decision, req, system, convo, on_text, on_warning)
    except ByokError as exc:
        retry = fallback(f, decision, exc)
        if retry is None:
            raise
        on_warning(retry.warnings[-1])
        return _call(ctx, retry, req, system, convo, on_text, on_warning)


def _call(ctx: Context, d: Decision, req: Request, system: str | None, convo: list[dict[str, str]],
          on_text: Callable[[str], None] | None, on_warning: Callable[[str], None]) -> Answer:
    call = admit_for(ctx, d, req, system, convo)
    assert d.key is not None and d.provider and d.model
    try:
        try:
            result = registry.get(d.provider).complete(
                secret=call.secret, model=d.model, messages=convo, system=system,
                max_tokens=req.max_tokens, base_url=d.base_url, timeout=req.timeout,
                retries=req.retries, stream=req.stream, on_text=on_text, key_id=d.key.id,
                clients=ctx.clients)
        except ByokError as exc:
            calls.fail(ctx, call, exc)
            raise
        done = calls.settle(ctx, call, result.input_tokens, result.output_tokens,
                            on_warning=on_warning)
    except BaseException:
        # Settled or released already, unless something unforeseen stopped the call (a bug,
        # Ctrl-C): then give the reservation back now rather than at its expiry.
        calls.release(ctx, call.held)
        raise
    return answer(call, result.text, done)
