"""`resolve` and `ask`: which provider and key a request uses, and sending one."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import As, At, Json, Org, moment, read_stdin, vault_session
from byokctl.errors import UsageError
from byokctl.providers.registry import DEFAULT_RETRIES, DEFAULT_TIMEOUT


def resolve(org: Org, as_: As = None, at: At = None, json_: Json = False) -> None:
    """Show which provider, model and key a request for ORG would use, and why (no call made).

    With --at, the answer as of that moment (the gate, grace grant and fallback then, with the
    keys and settings stored now): see what happens when a grace grant ends, before it does.

    \b
    Example: byokctl resolve acme --as alice@acme.com
    Example: byokctl resolve acme --at 2027-01-01
    """
    from byokctl import clock

    when = moment(at) or clock.now()
    with vault_session() as vault:
        d = vault.resolve(org, as_, at=when)

    def human() -> None:
        key = f"{d.key.id} ({d.key.scope} key)" if d.key else "none"
        render.fields([
            ("org", d.org), *([("as of", f"{render.when(clock.iso(when))} UTC")] if at else []),
            ("mode", d.mode or "none"),
            ("provider", d.provider), ("model", d.model), ("key", key),
            ("fallback", d.fallback_reason),
            ("gate", f"plan {d.gate.plan}: " + ("BYOK allowed" if d.gate.allowed else "no BYOK")
             + (f", grace until {render.when(d.gate.grace_until)}" if d.gate.grace_active else "")),
        ])
        render.line("why:")
        for i, reason in enumerate(d.reasons, 1):
            render.line(f"  {i}. {reason}")

    render.emit(json_, {"at": clock.iso(when), **d.to_json()}, human)
    for w in d.warnings:
        render.warn(w)
    if d.error is not None:
        raise d.error


def ask(
    org: Org,
    prompt: Annotated[str | None, typer.Argument(
        metavar="PROMPT|-", help="The prompt; `-` or nothing reads it from stdin.")] = None,
    as_: As = None,
    system: Annotated[str | None, typer.Option("--system", help="A system prompt.")] = None,
    max_tokens: Annotated[int, typer.Option("--max-tokens", help="Most tokens to generate.")] = 1024,
    no_stream: Annotated[bool, typer.Option(
        "--no-stream", help="Print the answer when complete instead of as it arrives.")] = False,
    timeout: Annotated[float, typer.Option(
        "--timeout", metavar="SECONDS",
        help="Deadline of the whole call: every retry and the whole stream.")] = DEFAULT_TIMEOUT,
    retries: Annotated[int, typer.Option(
        "--retries", help="Retries on 429/5xx/network errors.")] = DEFAULT_RETRIES,
    json_: Json = False,
) -> None:
    """Send a prompt for ORG through the provider and key the rules resolve, and account for it.

    With `-`, or no prompt and piped input, the prompt is read from stdin.

    `--timeout` bounds the whole call, retries and streaming included, and an answer is cut
    off (exit 11) past 1 MiB of text or 32 MiB of response. In platform mode the call is
    admitted only if the org's balance, less what calls in flight have reserved, covers its
    estimated cost (at least one credit); a BYOK call likewise against the monthly budget.

    \b
    Example: byokctl ask acme "Summarise BYOK in one line" --no-stream
    """
    if prompt is None or prompt == "-":
        if prompt is None and sys.stdin.isatty():
            raise UsageError("Give a prompt, or `-` to read it from stdin")
        prompt = read_stdin("The prompt")
    stream = not no_stream and not json_
    printed = []

    def on_text(chunk: str) -> None:
        printed.append(chunk)
        render.raw(chunk)

    with vault_session() as vault:
        answer = vault.ask(org, prompt, member=as_, system=system, max_tokens=max_tokens,
                           timeout=timeout, retries=retries, stream=stream,
                           on_text=on_text if stream else None, on_warning=render.warn)
    if stream:
        sys.stdout.write("\n" if printed and not printed[-1].endswith("\n") else "")
    elif not json_:
        render.raw(answer.text + "\n")
    if json_:
        render.emit(True, answer, "")
    render.status(
        f"{answer.mode} · {answer.provider}/{answer.model} · key {answer.key_id} · "
        f"{answer.input_tokens}+{answer.output_tokens} tokens · ${answer.cost_usd:.6f}"
        + (f" · {answer.credits_charged} credit{'s' if answer.credits_charged != 1 else ''}"
           if answer.mode == "platform" else "")
        + (f" · fallback: {answer.fallback_reason}" if answer.fallback_reason else ""))


def register(root: typer.Typer) -> None:
    root.command("resolve")(resolve)
    root.command("ask")(ask)
