"""`demo`: the whole flow, offline, in a throwaway vault, shown as the commands a user would type."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import secrets
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import Json
from byokctl.errors import ByokError, Conflict

ANTHROPIC_VAR = "BYOKCTL_DEMO_ANTHROPIC_KEY"
OPENAI_VAR = "BYOKCTL_DEMO_OPENAI_KEY"


@dataclass(frozen=True)
class Step:
    say: str
    args: tuple[str, ...]
    expect: int = 0


def steps(anthropic_url: str, openai_url: str) -> tuple[Step, ...]:
    """The tour, against the emulator's base URLs."""
    return (
        Step("Create the vault; its master key comes from $BYOKCTL_MASTER_KEY here (CI-style).",
             ("init",)),
        Step("Provision an org on the growth plan (BYOK included) with 100 credits.",
             ("org", "create", "acme", "--name", "Acme Inc", "--plan", "growth", "--credits", "100")),
        Step("Add an org admin and an interviewer.",
             ("member", "add", "acme", "alice@acme.com", "--role", "admin")),
        Step("", ("member", "add", "acme", "ivan@acme.com", "--role", "interviewer")),
        Step("Switch the org to its own Anthropic account (the emulator stands in for it); the "
             "alias is pinned to a model id.",
             ("org", "set-provider", "acme", "anthropic", "--model", "sonnet", "--base-url",
              anthropic_url, "--yes")),
        Step("Store the org's key from an environment variable (never argv), tested first with a "
             "token-free call.",
             ("key", "add", "acme", "--provider", "anthropic", "--from-env", ANTHROPIC_VAR, "--test")),
        Step("The platform's own OpenAI key and default model, for orgs that pay in credits.",
             ("key", "add", "--platform", "--provider", "openai", "--from-env", OPENAI_VAR)),
        Step("", ("platform", "set-default", "openai", "--model", "gpt-5-mini", "--base-url",
                  openai_url)),
        Step("Keys are listed by hint and fingerprint; the secret is never shown again.",
             ("key", "list")),
        Step("Which provider and key would a request use, and why?", ("resolve", "acme")),
        Step("Ask: the answer streams from the org's own Anthropic account; no credits are spent.",
             ("ask", "acme", "Explain bring-your-own-key in one sentence")),
        Step("An interviewer may not redirect the org's AI traffic (exit 4).",
             ("org", "set-provider", "acme", "openai", "--yes", "--as", "ivan@acme.com"), expect=4),
        Step("Downgrade to starter: BYOK is no longer included, so requests fall back to credits "
             "(the setting is kept).", ("plan", "set", "acme", "starter")),
        Step("", ("resolve", "acme")),
        Step("", ("ask", "acme", "Explain bring-your-own-key in one sentence", "--no-stream")),
        Step("A 14-day grace grant restores BYOK until it ends.",
             ("plan", "grant-grace", "acme", "--days", "14", "--reason", "contract renewal")),
        Step("", ("org", "show", "acme")),
        Step("Usage: one record per call, tokens and cost, never the prompt or the answer.",
             ("usage", "show", "acme", "--by", "mode")),
        Step("Every change is in the tamper-evident audit log...",
             ("audit", "log", "--org", "acme", "--limit", "6")),
        Step("...and the chain verifies.", ("audit", "verify")),
    )


@contextlib.contextmanager
def _scratch(keep: str | None) -> Iterator[Path]:
    if keep:
        path = Path(keep).expanduser()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield path
    else:
        with tempfile.TemporaryDirectory(prefix="byokctl-demo-") as d:
            yield Path(d)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(args: list[str], capture: bool) -> tuple[int, str]:
    from typer.main import get_command

    from byokctl.cli import app

    if not capture:
        return get_command(app).main(args=args, prog_name="byokctl", standalone_mode=False), ""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = get_command(app).main(args=args, prog_name="byokctl", standalone_mode=False)
    return code, out.getvalue()


def demo(
    keep: Annotated[str | None, typer.Option(
        "--keep", metavar="DIR", help="Keep the demo vault in DIR instead of a temp dir.")] = None,
    json_: Json = False,
) -> None:
    """Walk through the whole flow offline, in a throwaway vault, command by command.

    \b
    Example: byokctl demo
    """
    from byokctl.providers.emulator import Config, Emulator

    master = base64.b64encode(secrets.token_bytes(32)).decode()
    demo_keys = {"anthropic": "sk-ant-api03-demo" + secrets.token_urlsafe(30),
                 "openai": "sk-proj-demo" + secrets.token_urlsafe(30)}
    results = []
    emulator = Emulator(Config(valid_keys={p: {k} for p, k in demo_keys.items()})).start()
    try:
        with _scratch(keep) as where, _env(BYOKCTL_MASTER_KEY=master,
                                           **{ANTHROPIC_VAR: demo_keys["anthropic"],
                                              OPENAI_VAR: demo_keys["openai"]}):
            db = str(where / "vault.db")
            if (where / "vault.db").exists():
                raise Conflict(f"{db} already exists", "give --keep an empty directory")
            if not json_:
                render.line(f"# A loopback emulator of both provider APIs is listening on "
                            f"127.0.0.1:{emulator.port}: nothing here leaves this machine.",
                            style="dim")
            for step in steps(emulator.anthropic_base_url, emulator.openai_base_url):
                results.append(_step(step, db, json_))
    finally:
        emulator.stop()
    summary = {"vault": db if keep else None, "steps": results}
    render.emit(json_, summary, lambda: render.line(
        "\nDone: " + (f"the demo vault is kept at {db} (its master key was temporary)."
                      if keep else "the throwaway vault is gone.")))


def _step(step: Step, db: str, json_: bool) -> dict:
    args = ["--db", db, *step.args] + (["--json"] if json_ else [])
    if not json_:
        if step.say:
            render.line("")
            render.line(f"# {step.say}", style="dim")
        render.line(f"$ byokctl {shlex.join(step.args)}", style="bold")
    code, out = _run(args, capture=json_)
    if code != step.expect:
        raise ByokError(f"The demo stopped at `byokctl {shlex.join(step.args)}` (exit {code})",
                        "please report it")
    return {"command": "byokctl " + shlex.join(step.args), "exit_code": code,
            "output": json.loads(out) if out.strip() else None}


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
