"""`audit log|verify`: read the tamper-evident audit log, and check its chain."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from byokctl import clock
from byokctl.cli import complete, render
from byokctl.cli.common import As, Json, session
from byokctl.errors import Integrity, UsageError
from byokctl.lazy import Rows
from byokctl.services import audit, rules
from byokctl.services.permissions import require

app = typer.Typer(help="Read and verify the tamper-evident audit log.", no_args_is_help=True)


@app.command("log")
def log(
    org: Annotated[str | None, typer.Option(
        "--org", metavar="ORG", help="Only this org's entries.", autocompletion=complete.org_slugs)] = None,
    action: Annotated[str | None, typer.Option(
        "--action", metavar="A", help="An action (key.rotate) or a group of them (key).")] = None,
    actor: Annotated[str | None, typer.Option(
        "--actor", metavar="X", help="Only this actor's entries.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", metavar="D", help="From this date (YYYY-MM-DD) or ISO time, UTC.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", metavar="N", help="At most N entries.")] = None,
    include_previous: Annotated[bool, typer.Option(
        "--include-previous",
        help="With --org: also the entries of earlier, deleted orgs of that slug (operator only).")] = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Show audit entries, newest first (needs no master key).

    With --org, only the org's current lifetime: an org deleted and created again under
    the same slug does not show its predecessor's entries. The operator can ask for them
    with --include-previous.

    \b
    Example: byokctl audit log --org acme --action key --since 2026-11-01
    Example: byokctl audit log --org acme --include-previous
    """
    since_ts = clock.iso(rules.parse_when(since)) if since else None
    if limit is not None:
        # Past SQLite's 64-bit integers a limit means no limit (and would overflow the query).
        limit = min(rules.positive_int(limit, "--limit"), 2 ** 63 - 1)
    if include_previous and org is None:
        raise UsageError("--include-previous applies to one org's log", "add --org ORG")
    with session(as_) as ctx:
        if as_ is not None:
            if org is None:
                raise UsageError("A member may read only their org's audit log", "add --org ORG")
            require(ctx, org, rules.ORG_VIEW)
        from_seq = (audit.org_log_from(ctx, org, include_previous=include_previous)
                    if org is not None else None)
        # Streamed from the open store as they are printed: memory stays flat in the log's size.
        entries = audit.entries(ctx, org=org, action=action, actor=actor, since=since_ts,
                                limit=limit, from_seq=from_seq)
        render.emit(json_, Rows(entries), lambda: render.table(
            ["seq", "time (UTC)", "actor", "action", "org / target", "change"],
            ((e.seq, render.when(e.ts), who(e), e.action, subject(e), change(e.before, e.after))
             for e in entries), no_wrap=("seq", "time (UTC)", "action"), words=("org / target",),
            drop=("actor",)))


def who(e: audit.Entry) -> str:
    """The actor, and with `--as` the OS account that ran the command: `bob@acme.com (os: ann)`."""
    return f"{e.actor} (os: {e.os_user})" if e.os_user else e.actor


def subject(e: audit.Entry) -> str:
    """What an entry is about, in one short cell: `acme`, `acme sam@acme.com`, `vault`."""
    if e.action.startswith("vault."):
        return "vault"
    if e.target in (None, e.org):
        return e.org or "—"
    return f"{e.org} {_short(e.target, 24)}" if e.org else _short(e.target, 24)


def change(before: Any, after: Any) -> str:
    """A compact before→after: for objects only what changed (`plan: free→growth`) and what
    was added (`credits=50`); the whole value otherwise."""
    if isinstance(before, dict) and isinstance(after, dict):
        parts = [f"{k}: {_short(before[k])}→{_short(after[k])}" if k in before and k in after
                 else f"{k}={_short(after[k])}" if k in after
                 else f"{k}: {_short(before[k])}→—"
                 for k in {**before, **after} if before.get(k, _MISSING) != after.get(k, _MISSING)]
        return ", ".join(parts) or "—"
    if isinstance(after, dict) and before is None:
        return ", ".join(f"{k}={_short(v)}" for k, v in after.items()) or "—"
    if isinstance(before, dict) and after is None:
        return "removed: " + ", ".join(f"{k}={_short(v)}" for k, v in before.items())
    if before is None and after is None:
        return "—"
    return f"{_short(before)}→{_short(after)}"


_MISSING = object()


def _short(value: Any, width: int = 40) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


@app.command("anchor")
def anchor(json_: Json = False) -> None:
    """Print the audit chain's head, to keep outside the vault for `audit verify --anchor`.

    A whole older copy of the vault file is self-consistent; only a head kept elsewhere shows
    that entries (a rotated-out secret, say) were rolled back.

    \b
    Example: byokctl audit anchor --json > ~/byokctl-anchor.json
    """
    with session() as ctx:
        head = audit.current_anchor(ctx)
    render.emit(json_, head, lambda: render.fields(head.to_json().items()))
    if not json_:
        render.status("keep this outside the vault (`--json` writes a file `audit verify --anchor` "
                      "reads)")


@app.command("verify")
def verify(
    anchor_file: Annotated[str | None, typer.Option(
        "--anchor", metavar="FILE",
        help="Also check that the log still holds the head saved by `audit anchor` in FILE.")] = None,
    json_: Json = False,
) -> None:
    """Verify the audit chain; exit 13 naming the first entry that was altered or removed.

    With --anchor FILE (from `byokctl audit anchor --json`), exit 13 also when the log no longer
    holds that entry with that MAC: an older copy of the vault was put back, or its log cut.

    \b
    Example: byokctl audit verify --anchor ~/byokctl-anchor.json --json
    """
    anchored = None
    if anchor_file is not None:
        from pathlib import Path

        try:
            text = Path(anchor_file).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise UsageError(f"Cannot read the anchor file {anchor_file} ({exc.strerror})", "give the "
                             "file `byokctl audit anchor --json` wrote") from None
        anchored = audit.parse_anchor(text, anchor_file)
    with session() as ctx:
        checked, problems = audit.verify(ctx)
        if anchored is not None:
            problems = problems + audit.check_anchor(ctx, *anchored)
    doc = {"ok": not problems, "checked": checked, "problems": problems}
    render.emit(json_, doc, lambda: render.line(
        f"Audit log OK: {checked} entries verified, chain head matches." if not problems
        else f"Audit log BROKEN after {checked} entries checked."))
    if problems:
        first = problems[0]
        raise Integrity(
            f"Audit entry {first.value}: {first.problem}", "the log was changed outside byokctl, "
            "so restore the vault from a backup and find out who had access to the file"
        )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="audit")
