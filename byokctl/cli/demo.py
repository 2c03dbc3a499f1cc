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

DEMO_KEY_VAR = "BYOKCTL_DEMO_ANTHROPIC_KEY"


@dataclass(frozen=True)
class Step:
    say: str
    args: tuple[str, ...]
    expect: int = 0


STEPS: tuple[Step, ...] = (
    Step("Create the vault; its master key comes from $BYOKCTL_MASTER_KEY here (CI-style).",
         ("init",)),
    Step("Provision an org on the growth plan (BYOK included) with 100 credits.",
         ("org", "create", "acme", "--name", "Acme Inc", "--plan", "growth", "--credits", "100")),
    Step("Add an org admin and an interviewer.",
         ("member", "add", "acme", "alice@acme.com", "--role", "admin")),
    Step("", ("member", "add", "acme", "ivan@acme.com", "--role", "interviewer")),
    Step("Store the org's Anthropic key, read from an environment variable (never from argv).",
         ("key", "add", "acme", "--provider", "anthropic", "--from-env", DEMO_KEY_VAR)),
    Step("Switch the org to its own Anthropic account; the alias is pinned to a model id.",
         ("org", "set-provider", "acme", "anthropic", "--model", "sonnet", "--yes")),
    Step("Keys are listed by hint and fingerprint; the secret is never shown again.",
         ("key", "list", "acme")),
    Step("An interviewer may not redirect the org's AI traffic (exit 4).",
         ("org", "set-provider", "acme", "openai", "--yes", "--as", "ivan@acme.com"), expect=4),
    Step("Downgrade to starter with a 14-day grace grant: BYOK keeps working until it ends.",
         ("plan", "set", "acme", "starter", "--grace-days", "14")),
    Step("", ("org", "show", "acme")),
    Step("Revoke the grace: requests now fall back to platform credits (the setting is kept).",
         ("plan", "revoke-grace", "acme")),
    Step("", ("org", "show", "acme")),
    Step("Every change is in the tamper-evident audit log...", ("audit", "log", "--limit", "6")),
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

    Example: byokctl demo
    """
    master = base64.b64encode(secrets.token_bytes(32)).decode()
    demo_key = "sk-ant-api03-demo" + secrets.token_urlsafe(30)
    results = []
    with _scratch(keep) as where, _env(BYOKCTL_MASTER_KEY=master, **{DEMO_KEY_VAR: demo_key}):
        db = str(where / "vault.db")
        if (where / "vault.db").exists():
            raise Conflict(f"{db} already exists; give --keep an empty directory")
        for step in STEPS:
            args = ["--db", db, *step.args] + (["--json"] if json_ else [])
            if not json_:
                if step.say:
                    render.line("")
                    render.line(f"# {step.say}", style="dim")
                render.line(f"$ byokctl {shlex.join(step.args)}", style="bold")
            code, out = _run(args, capture=json_)
            if code != step.expect:
                raise ByokError(f"The demo stopped at `byokctl {shlex.join(step.args)}` (exit "
                                f"{code}); please report it")
            results.append({"command": "byokctl " + shlex.join(step.args), "exit_code": code,
                            "output": json.loads(out) if out.strip() else None})
    summary = {"vault": db if keep else None, "steps": results}
    render.emit(json_, summary, lambda: render.line(
        "\nDone: " + (f"the demo vault is kept at {db} (its master key was temporary)."
                      if keep else "the throwaway vault is gone.")))


def register(root: typer.Typer) -> None:
    root.command("demo")(demo)
