"""`org create|list|show|delete|set-provider|set-budget`."""

from __future__ import annotations

from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import As, Json, Org, Yes, confirm, session
from byokctl.services import orgs

app = typer.Typer(help="Create and configure organizations.", no_args_is_help=True)


@app.command("create")
def create(
    slug: Annotated[str, typer.Argument(metavar="SLUG", help="Lowercase id: letters, digits, hyphens.")],
    name: Annotated[str | None, typer.Option("--name", help="Display name (default: the slug).")] = None,
    plan: Annotated[str, typer.Option("--plan", help="free, starter, growth or scale.")] = "free",
    credits: Annotated[int, typer.Option("--credits", help="Starting credit balance.")] = 0,
    if_not_exists: Annotated[bool, typer.Option(
        "--if-not-exists", help="Succeed without change if the org already exists.")] = False,
    json_: Json = False,
) -> None:
    """Create an organization.

    \b
    Example: byokctl org create acme --name "Acme Inc" --plan growth --credits 500
    """
    with session() as ctx:
        org, created = orgs.create(ctx, slug, name=name, plan=plan, credits=credits,
                                   if_not_exists=if_not_exists)
    render.emit(json_, {**org.to_json(), "created": created},
                f"Created org {org.slug} ({org.plan}, {org.credits} credits)." if created
                else f"Org {org.slug} already exists; left unchanged.")


@app.command("list")
def list_(as_: As = None, json_: Json = False) -> None:
    """List organizations.

    \b
    Example: byokctl org list --json
    """
    from byokctl.lazy import Rows

    with session(as_) as ctx:  # orgs stream from the open store as they are printed
        items = orgs.list_orgs(ctx)
        render.emit(json_, Rows(items), lambda: render.table(
            ["slug", "name", "plan", "credits", "provider", "model"],
            ((o.slug, o.name, o.plan, o.credits, o.provider, o.model or "—") for o in items),
            no_wrap=("slug",)))


@app.command("show")
def show(org: Org, as_: As = None, json_: Json = False) -> None:
    """Show an org: plan, credits, provider setting, grace and the effective mode.

    \b
    Example: byokctl org show acme
    """
    with session(as_) as ctx:
        view = orgs.show(ctx, org)

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
            ("org", o.slug), ("name", o.name), ("plan", o.plan), ("credits", o.credits),
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

        done = orgs.set_provider(ctx, change, ask)
    a = done.after
    render.emit(json_, {"org": done.org, "changed": done.changed, "before": done.before, "after": a},
                f"Org {done.org} now uses {a['provider']}"
                + (f" with {a['model']}" if a["model"] else "")
                + (f" at {a['base_url']}" if a["base_url"] else "")
                + f" (fallback {a['fallback']})." if done.changed
                else f"Org {done.org} already uses that setting; nothing changed.")


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
