"""`emulator serve`: the loopback Anthropic/OpenAI emulator, for offline work and CI."""

from __future__ import annotations

import errno
import signal
import threading
from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import Json
from byokctl.errors import UsageError
from byokctl.providers.catalog import PROVIDERS

app = typer.Typer(help="A loopback emulator of the Anthropic and OpenAI APIs.", no_args_is_help=True)


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option("--port", min=0, max=65535,
                                      help="Port on 127.0.0.1 (0: any free port).")] = 0,
    valid_key: Annotated[list[str] | None, typer.Option(
        "--valid-key", metavar="[PROVIDER:]KEY",
        help="A key that succeeds (repeatable); prefix anthropic: or openai: to limit it to one "
             "provider. Other keys get 401.")] = None,
    key: Annotated[list[str] | None, typer.Option(
        "--key", metavar="[PROVIDER:]KEY=BEHAVIOUR",
        help="How to answer this key (repeatable): ok, stall (no answer for an hour), or an HTTP "
             "error status: 401 (rejected), 403, 429 (rate-limited), 500, 529 (overloaded)...; "
             "prefix anthropic: or openai: to limit it to one provider.")] = None,
    any_key: Annotated[bool, typer.Option("--any-key", help="Accept every non-empty key.")] = False,
    fail: Annotated[int | None, typer.Option(
        "--fail", metavar="STATUS", min=400, max=599,
        help="Answer this HTTP error (401, 403, 429, 500, 503, 529, ...) instead.")] = None,
    fail_times: Annotated[int | None, typer.Option(
        "--fail-times", metavar="N", min=1,
        help="Misbehave (--fail, --stall, ...) for the first N requests only.")] = None,
    retry_after: Annotated[float | None, typer.Option(
        "--retry-after", metavar="SECONDS", min=0,
        help="Send retry-after with --fail, and with each --key KEY=429.")] = None,
    stall: Annotated[float, typer.Option(
        "--stall", metavar="SECONDS", min=0, help="Wait this long before answering.")] = 0.0,
    malformed: Annotated[bool, typer.Option("--malformed", help="Answer 200 with broken JSON.")] = False,
    reset_mid_stream: Annotated[bool, typer.Option(
        "--reset-mid-stream", help="Reset the connection after the first piece of text.")] = False,
    json_: Json = False,
) -> None:
    """Serve the Anthropic Messages and OpenAI Chat Completions APIs on 127.0.0.1 until Ctrl-C.

    Prints one base URL per provider, to use as an org's --base-url, with `key test
    --base-url` or with the SDKs. One emulator serves good, rejected, rate-limited
    and stalling keys side by side (--key KEY=BEHAVIOUR); other keys get 401. The
    example keys below are made up, and shaped so that `key add` accepts them.

    \b
    Example: byokctl emulator serve --port 8765 --key sk-ant-emu-good-000000=ok
    Example: byokctl emulator serve --key sk-emu-openai-good-0000=ok --key sk-emu-openai-busy-0000=429
    Example: byokctl emulator serve --key anthropic:sk-ant-emu-gone-00000=401 --valid-key sk-emu-any-000000000
    """
    from byokctl.providers.emulator import Config, Emulator, Fault

    config = Config(port=port, accept_any_key=any_key)
    for item in valid_key or []:
        provider, secret = _scoped(item)
        for p in [provider] if provider else PROVIDERS:
            config.valid_keys[p].add(secret)
    served: dict[tuple[str | None, str], str] = {}
    for item in key or []:
        provider, secret, behaviour = _key_behaviour(item)
        if served.setdefault((provider, secret), behaviour) != behaviour:
            raise UsageError(f"--key gives two behaviours for the key ending {secret[-4:]}",
                             "give each key once")
        config.serve_key(secret, behaviour, provider, retry_after)
    if fail or stall or malformed or reset_mid_stream:
        config.faults.append(Fault(status=fail, retry_after=retry_after, stall=stall, malformed=malformed,
                                   reset_mid_stream=reset_mid_stream, times=fail_times))

    emulator = Emulator(config, on_request=lambda r: render.status(
        f"{r.method} {r.path} → {r.status}{' (stream)' if r.stream else ''}"))
    try:
        emulator.bind()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"Port {port} on 127.0.0.1 is already in use", "pick another with --port, "
                             "or --port 0 for any free one") from None
        raise

    # Ctrl-C and SIGTERM only set a flag (installed before the URLs are printed, as whoever reads
    # them may stop us straight away): an exception raised mid-print could garble the output.
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, handler in previous.items():
        if handler is not signal.SIG_IGN:  # a background job keeps ignoring Ctrl-C
            signal.signal(sig, lambda *_: stop.set())
    try:
        emulator.start()
        urls = {"anthropic_base_url": emulator.anthropic_base_url,
                "openai_base_url": emulator.openai_base_url, "port": emulator.port}
        render.emit(json_, urls, lambda: render.fields([
            ("anthropic", emulator.anthropic_base_url), ("openai", emulator.openai_base_url)]))
        if not any_key and not valid_key and not key:
            render.warn("no --valid-key given: every key will be answered with 401 (pass --valid-key "
                        "KEY, --key KEY=ok or --any-key)")
        render.status("Serving on 127.0.0.1 only; press Ctrl-C to stop.")
        while not stop.wait(0.2):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            if handler is not None:  # None: not set from Python, nothing to restore
                signal.signal(sig, handler)
    render.status("Emulator stopped.")


def _scoped(item: str) -> tuple[str | None, str]:
    """`[PROVIDER:]KEY` → (provider or None: both, key)."""
    provider, sep, secret = item.partition(":")
    return (provider, secret) if sep and provider in PROVIDERS else (None, item)


def _key_behaviour(item: str) -> tuple[str | None, str, str]:
    """`[PROVIDER:]KEY=BEHAVIOUR` → (provider or None, key, behaviour); never echoes the key."""
    from byokctl.providers.emulator import KEY_BEHAVIOURS

    spec, sep, behaviour = item.rpartition("=")
    provider, secret = _scoped(spec)
    choices = ", ".join(KEY_BEHAVIOURS)
    if not sep or not secret:
        raise UsageError("--key takes KEY=BEHAVIOUR (e.g. sk-ant-emu-busy-000000=429)",
                         f"end it with = and one of {choices}, or use --valid-key KEY")
    if behaviour not in ("ok", "stall") and not (behaviour.isdigit() and 400 <= int(behaviour) <= 599):
        raise UsageError(f"--key for the key ending {secret[-4:]}: '{behaviour[:12]}' is no "
                         "behaviour", f"use one of {choices} (any HTTP status 400-599 works)")
    return provider, secret, behaviour


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="emulator")
