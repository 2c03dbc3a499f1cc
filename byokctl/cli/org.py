"""`org create|list|show|delete|set-provider|migrate-model|set-budget`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from byokctl import clock
from byokctl.cli import render
from byokctl.cli.common import As, At, Json, Org, Yes, confirm, moment, session
from byokctl.services import orgs

if TYPE_CHECKING:
    from byokctl.services.models import Migration

app = typer.Typer(help="Create and configure organizations.", no_args_is_help=True)


@app.command("create")
def create(
    slug: Annotated[str, typer.Argument(metavar="SLUG", help="Lowercase id: letters, digits, hyphens.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name (default: the slug).")] = None,
    plan: Annotated[str | None, typer.Option(
        "--plan", help="free, starter, growth or scale (default: free).", show_default=False)] = None,
    credits: Annotated[int | None, typer.Option(
        "--credits", help="Starting credit balance (default: 0).", show_default=False)] = None,
    if_not_exists: Annotated[bool, typer.Option(
        "--if-not-exists", help="Succeed without change if the org already exists with the "
        "options given.")] = False,
    json_: Json = False,
) -> None:
    """Create an organization.

    With --if-not-exists an existing org is left as it is, and the command succeeds
    if the options given (--name, --plan, --credits: the balance it started with)
    match it; if one differs it fails (exit 12) naming each difference.

    \b
    Example: byokctl org create acme --name "Acme Inc" --plan growth --credits 500
    Example: byokctl org create acme --plan growth --if-not-exists
    """
    with session() as ctx:
        org, created = orgs.create(ctx, slug, name=name, plan=plan, credits=credits,
                                   if_not_exists=if_not_exists, if_same=True)
    render.emit(json_, {**org.to_json(), "created": created},
                f"Created org {org.slug} ({org.plan}, {org.credits} credits)." if created
                else f"Org {org.slug} already exists; left unchanged.")


@app.command("list")
def list_(
    model: Annotated[str | None, typer.Option(
        "--model", metavar="MODEL", help="Only orgs pinned to this model (alias or pinned id).")] = None,
    grace_ending_within: Annotated[int | None, typer.Option(
        "--grace-ending-within", metavar="DAYS",
        help="Only orgs whose active grace grant ends within DAYS days.")] = None,
    as_: As = None,
    json_: Json = False,
) -> None:
    """List organizations, all or those on a model or with grace ending soon.

    \b
    Example: byokctl org list --json
    Example: byokctl org list --model claude-sonnet-4-5
    Example: byokctl org list --grace-ending-within 14
    """
    from byokctl.lazy import Rows

    grace = grace_ending_within is not None
    with session(as_) as ctx:  # orgs stream from the open store as they are printed
        items = orgs.list_orgs(ctx, model=model, grace_ending_within=grace_ending_within)
        render.emit(json_, Rows(items), lambda: render.table(
            ["slug", "name", "plan", "credits", "provider", "model", *(["grace until"] if grace else [])],
            ((o.slug, o.name, o.plan, o.credits, o.provider, o.model or "—",
              *([f"{render.when(o.grace_until)} UTC"] if grace else [])) for o in items),
            no_wrap=("slug", "grace until")))


@app.command("show")
def show(org: Org, as_: As = None, at: At = None, json_: Json = False) -> None:
    """Show an org: plan, credits, provider setting, grace and the effective mode.

    With --at, the effective mode as of that moment, past or future (the gate, grace and
    fallback then, with today's settings and keys).

    \b
    Example: byokctl org show acme
    Example: byokctl org show acme --at 2027-01-01
    """
    with session(as_) as ctx:
        view = orgs.show(ctx, org, moment(at))

    def human() -> None:
        o, d = view.org, view.decision
        if d.gate.allowed and not d.gate.by_plan:  # grace is what holds the gate
            render.banner(f"BYOK grace grant active until {render.when(o.grace_until)} UTC "
                          f"(plan {o.plan} does not include BYOK)"
                          + (f": {o.grace_reason}" if o.grace_reason else ""))
        effective = d.mode or "none"
        if d.error:
            effective += f" (blocked: {d.error.code.label})"
        render.fields([
            ("org", o.slug), *([("as of", f"{render.when(clock.iso(view.at))} UTC")] if at else []),
            ("name", o.name), ("plan", o.plan), ("credits", o.credits),
            ("provider", o.provider), ("model", o.model), ("base url", o.base_url),
            ("fallback", o.fallback),
            ("budget", None if o.budget_monthly_usd is None else f"${o.budget_monthly_usd:.2f}/month"),
            ("grace until", render.when(o.grace_until) if o.grace_until else None),
            ("members", view.members), ("keys", view.keys),
            ("effective", f"{effective} → {d.provider}/{d.model}" if d.provider else effective),
        ])
        for reason in d.reasons:
            render.line(f"  · {reason}")
        if d.error:
            render.line(f"  ! {d.error.message}")

    render.emit(json_, view, human)
    for w in view.warnings:
        render.warn(w)


@app.command("delete")
def delete(org: Org, yes: Yes = False, as_: As = None, json_: Json = False) -> None:
    """Delete an org with its members, keys (purged) and usage; the audit log is kept.

    \b
    Example: byokctl org delete acme --yes
    """
    with session(as_) as ctx:
        orgs.get(ctx, org)
        if not confirm(f"Delete org {org}, its members, keys and usage?", yes):
            raise orgs.Conflict(f"Deletion of org {org} not confirmed", "nothing was changed")
        deleted = orgs.delete(ctx, org)
    render.emit(json_, {"deleted": deleted.slug}, f"Deleted org {deleted.slug}.")


@app.command("set-provider")
def set_provider(
    org: Org,
    provider: Annotated[str, typer.Argument(metavar="platform|anthropic|openai",
                                            help="platform (credits) or a BYOK provider.")],
    model: Annotated[str | None, typer.Option(
        "--model", help="Model alias or pinned id (aliases are pinned when stored).")] = None,
    base_url: Annotated[str | None, typer.Option(
        "--base-url", help="Regional endpoint, proxy or gateway, as the SDK expects it.")] = None,
    fallback: Annotated[str | None, typer.Option(
        "--fallback", help="never, missing-key or provider-error.")] = None,
    allow_insecure: Annotated[bool, typer.Option(
        "--allow-insecure", help="Accept a plain-http --base-url to a host other than this machine "
        "(the key then crosses the network unencrypted).")] = False,
    as_: As = None,
    yes: Yes = False,
    json_: Json = False,
) -> None:
    """Switch an org's AI provider (BYOK needs a plan that includes it).

    \b
    A --base-url must be https, or plain http to this machine (the emulator) unless
    --allow-insecure; it may not carry user:password@. Its API version is corrected for
    the provider's SDK, with a warning: Anthropic's without /v1, OpenAI's with it.

    \b
    Example: byokctl org set-provider acme anthropic --model sonnet --yes
    """
    with session(as_) as ctx:
        change = orgs.plan_provider_change(ctx, org, provider, model=model, base_url=base_url,
                                           fallback=fallback, allow_insecure=allow_insecure)
        for warning in change.warnings:  # before the question: it may change the answer
            render.warn(warning)

        def ask(c: orgs.ProviderChange) -> bool:
            b, a = c.before, c.after
            return confirm(
                f"Switch org {c.org} from {b['provider']}/{b['model'] or '-'} to "
                f"{a['provider']}/{a['model'] or '-'} (fallback {a['fallback']})?", yes)

        for w in change.warnings:  # before the question: it may change the answer
            render.warn(w)
        done = orgs.set_provider(ctx, change, ask)
    a = done.after
    render.emit(json_, {"org": done.org, "changed": done.changed, "before": done.before, "after": a,
                        "warnings": done.warnings},
                f"Org {done.org} now uses {a['provider']}"
                + (f" with {a['model']}" if a["model"] else "")
                + (f" at {a['base_url']}" if a["base_url"] else "")
                + f" (fallback {a['fallback']})." if done.changed
                else f"Org {done.org} already uses that setting; nothing changed.")


@app.command("migrate-model")
def migrate_model(
    from_: Annotated[str, typer.Argument(metavar="FROM", help="The model orgs are pinned to "
                                         "(alias or pinned id; also an id the catalog dropped).")],
    to: Annotated[str, typer.Argument(metavar="TO", help="The model to move them onto (alias or "
                                      "pinned id, same provider, not retired).")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the orgs that would move; change nothing.")] = False,
    yes: Yes = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Move every org pinned to FROM onto TO (platform operator only), all or nothing.

    Each org moved gets its own `org.migrate_model` audit entry (before/after setting). TO
    must be of FROM's provider and not retired; one retiring within 30 days is warned about.

    \b
    Example: byokctl org migrate-model claude-sonnet-4-5 sonnet --dry-run
    Example: byokctl org migrate-model claude-sonnet-4-5 sonnet --yes
    """
    from byokctl.services.models import migrate_model as migrate

    def ask(m: Migration) -> bool:
        return confirm(f"Move {len(m.orgs)} org{'s' if len(m.orgs) != 1 else ''} from "
                       f"{m.from_model} to {m.to_model}?", yes)

    with session(as_) as ctx:
        done = migrate(ctx, from_, to, dry_run=dry_run, confirm=ask)
    for w in done.warnings:
        render.warn(w)
    n = len(done.orgs)
    noun = f"{n} org{'s' if n != 1 else ''}"
    if not done.orgs:
        text = f"No org is pinned to {done.from_model}; nothing changed."
    elif dry_run:
        text = (f"Dry run: {noun} would move from {done.from_model} to {done.to_model}: "
                f"{', '.join(done.orgs)}; nothing was written.")
    else:
        text = f"Moved {noun} from {done.from_model} to {done.to_model}: {', '.join(done.orgs)}."
    render.emit(json_, done, text)


@app.command("set-budget")
def set_budget(
    org: Org,
    monthly_usd: Annotated[float | None, typer.Option(
        "--monthly-usd", help="Monthly BYOK spend limit in USD.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Remove the budget.")] = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Set or remove an org's monthly BYOK budget (warns at 80%, refuses at 100%).

    \b
    Example: byokctl org set-budget acme --monthly-usd 250
    """
    if (monthly_usd is None) == (not none):
        raise orgs.rules.UsageError("Give exactly one of --monthly-usd N or --none")
    with session(as_) as ctx:
        before, after = orgs.set_budget(ctx, org, None if none else monthly_usd)
    render.emit(json_, {"org": org, "before": before, "after": after},
                f"Org {org} budget: " + ("none" if after is None else f"${after:.2f}/month") + ".")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="org")
