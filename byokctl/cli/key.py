"""`key add|list|test|rotate|remove`: secrets come from a hidden prompt, stdin or an environment
variable, never from argv, and are never printed."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from byokctl.cli import complete, render
from byokctl.cli.common import As, Json, Yes, confirm, read_stdin, session, vault_session
from byokctl.errors import Conflict, UsageError
from byokctl.providers import registry
from byokctl.services import keys

if TYPE_CHECKING:
    from byokctl.services import keytest

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
app = typer.Typer(help="Store, test, rotate and remove API keys (secrets never "
                  "shown).",
                  no_args_is_help=True)

KeyId = Annotated[str, typer.Argument(metavar="KEY_ID", help="The key's id (see `key list`).",
                                      autocompletion=complete.key_ids)]
FromStdin = Annotated[bool, typer.Option(
    "--from-stdin", help="Read the secret from stdin (e.g. piped from a password manager).")]
FromEnv = Annotated[str | None, typer.Option(
    "--from-env", metavar="VAR", help="Read the secret from this environment variable.")]
AllowAdmin = Annotated[bool, typer.Option(
    "--allow-admin-key", help="Accept an admin key (sk-ant-admin…, sk-admin-…) though only "
    "inference is needed.")]
Provider = Annotated[str, typer.Option("--provider", metavar="P", help="anthropic or openai.")]
Timeout = Annotated[float, typer.Option(
    "--timeout", metavar="SECONDS",
    help="Deadline of the whole provider call, every retry included.")]
Retries = Annotated[int, typer.Option(
    "--retries", metavar="N", help="Retries on 429/5xx/network errors.")]
TestUrl = Annotated[str | None, typer.Option(
    "--base-url", metavar="URL", help="Test at this endpoint (an emulator, a regional endpoint, "
    "a gateway) instead of where the key is used; a member's personal key only where its owner "
    "approved.")]


def read_secret(provider: str, from_stdin: bool, from_env: str | None) -> str:
    """The secret from exactly one source: --from-env, --from-stdin, or a hidden prompt."""
    name = registry.label(provider)
    if from_stdin and from_env is not None:
        raise UsageError("Give only one of --from-stdin and --from-env VAR")
    if from_env is not None:
        if not ENV_NAME.fullmatch(from_env):
            raise UsageError("--from-env takes the NAME of an environment variable holding the "
                             "key (e.g. ANTHROPIC_API_KEY), not the key itself")
        secret = os.environ.get(from_env, "").strip()
        if not secret:
            raise UsageError(f"${from_env} is not set or is empty", "export the key in it, or pipe "
                             "the key in with --from-stdin")
        return secret
    if from_stdin:
        secret = read_stdin(f"The {name} API key").strip()
        if not secret:
            raise UsageError("Nothing on stdin", "pipe the key in, e.g. `pass show api/anthropic | "
                             "byokctl key add acme --provider anthropic --from-stdin`")
        return secret
    if not sys.stdin.isatty():
        raise UsageError("stdin is not a terminal, so there is no prompt for the key", "pass "
                         "--from-stdin (and pipe the key in) or --from-env VAR")
    return typer.prompt(f"{name} API key (input hidden)", hide_input=True, err=True).strip()


@app.command("add")
def add(
    provider: Provider,
    org: Annotated[str | None, typer.Argument(
        metavar="ORG", help="The org's slug (omit with --platform).", show_default=False,
        autocompletion=complete.org_slugs)] = None,
    member: Annotated[str | None, typer.Option(
        "--member", metavar="EMAIL", help="Store this member's personal key instead of the "
        "org's.")] = None,
    platform: Annotated[bool, typer.Option(
        "--platform", help="Store the platform's own key (operator only; no ORG).")] = False,
    from_stdin: FromStdin = False,
    from_env: FromEnv = None,
    test: Annotated[bool, typer.Option(
        "--test", help="Test the key with the provider first (a token-free call); store it only "
        "if it works.")] = False,
    timeout: Timeout = keys.DEFAULT_TIMEOUT,
    retries: Retries = keys.DEFAULT_RETRIES,
    base_url: TestUrl = None,
    allow_admin_key: AllowAdmin = False,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Store an API key for an org, one of its members, or the platform.

    The secret is read from a hidden prompt, from stdin (--from-stdin) or from an
    environment variable (--from-env VAR), never from the command line.
    With --test it is stored only if the provider accepts it; --base-url URL
    tests it there (e.g. the emulator) instead of where it will be used.

    \b
    Example: byokctl key add acme --provider anthropic --from-env ANTHROPIC_API_KEY --test
    Example: byokctl key add beta --provider openai --from-stdin --test --base-url https://eu.openai.test/v1
    """
    from byokctl.services import keytest  # the provider-testing half: not for `key list`

    if base_url is not None and not test:
        raise UsageError("--base-url says where --test sends the key, and --test is not given",
                         "add --test, or drop --base-url (set where an org's keys go with "
                         "`byokctl org set-provider ORG PROVIDER --base-url URL`)")
    with session(as_) as ctx:
        tester = keytest.ProviderTester(ctx, timeout=timeout, retries=retries,
                                        base_url=base_url) if test else None
        slot = keys.prepare_add(ctx, provider=provider, org=org, member=member, platform=platform)
        if tester is not None:
            tester.preflight(slot)
        secret = read_secret(provider, from_stdin, from_env)
        key = keys.add(ctx, slot, secret, allow_admin_key=allow_admin_key, tester=tester,
                       from_env=from_env)
    tested = f"; tested: {_visible(tester.last)}" if tester and tester.last else ""
    render.emit(json_, key, f"Added {registry.label(key.provider)} key {key.id} for "
                f"{key.owner} ({key.hint}, {key.fingerprint}){tested}.")


