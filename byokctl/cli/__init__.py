"""The `byokctl` command: the root app, its sub-command groups, and the one place that turns
errors into messages and exit codes."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from byokctl import __version__
from byokctl.cli import render
from byokctl.cli.common import STATE
from byokctl.errors import ByokError, ExitCode


class ByokGroup(TyperGroup):
    """Runs the command non-standalone so every failure passes through `_fail`."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in argv
        try:
            rv = super().main(args=argv, prog_name=prog_name or "byokctl",
                              complete_var=complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
            if code == 130:
                render.error("Interrupted.", "interrupted", as_json)
        except ByokError as exc:
            render.error(exc.message, exc.code.label, as_json)
            code = int(exc.code)
        except typer.Abort:
            render.error("Aborted.", "interrupted", as_json)
            code = 130
        except KeyboardInterrupt:
            render.error("Interrupted.", "interrupted", as_json)
            code = 130
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            code = _fail(exc, as_json)
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(exc: Exception, as_json: bool) -> int:
    from typer import _click

    if isinstance(exc, _click.exceptions.ClickException):
        message = exc.format_message().rstrip(".")
        ctx = getattr(exc, "ctx", None)
        if ctx is not None:
            message += f"; see `{ctx.command_path} --help`"
        render.error(message, ExitCode.USAGE.label if exc.exit_code == 2 else "internal", as_json)
        return exc.exit_code
    if isinstance(exc, BrokenPipeError):
        return 0
    if getattr(exc, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        # Damage found past the checks made on opening (a page of one table, say).
        render.error("The vault file is damaged (database disk image is malformed); restore it "
                     "from a backup and run `byokctl vault check` on it", ExitCode.INTEGRITY.label,
                     as_json)
        return int(ExitCode.INTEGRITY)
    # A bug. Never print the exception's text or a traceback: either could carry a secret.
    detail = f" ({type(exc).__name__})"
    if os.environ.get("BYOKCTL_DEBUG"):
        detail = f" ({type(exc).__name__}: {exc})"
    render.error(f"byokctl hit an internal error{detail}; please report it with the command "
                 "you ran", ExitCode.INTERNAL.label, as_json)
    return int(ExitCode.INTERNAL)


app = typer.Typer(
    cls=ByokGroup,
    name="byokctl",
    help="Administer a bring-your-own-AI-key platform from a local encrypted vault.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"byokctl {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    db: Annotated[str | None, typer.Option(
        "--db", metavar="PATH", help="Vault file (default: $BYOKCTL_DB, $BYOKCTL_HOME/vault.db, "
        "or the user data dir).", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Drop status lines on stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Administer a bring-your-own-AI-key platform from a local encrypted vault.

    Example: byokctl init && byokctl org create acme --plan growth
    """
    STATE["db"] = db
    render.QUIET = quiet


def _register() -> None:
    """Each command module adds its own commands; the order here is the order in `--help`."""
    from byokctl.cli import (
        ask,
        audit,
        credits,
        demo,
        key,
        member,
        models,
        org,
        plan,
        platform,
        usage,
        vault,
    )

    modules = (vault, org, member, key, plan, credits, platform, models, ask, usage, audit, demo)
    for module in modules:
        module.register(app)


_register()


def main() -> None:
    app()
