"""Options shared by every command, and opening a service context for one."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from byokctl.cli import complete
from byokctl.services.context import Context, open_context

if TYPE_CHECKING:
    from datetime import datetime

    from byokctl.api.vault import Vault

# The root's options, as the root (or, given after the subcommand, the command) read them.
STATE: dict[str, Any] = {"db": None, "json": False}


def _json_given(value: bool) -> bool:
    """A command's `--json`, or the root's (`byokctl --json org list`)."""
    return bool(value or STATE["json"])


Json = Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout.",
                                    callback=_json_given)]
As = Annotated[
    str | None,
    typer.Option("--as", metavar="EMAIL", help="Act as this member of the org (their role applies)."),
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
Org = Annotated[str, typer.Argument(metavar="ORG", help="The org's slug.",
                                    autocompletion=complete.org_slugs)]
At = Annotated[str | None, typer.Option(
    "--at", metavar="DATE", help="Answer as of this moment, past or future: a date (YYYY-MM-DD, "
    "its start, UTC) or an ISO date-time (2026-12-31T18:00Z).")]


def moment(at: str | None) -> datetime | None:
    """The `--at` option's moment, or None (now); a bad date is exit 2 naming the format."""
    if at is None:
        return None
    from byokctl.services import rules

    return rules.parse_when(at)


def refuse_password_on_argv(db: str | None, option: str) -> None:
    """A database password belongs in $PGPASSWORD, ~/.pgpass or $BYOKCTL_DB, never in a
    command line, which `ps` shows every user of the machine (the value is not repeated)."""
    from byokctl.store import password_in

    if password_in(db):
        from byokctl.errors import UsageError

        raise UsageError(f"The database URL given to {option} carries a password, which every user "
                         "of this machine can read in the process list",
                         "drop it from the URL and put it in $PGPASSWORD or ~/.pgpass (or give the "
                         "whole URL in $BYOKCTL_DB)")


@contextmanager
def session(as_email: str | None = None) -> Iterator[Context]:
    ctx = open_context(STATE["db"], as_email)
    try:
        yield ctx
    finally:
        ctx.close()


@contextmanager
def vault_session() -> Iterator[Vault]:
    """The vault `--db` names, through the Python API (`byokctl.Vault`), for the commands that
    are its clients (`resolve`, `ask`, `key test`): one implementation of the chain."""
    from byokctl.api.vault import Vault

    with Vault.open(STATE["db"]) as vault:
        yield vault


def read_stdin(what: str) -> str:
    """All of stdin as UTF-8 text. Bytes that are not UTF-8 are refused here: decoded with the
    locale's surrogate escapes they would reach SQLite or a provider's JSON and fail there."""
    from byokctl.errors import UsageError

    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # a text-only stream (already decoded)
        text = sys.stdin.read()
    else:
        try:
            text = raw.read().decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{what} on stdin is not UTF-8 text", "send it as UTF-8") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} on stdin is not UTF-8 text", "send it as UTF-8") from None
    return text


def confirm(question: str, yes: bool) -> bool:
    """True if `--yes`, else ask on a terminal; refuse (False) when stdin is not a TTY."""
    if yes:
        return True
    if not sys.stdin.isatty():
        from byokctl.errors import Conflict

        raise Conflict("Confirmation needed but stdin is not a terminal", "pass --yes to confirm")
    from byokctl.cli.render import neutral

    return typer.confirm(neutral(question), default=False, err=True)
