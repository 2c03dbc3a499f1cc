"""`apply FILE` (declarative provisioning) and `export` (the same file format, from the vault)."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import Json, read_stdin, session
from byokctl.errors import UsageError
from byokctl.services import apply as provisioning
from byokctl.services import apply_file
from byokctl.services import export as exporting

# Click rewraps help paragraphs; `\b` keeps the schema's columns as written.
_SCHEMA_HELP = "\n\n".join("\b\n" + part for part in apply_file.SCHEMA.split("\n\n"))

APPLY_HELP = f"""Converge the vault to a provisioning file (TOML or JSON), all or nothing.

Every change is made and audited as the matching command would make it, all in one
transaction: any error (unknown model, plan gate, missing environment variable, bad key)
changes nothing and exits with that error's code. Running the file again changes nothing.
Needs the master key (also for --dry-run, which compares key fingerprints). Platform
operator only. FILE may be - for stdin.

File format (TOML shown; JSON has the same structure):

{_SCHEMA_HELP}

\b
Example: byokctl apply provision.toml --dry-run
"""

EXPORT_HELP = """Print the vault's settings as an `apply` file (TOML, or JSON), without secrets.

Keys appear as entries naming the environment variable their secret was read from
(from_env as it was given to `apply`, or `key add --from-env VAR`); a key entered otherwise
(prompt, stdin) gets a name derived from its slot (BYOKCTL_KEY_ACME_ANTHROPIC,
BYOKCTL_KEY_ACME_ALICE_ACME_COM_OPENAI, BYOKCTL_PLATFORM_KEY_ANTHROPIC). So `byokctl export |
byokctl apply -` round-trips once those variables hold the secrets. Only the names are
stored, never a value. Needs no master key. Platform operator only.

\b
Example: byokctl export > provision.toml
"""

As = Annotated[str | None, typer.Option(
    "--as", metavar="EMAIL", help="A member acting with --as is refused (exit 4): provisioning is "
    "the platform operator's alone.")]


def read_source(file: str) -> tuple[str, str]:
    """The file's text and the name messages use for it (`-`: stdin)."""
    if file == "-":
        return read_stdin("The provisioning file"), "stdin"
    try:
        with open(file, encoding="utf-8") as f:
            return f.read(), file
    except UnicodeDecodeError:
        raise UsageError(f"{file} is not UTF-8 text", "save it as UTF-8 and run apply again") from None
    except OSError as exc:
        raise UsageError(f"Cannot read {file} ({exc.strerror})", "check the path") from None


def apply_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="TOML or JSON file, or - for stdin.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show the changes apply would make; write nothing.")] = False,
    prune: Annotated[bool, typer.Option(
        "--prune", help="Also remove members and keys the file's orgs do not list (never orgs).")]
    = False,
    test_keys: Annotated[bool, typer.Option(
        "--test-keys", help="Test each key to be added or rotated with its provider first "
        "(token-free); any refusal changes nothing.")] = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    text, source = read_source(file)
    with session(as_) as ctx, render.progress("Applying") as update:
        outcome = provisioning.run(ctx, text, source, dry_run=dry_run, prune=prune,
                                   test_keys=test_keys, progress=update)
    for warning in outcome.warnings:
        render.warn(warning)

    def human() -> None:
        changes = outcome.changes
        if not changes:
            render.line(f"No changes: the vault already matches {source}.")
            return
        render.table(["action", "org", "target", "detail"],
                     [(c.action, c.org or "—", c.target or "—", c.detail) for c in changes],
                     no_wrap=["action", "target"])
        noun = "change" if len(changes) == 1 else "changes"
        render.line(f"Dry run: {len(changes)} {noun} would be made; nothing was written."
                    if dry_run else f"Applied {len(changes)} {noun}.")

    render.emit(json_, outcome, human)
    for w in outcome.warnings:
        render.warn(w)


def export(
    format_: Annotated[str | None, typer.Option(
        "--format", metavar="toml|json", help="Output format (default toml; --json means json).",
        show_default=False)] = None,
    as_: As = None,
    json_: Json = False,
) -> None:
    if format_ not in (None, "toml", "json"):
        raise UsageError(f"Unknown format '{format_}'", "choose toml or json")
    if json_ and format_ == "toml":
        raise UsageError("--json prints JSON", "drop it or --format toml")
    as_json = json_ or format_ == "json"
    with session(as_) as ctx:  # each org is read from the open store as it is written
        snap = exporting.snapshot(ctx)
        render.emit(as_json, snap, lambda: render.raw_chunks(exporting.toml_chunks(snap)))


def register(root: typer.Typer) -> None:
    root.command("apply", help=APPLY_HELP)(apply_)
    root.command("export", help=EXPORT_HELP)(export)
