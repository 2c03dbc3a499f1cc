"""`init` and `vault status|rotate-master|rekey|copy|check`."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from byokctl.cli import render
from byokctl.cli.common import STATE, Json, session
from byokctl.errors import Conflict, Integrity, UsageError
from byokctl.services import vaultops
from byokctl.services.audit import Problem
from byokctl.services.context import Context

app = typer.Typer(help="Inspect and maintain the vault's keys.", no_args_is_help=True)


def init(
    master_key_file: Annotated[str | None, typer.Option(
        "--master-key-file", metavar="PATH",
        help="Keep the master key in this file (mode 0600) instead of the OS keyring.")] = None,
    kms: Annotated[str | None, typer.Option(
        "--kms", metavar="REF",
        help="Have a key manager wrap the master key: vault-transit:[MOUNT/]KEY (address and "
             "token from $VAULT_ADDR, $VAULT_TOKEN) or pkcs11:token=T;object=L?module-path=P.")] = None,
    create_key: Annotated[bool, typer.Option(
        "--create-key", help="With --kms: create the key manager's key if it does not exist.")] = False,
    json_: Json = False,
) -> None:
    """Create a new vault and its master key.

    The master key goes to the OS keyring unless $BYOKCTL_MASTER_KEY is set (CI),
    --master-key-file is given (headless servers) or --kms names a key manager (teams: Vault
    transit or a PKCS#11 HSM wraps the master key; the vault keeps the reference and the
    wrapped key, and every command that needs a secret asks the key manager once).

    \b
    Example: byokctl init --master-key-file ~/.config/byokctl/master.key
    Example: byokctl init --kms vault-transit:byokctl --create-key
    """
    result = vaultops.init(STATE["db"], master_key_file, kms, create_key)
    render.emit(json_, result, lambda: render.line(
        f"Created vault {result.path} (master key in {result.master_location})."))


@app.command("status")
def status(json_: Json = False) -> None:
    """Show where the vault and its master key live, schema version and counts.

    \b
    Example: byokctl vault status --json
    """
    with session() as ctx:
        st = vaultops.status(ctx)
    render.emit(json_, st, lambda: render.fields(st.to_json().items()))


@app.command("rotate-master")
def rotate_master(
    kms: Annotated[str | None, typer.Option(
        "--kms", metavar="REF", help="Move the master key to this key manager "
        "(vault-transit:[MOUNT/]KEY or pkcs11:...).")] = None,
    create_key: Annotated[bool, typer.Option(
        "--create-key", help="With --kms: create the key manager's key if it does not exist.")] = False,
    keyring_: Annotated[bool, typer.Option(
        "--keyring", help="Move the master key to the OS keyring.")] = False,
    master_key_file: Annotated[str | None, typer.Option(
        "--master-key-file", metavar="PATH",
        help="Move the master key to this new file (mode 0600).")] = None,
    env: Annotated[bool, typer.Option(
        "--env", help="Move the master key to $BYOKCTL_MASTER_KEY (printed once).")] = False,
    rewrap: Annotated[bool, typer.Option(
        "--rewrap", help="Keep the master key; have the key manager wrap it again under its key's "
        "newest version (after `bao write -f transit/keys/KEY/rotate`).")] = False,
    json_: Json = False,
) -> None:
    """Replace the master key and re-wrap the data keys (instant; secrets are not touched).

    The new key goes where the old one came from: the OS keyring entry, the key file or the
    key manager; --kms, --keyring, --master-key-file or --env moves it to another source (the
    old source's key is then deleted). With $BYOKCTL_MASTER_KEY it is printed once on stdout,
    for you to store; the old key keeps opening the vault until the new one first does
    (`vault status` shows the rotation as pending), so a key that never reached you locks
    nothing. --rewrap only re-wraps the same master key after a transit key rotation.

    \b
    Example: byokctl vault rotate-master
    Example: byokctl vault rotate-master --kms vault-transit:transit/byokctl-2024
    """
    targets = [name for name, on in (("--kms", kms), ("--keyring", keyring_), ("--env", env),
                                      ("--master-key-file", master_key_file), ("--rewrap", rewrap)) if on]
    if len(targets) > 1:
        raise UsageError(f"{' and '.join(targets)} were both given", "pass one of them")
    if create_key and not kms:
        raise UsageError("--create-key needs --kms", "add --kms REF, or drop --create-key")
    to = ("kms" if kms else "keyring" if keyring_ else "env" if env else
          "file" if master_key_file else None)
    with session() as ctx:
        if rewrap:
            result = vaultops.rewrap_master(ctx)
        else:
            result = vaultops.rotate_master(ctx, to, master_key_file, kms, create_key)

        def human() -> None:
            if result.master_key:
                render.line(result.master_key)
            else:
                render.line(f"Re-wrapped the master key with {result.master_location} (newest key "
                            "version; no secret re-encrypted)." if rewrap else
                            f"Rotated the master key: {result.data_keys} data keys re-wrapped; the "
                            f"new key is in {result.master_location}.")

        try:
            render.emit(json_, result, human)
            if result.master_key:
                render.flush_stdout()
        except (OSError, ValueError, AttributeError) as exc:
            if not result.master_key:
                raise
            _undelivered(ctx, result, exc)
    for text in result.warnings:
        render.warn(text)
    if result.master_key:
        render.warn("store the new master key (printed once, on stdout) in $BYOKCTL_MASTER_KEY and "
                    "your secret store now; the old key opens this vault until the new one is "
                    "first used, and never after")


def _undelivered(ctx: Context, result: vaultops.RotateResult, exc: BaseException) -> None:
    """stdout is full, closed or gone: the new key may never have been seen, so drop it."""
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "stdout is closed"
    cancelled = False
    with contextlib.suppress(Exception):  # left pending it is harmless: the old key still opens
        cancelled = vaultops.cancel_rotation(ctx, result)
    what = "the rotation was called off" if cancelled else "the rotation waits, unused"
    raise Conflict(f"The new master key could not be printed ({why}), so {what} and the old "
                   "master key still opens the vault", "run `byokctl vault rotate-master` again "
                   "with stdout going to a terminal or a file you can read")


@app.command("rekey")
def rekey(json_: Json = False) -> None:
    """Replace the data key and re-encrypt every secret under it.

    Safe to interrupt at any point (even kill -9): every secret stays readable, and running
    it again finishes the job.

    \b
    Example: byokctl vault rekey
    """
    with session() as ctx, render.progress("Re-encrypting secrets") as update:
        result = vaultops.rekey(ctx, update)
    render.emit(json_, result, lambda: render.line(
        ("Finished the interrupted rekey" if result.resumed else "Rekeyed the vault")
        + f": {result.reencrypted} secrets re-encrypted under data key {result.data_key_id}; "
        f"the old data key is purged."))


@app.command("copy")
def copy(
    to: Annotated[str, typer.Option(
        "--to", metavar="PATH|URL", help="A new vault file, or an empty PostgreSQL database "
        "(postgresql://user@host/dbname; the password from $PGPASSWORD or ~/.pgpass).")],
    json_: Json = False,
) -> None:
    """Copy the vault to a new file or an empty PostgreSQL database, unchanged, and check it.

    Ciphertexts, MACs and the audit chain go over as they are, so the same master key opens
    the copy. The vault is checked first and the copy after (as `vault check`); writers wait
    meanwhile. Safe to interrupt: run it again. Then use the copy: once either is written to,
    the other is an older copy, which the audit anchor refuses.

    \b
    Example: byokctl vault copy --to postgresql://ops@db.internal/byokctl
    """
    from byokctl.cli.common import refuse_password_on_argv

    refuse_password_on_argv(to, "--to")
    with session() as ctx:
        result = vaultops.copy(ctx, to)
    render.emit(json_, result, lambda: render.line(
        f"Copied {result.source} to {result.target}: {result.rows['orgs']} orgs, "
        f"{result.rows['keys']} keys, {result.rows['usage']} usage records, {result.rows['audit']} "
        f"audit entries; the copy checks clean ({result.keys_checked} secrets decrypted, "
        f"{result.rows_checked} rows authenticated, {result.audit_checked} audit entries verified)."))


@app.command("check")
def check(json_: Json = False) -> None:
    """Decrypt every secret, check every row's MAC and the audit chain; exit 13 naming each bad row.

    Org, member and key rows and the platform settings carry a MAC: one changed in the file
    without the master key is listed here, and refused (exit 13) by `ask` and `key test`.

    \b
    Example: byokctl vault check --json
    """
    with session() as ctx:
        report = vaultops.check(ctx)

    def human() -> None:
        if report.ok:
            render.line(f"Vault OK: {report.keys_checked} secrets decrypted, "
                        f"{report.rows_checked} rows authenticated, "
                        f"{report.audit_checked} audit entries verified.")
        else:
            render.table(["row", "problem"], [(_row_name(p), p.problem) for p in report.problems])

    render.emit(json_, report, human)
    if not report.ok:
        names = ", ".join(_row_name(p) for p in report.problems)
        raise Integrity(
            f"vault check found {len(report.problems)} problem(s) in {names}", "replace a broken key "
            "with `byokctl key rotate KEY_ID` (or remove it, and add it again if its metadata was "
            "changed), and restore a tampered vault from a backup"
        )


def _row_name(p: Problem) -> str:
    return {"key_id": "key ", "seq": "audit entry ", "file": "file ", "org": "org ",
            "member": "member ", "platform": "platform "}.get(p.ref, "") + str(p.value)


def register(root: typer.Typer) -> None:
    root.command("init")(init)
    root.add_typer(app, name="vault")