def _visible(probe: keytest.Probe) -> str:
    """`3 models visible` (and where, when that is not the provider's own API)."""
    from byokctl.providers.redact import safe_url

    where = f" at {safe_url(probe.base_url)}" if probe.base_url else ""
    return f"{probe.models} model{'' if probe.models == 1 else 's'} visible{where}"


@app.command("test")
def test(
    key_id: KeyId,
    timeout: Timeout = keys.DEFAULT_TIMEOUT,
    retries: Retries = keys.DEFAULT_RETRIES,
    base_url: TestUrl = None,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Test a stored key with a real, token-free call to its provider (list models).

    The call goes where the key is used: the org's (or the platform's) base_url
    when that is set for the key's provider. The result is recorded on the key
    and audited. ok makes the key active; a rejection (exit 7) marks it invalid;
    429 (exit 8) marks it rate-limited; an unreachable provider (exit 11) leaves
    its status as it was.

    --base-url URL tests it at another endpoint (an emulator, a regional
    endpoint), whatever the org's provider is: the result is recorded and
    audited with that URL, and the key's status is left as it was unless URL
    is where the key is used. A member's personal key goes only to an
    endpoint its owner approved (`key approve-endpoint --base-url`).

    \b
    Example: byokctl key test key_3kq7xw2mfa --timeout 10
    Example: byokctl key test key_3kq7xw2mfa --base-url https://eu.api.openai.com/v1
    """
    with vault_session() as vault:
        done = vault.test_key(key_id, member=as_, timeout=timeout, retries=retries, base_url=base_url)
    k = done.key
    render.emit(json_, done, f"Key {k.id} ({k.provider}, {k.hint}): {done.probe.result} — "
                f"{_visible(done.probe)}")


def _status(k: keys.Key) -> str:
    return k.status + (f" ({k.test_result})" if k.test_result else "")


@app.command("list")
def list_(
    org: Annotated[str | None, typer.Argument(
        metavar="ORG", help="Only this org's keys (default: all you may see).",
        show_default=False, autocompletion=complete.org_slugs)] = None,
    provider: Annotated[str | None, typer.Option(
        "--provider", metavar="P", help="Only keys for anthropic or openai.")] = None,
    as_: As = None,
    json_: Json = False,
) -> None:
    """List stored keys: id, owner, provider, hint, fingerprint, version, status and times.

    Needs no master key. Secrets are never shown, only their last 4 characters.

    \b
    Example: byokctl key list acme --json
    """
    import itertools

    from byokctl.lazy import Rows
    from byokctl.services import endpoints

    with session(as_) as ctx:  # keys stream from the open store as they are printed
        items = keys.iter_keys(ctx, org, provider)
        by_slot = endpoints.approved_by_slot(ctx, org)
        printed: dict[tuple, str] = {}  # slot -> id, for the keys listed that have approvals

        def approved(k: keys.Key) -> list[endpoints.Approval]:
            slot = (k.org, k.member, k.provider)
            found = by_slot.get(slot, []) if k.scope == "member" else []
            if found:
                printed[slot] = k.id
            return found

        def row(k: keys.Key) -> tuple:
            approved(k)
            return (k.id, k.owner_short, k.provider, k.hint, k.fingerprint, k.version, _status(k),
                    render.when(k.created_at), render.when(k.rotated_at),
                    render.when(k.last_used_at), render.when(k.last_tested_at))

        def human() -> None:
            first = next(items, None)
            if first is None:
                render.status("No keys; add one with `byokctl key add ORG --provider anthropic`.")
                return
            render.table(
                ["id", "owner", "provider", "hint", "fingerprint", "ver", "status", "created",
                 "rotated", "last used", "last tested"], map(row, itertools.chain([first], items)),
                no_wrap=("id", "hint", "fingerprint", "created", "rotated", "last used", "last tested"),
                drop=("rotated", "last tested", "last used", "fingerprint", "ver", "created"))
            for slot, found in by_slot.items():  # in the order the approvals are stored
                if key_id := printed.get(slot):
                    for a in found:
                        render.line(f"{key_id} may be sent to {endpoints.shown(a.base_url)} "
                                    f"(approved by {a.approved_by}, {render.when(a.approved_at)})")

        rows = Rows({**k.to_json(), "approved_endpoints": [a.to_json() for a in approved(k)]}
                    for k in items)
        render.emit(json_, rows, human)


@app.command("rotate")
def rotate(
    key_id: KeyId,
    from_stdin: FromStdin = False,
    from_env: FromEnv = None,
    allow_admin_key: AllowAdmin = False,
    no_test: Annotated[bool, typer.Option(
        "--no-test", help="Store the new secret without testing it with the provider first.")
    ] = False,
    timeout: Timeout = keys.DEFAULT_TIMEOUT,
    retries: Retries = keys.DEFAULT_RETRIES,
    as_: As = None,
    json_: Json = False,
) -> None:
    """Replace a key's secret in place: same id, version + 1, the old ciphertext purged.

    The new secret is first tested with the provider (a token-free call) unless
    --no-test; if the test fails, the key keeps its current secret.

    \b
    Example: byokctl key rotate key_3kq7xw2mfa --from-env NEW_ANTHROPIC_KEY
    """
    from byokctl.services import keytest

    with session(as_) as ctx:
        tester = None if no_test else keytest.ProviderTester(ctx, timeout=timeout, retries=retries)
        key = keys.prepare_rotate(ctx, key_id)
        if tester is not None:
            tester.preflight(key)
        secret = read_secret(key.provider, from_stdin, from_env)
        done = keys.rotate(ctx, key_id, secret, allow_admin_key=allow_admin_key, tester=tester,
                           from_env=from_env)
    if done.same_secret:
        render.warn(f"the new secret of {key_id} is the one it already had; it was re-encrypted, "
                    "but nothing was rotated at the provider")
    if not done.purged:
        render.warn("another process has the vault open; the old ciphertext is purged from the "
                    "write-ahead log at its next checkpoint")
    k = done.key
    tested = f"; tested: {_visible(tester.last)}" if tester and tester.last else " (untested)"
    render.emit(json_, done, f"Rotated {k.id} ({k.owner}, {k.provider}): "
                f"{done.previous['hint']} v{done.previous['version']} → {k.hint} v{k.version}"
                f"{tested}.")


@app.command("remove")
def remove(key_id: KeyId, yes: Yes = False, as_: As = None, json_: Json = False) -> None:
    """Remove a key; its secret is purged from the vault file and cannot be recovered.

    \b
    Example: byokctl key remove key_3kq7xw2mfa --yes
    """
    with session(as_) as ctx:
        key = keys.require_key(ctx, key_id, "remove")
        if not confirm(f"Remove {key.provider} key {key.id} of {key.owner} ({key.hint})? "
                       "The secret is purged and cannot be recovered.", yes):
            raise Conflict(f"Removal of key {key_id} not confirmed", "nothing was changed")
        gone = keys.remove(ctx, key_id)
    if gone.org_uses_it:
        render.warn(f"org {key.org} uses {key.provider}; its requests fail with the no-key error "
                    f"until a key is added with `byokctl key add {key.org} --provider "
                    f"{key.provider}`, unless its fallback policy allows platform mode")
    if not gone.purged:
        render.warn("another process has the vault open; the old ciphertext is purged from the "
                    "write-ahead log at its next checkpoint")
    render.emit(json_, gone, f"Removed {key.provider} key {key.id} of {key.owner} ({key.hint}).")


EndpointUrl = Annotated[str | None, typer.Option(
    "--base-url", metavar="URL", help="The endpoint (default: the org's current base_url for the "
    "key's provider).")]


@app.command("approve-endpoint")
def approve_endpoint(key_id: KeyId, base_url: EndpointUrl = None, as_: As = None,
                     json_: Json = False) -> None:
    """Let a member's personal key be sent to the org's base_url (or --base-url URL).

    A personal key goes only to its provider's official endpoint until its owner
    approves another one: an org admin who points the org at a base_url cannot
    have members' keys sent there. Only the key's owner (--as) or the platform
    operator (no --as) may approve; the approval holds for that exact URL, so a
    changed org base_url needs a new one. Audited.

    \b
    Example: byokctl key approve-endpoint key_3kq7xw2mfa --as bob@acme.com
    """
    from byokctl.services import endpoints

    with session(as_) as ctx:
        done = endpoints.approve(ctx, key_id, base_url)
    where = endpoints.shown(done.base_url)
    render.emit(json_, done, f"Key {done.key.id} ({done.key.member}, {done.key.provider}) may be "
                f"sent to {where}" + ("." if done.changed else " (already approved)."))


@app.command("revoke-endpoint")
def revoke_endpoint(key_id: KeyId, base_url: EndpointUrl = None, as_: As = None,
                    json_: Json = False) -> None:
    """Withdraw an endpoint approval: the member's personal key is no longer sent there.

    Only the key's owner (--as) or the platform operator may. Until it is approved
    again, requests by that member use the org key (or fail with the no-key error).
    Audited.

    \b
    Example: byokctl key revoke-endpoint key_3kq7xw2mfa --base-url https://gw.acme.dev/v1
    """
    from byokctl.services import endpoints

    with session(as_) as ctx:
        done = endpoints.revoke(ctx, key_id, base_url)
    where = endpoints.shown(done.base_url)
    render.emit(json_, done, f"Key {done.key.id} ({done.key.member}, {done.key.provider}) is no "
                f"longer sent to {where}" + ("." if done.changed else " (it was not approved)."))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="key")
