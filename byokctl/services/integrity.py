"""Authenticated rows (SPEC §2): the one place that writes and checks the MACs of orgs,
members and keys rows and of the platform record (the platform settings, kept in meta).

Every write path goes through here, inside its write transaction: `seal` MACs a row just
inserted; `update` checks the row's MAC, changes it and MACs it again (so a row changed
outside byokctl is never re-MACed into legitimacy). `verify*` refuse a tampered row at use
(`ask`, `key test`, any test of a secret) with exit 13, before a key is sent anywhere, and
`check` lists every bad row for `vault check`. Read-only commands (org list, key list,
resolve, usage show, audit log) never unlock the vault, so they do not verify.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from byokctl.errors import Integrity
from byokctl.services.context import UNSEEN, Context
from byokctl.vault import rowmac

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from byokctl.domain.resolution import Facts
    from byokctl.services.audit import Problem
    from byokctl.store import Row

    Change = Mapping[str, Any] | Callable[[Row], Mapping[str, Any]]

PENDING = "row_macs_pending"  # meta: set by migration m004 on a vault that predates row MACs
PLATFORM = "platform"  # the platform record's "table" name in its MAC
TABLES = ("orgs", "members", "keys", "endpoint_approvals")  # the tables whose rows carry a MAC


def _values(table: str, row: Row) -> list:
    return [row[c] for c in rowmac.COLUMNS[table]]


def _read(ctx: Context, table: str, pk: tuple) -> Row | None:
    # The row the request was decided from, if it read it (the very row that is then used);
    # else from the store. Text that is not UTF-8 was written outside byokctl: kept (as
    # surrogates) so that the MAC check reports it, never decoded into a crash.
    row = ctx.recall(table, pk)
    if row is not UNSEEN:
        return row
    return ctx.store.rows.get(table, pk, lenient=True)


def _intact(ctx: Context, table: str, row: Row) -> bool:
    return ctx.vault().row_intact(table, _values(table, row), row["mac"])


def tampered(table: str, pk: tuple) -> Integrity:
    """The error for a row whose MAC does not match: what it is and how to get out of it."""
    if table == "orgs":
        what, fix = f"Org {pk[0]}'s settings", (
            f"restore the vault from a backup (or `byokctl org delete {pk[0]} --yes` and create "
            "it again)")
    elif table == "members":
        what, fix = f"Member {pk[1]} of org {pk[0]}", (
            f"restore the vault from a backup (or remove them with `byokctl member remove {pk[0]} "
            f"{pk[1]} --yes` and add them again)")
    elif table == "keys":
        what, fix = f"Key {pk[0]}'s metadata", (
            f"remove it with `byokctl key remove {pk[0]} --yes` and add the key again, or restore "
            "the vault from a backup")
    elif table == "endpoint_approvals":
        # The stored URL may carry user info (an approval row is whatever was written to the
        # file): shown without credentials, as every other message shows a base URL.
        from byokctl.domain.urls import safe_url

        url = safe_url(pk[3])
        what, fix = f"The approvals of {url} for {pk[1]}'s {pk[2]} key in org {pk[0]}", (
            f"revoke it with `byokctl key revoke-endpoint KEY_ID --base-url {url}` and have its "
            "owner approve it again, or restore the vault from a backup")
    else:
        what, fix = "The platform settings", "restore the vault from a backup"
    return Integrity(f"{what} were changed outside byokctl (the MAC does not match), so nothing "
                     "was sent or changed", f"{fix}, and run `byokctl vault check` to list every "
                     "such row")


# ---- rows -----------------------------------------------------------------------------------

def verify(ctx: Context, table: str, pk: tuple) -> Row | None:
    """The row, if its MAC matches; Integrity if not; None if there is no such row."""
    row = _read(ctx, table, pk)
    if row is not None and not _intact(ctx, table, row):
        raise tampered(table, pk)
    return row


def seal(ctx: Context, table: str, pk: tuple) -> Row:
    """MAC the row as it now stands (inside the caller's write transaction): for a row just
    inserted, or by `update` once the row was checked. Read back from the store, so the MAC
    covers what SQLite keeps (a budget of 5 is stored, and read, as 5.0)."""
    row = ctx.store.rows.get(table, pk)
    if row is None:
        raise KeyError(pk)
    return _seal(ctx, table, pk, row)


def _seal(ctx: Context, table: str, pk: tuple, row: Row) -> Row:
    """MAC `row`, the row at `pk` as the store just gave it back."""
    ctx.store.rows.set_mac(table, pk, ctx.vault().row_mac(table, _values(table, row)))
    return row


def update(ctx: Context, table: str, pk: tuple, change: Change) -> tuple[Row, Row] | None:
    """Check the row's MAC, set the columns `change` gives (a mapping, or a function of the
    checked row returning one) and MAC it again; inside the caller's write transaction.
    Returns (before, after), or None if there is no such row."""
    if callable(change) or not change or not ctx.store.in_transaction:
        before = verify(ctx, table, pk)
        if before is None:
            return None
        values = change(before) if callable(change) else change
        if not values:
            return before, seal(ctx, table, pk)
        after = ctx.store.rows.changed(table, pk, values)  # as stored: what the MAC must cover
        if after is None:
            raise KeyError(pk)
        return before, _seal(ctx, table, pk, after)
    # Values known beforehand: read and changed together (one round trip on PostgreSQL); a
    # row that fails its check raises here, inside the transaction, which undoes the change.
    found = ctx.store.rows.checked_change(table, pk, change)
    if found is None:
        return None
    before, after = found
    if not _intact(ctx, table, before):
        raise tampered(table, pk)
    return before, _seal(ctx, table, pk, after)


def guarded(ctx: Context, table: str, row: Row, values: Mapping[str, Any]) -> dict[str, Any] | None:
    """`values` and the MAC of `row` once they are set, for a change the store makes only
    where the stored row is still `row`, the row as this request read it (a guarded update:
    `Usage.insert_if_unchanged`). None if `row` fails its own MAC: a row changed outside
    byokctl is never re-MACed into legitimacy (`update`, the checked way, then reports it).
    `values` must be as the store keeps them (text, integers), since no row is read back."""
    if not _intact(ctx, table, row):
        return None
    after = {c: row[c] for c in rowmac.COLUMNS[table]} | dict(values)
    return {**values, "mac": ctx.vault().row_mac(table, [after[c] for c in rowmac.COLUMNS[table]])}


def update_org(ctx: Context, slug: str, change: Change) -> tuple[Row, Row] | None:
    """THE way to change an org row (settings, plan, grace, budget, credits): checked, changed
    and re-MACed in the caller's write transaction. `change` may be a function of the checked
    row, for changes relative to it (`lambda org: {"credits": org["credits"] + n}`)."""
    return update(ctx, "orgs", (slug,), change)


def update_member(ctx: Context, org: str, email: str,
                  change: Change) -> tuple[Row, Row] | None:
    return update(ctx, "members", (org, email), change)


def update_key(ctx: Context, key_id: str, change: Change) -> tuple[Row, Row] | None:
    return update(ctx, "keys", (key_id,), change)


def verify_org(ctx: Context, slug: str) -> None:
    verify(ctx, "orgs", (slug,))


def verify_key(ctx: Context, key_id: str) -> None:
    verify(ctx, "keys", (key_id,))


def verify_members(ctx: Context, members: set[tuple[str, str]]) -> None:
    """The member rows whose roles decided this command's permissions (`--as`)."""
    for org, email in sorted(members):
        verify(ctx, "members", (org, email))


# ---- the platform record --------------------------------------------------------------------

def _platform_values(ctx: Context) -> list:
    stored = ctx.store.metas(*rowmac.PLATFORM_META)
    return [stored[k] for k in rowmac.PLATFORM_META]


def verify_platform(ctx: Context) -> None:
    names = (*rowmac.PLATFORM_META, rowmac.PLATFORM_MAC)
    stored = {k: ctx.recall("meta", k) for k in names}
    if UNSEEN in stored.values():
        stored = ctx.store.metas(*names)
    if not ctx.vault().row_intact(PLATFORM, [stored[k] for k in rowmac.PLATFORM_META],
                                  stored[rowmac.PLATFORM_MAC]):
        raise tampered(PLATFORM, ())


def seal_platform(ctx: Context) -> None:
    ctx.store.set_meta(rowmac.PLATFORM_MAC,
                       ctx.vault().row_mac(PLATFORM, _platform_values(ctx)))


def set_platform(ctx: Context, values: Mapping[str, str | None]) -> None:
    """Change platform settings (meta keys of PLATFORM_META): checked, changed, re-MACed."""
    verify_platform(ctx)
    for key, value in values.items():
        if key not in rowmac.PLATFORM_META:
            raise KeyError(key)
        ctx.store.set_meta(key, value)
    seal_platform(ctx)


# ---- at use ---------------------------------------------------------------------------------

def verify_for_use(ctx: Context, f: Facts) -> None:
    """Every row a resolution was made from (org, acting member, candidate keys, platform
    settings): Integrity before anything is sent if one was changed outside byokctl."""
    verify_org(ctx, f.org)
    if f.member:
        verify(ctx, "members", (f.org, f.member))
    for key in (f.member_key, f.org_key, f.platform_key):
        if key is not None:
            verify_key(ctx, key.id)
    verify_platform(ctx)


# ---- vault check ----------------------------------------------------------------------------

NO_MAC = "no MAC: the row was written outside byokctl"
BAD_MAC = "changed outside byokctl (MAC mismatch)"


def _check_table(ctx: Context, table: str, key: bytes,
                 intact: Callable[[str, Any, object], bool]) -> tuple[int, list[tuple[dict, str]]]:
    """(rows read, [(row, problem)]) for one table.

    As `audit verify` does, the store builds each row's canonical body (`check_scan`) and
    only the MAC is computed here, so `vault check` stays fast at a vault's full size. A row
    whose MAC does not match that way is read again and checked with the reference encoding
    (leniently: text that is not UTF-8 can only come from a write outside byokctl) before it
    is reported."""
    import hmac

    from byokctl.vault import macs

    store = ctx.store
    sign, same = macs.hmac_sha256_hex(key), hmac.compare_digest
    n, suspects = 0, []
    for body, mac, position in store.rows.check_scan(table):
        n += 1
        if not (isinstance(mac, str) and same(sign(body), mac)):
            suspects.append(position)
    bad: list[tuple[dict, str]] = []
    with store.lenient("surrogateescape"):
        for position in suspects:
            row = store.rows.at(table, position)
            if row is not None and not intact(table, _values(table, row), row["mac"]):
                bad.append((dict(row), NO_MAC if row["mac"] is None else BAD_MAC))
    return n, bad


def check(ctx: Context) -> tuple[int, list[Problem], dict[str, str]]:
    """Every authenticated row: (rows checked, problems of orgs, members and the platform
    record, {key id: problem} for keys, which `vault check` merges with its own findings)."""
    from byokctl.services.audit import Problem

    key = ctx.vault().row_key
    intact = rowmac.checker(key)
    problems: list[Problem] = []
    key_problems: dict[str, str] = {}
    checked = 0
    for table in TABLES:
        n, bad = _check_table(ctx, table, key, intact)
        checked += n
        for row, problem in bad:
            if table == "orgs":
                problems.append(Problem("org", row["slug"], f"org settings {problem}"))
            elif table == "members":
                problems.append(Problem("member", f"{row['org']}/{row['email']}",
                                        f"member row {problem}"))
            elif table == "endpoint_approvals":
                problems.append(Problem(
                    "approval", f"{row['org']}/{row['member']}/{row['provider']}",
                    f"endpoint approval {problem}"))
            else:
                key_problems[row["id"]] = f"key metadata {problem}"
    checked += 1
    stored = ctx.store.meta(rowmac.PLATFORM_MAC)
    if not rowmac.matches(key, PLATFORM, _platform_values(ctx), stored):
        problems.append(Problem("platform", "settings", "platform settings "
                                + (NO_MAC if stored is None else BAD_MAC)))
    return checked, problems, key_problems


# ---- vaults from before row MACs ------------------------------------------------------------

def adopt_legacy(ctx: Context) -> None:
    """MAC the rows of a vault created before row MACs (marked by migration m004), once, by
    the first command that unlocks it. Only a vault whose own history proves it predates row
    MACs is adopted: its audit chain is intact, its first entry (`vault.init`, MACed from the
    genesis) carries no `row_macs` mark, and no earlier adoption is in it. Anyone can write
    the marker; only the master key can write that history, so a forged marker (to have
    rows changed outside byokctl MACed) is dropped and its rows stay refused."""
    from byokctl.services import audit
    from byokctl.store import is_error

    store = ctx.store
    with store.tx():
        if store.meta(PENDING) is None:
            return  # another process adopted it meanwhile
        store.set_meta(PENDING, None)
        why = _not_legacy(ctx)
        if why is not None:
            audit.record(ctx, "vault.mac_rows", after={"adopted": False, "why": why})
            return
        sealed = 0
        for table in TABLES:
            for pk in store.rows.unmaced(table):
                try:
                    seal(ctx, table, pk)
                except Exception as exc:
                    if not (isinstance(exc, (TypeError, ValueError)) or is_error(exc)):
                        raise
                    continue  # a value no byokctl row holds: left unMACed, so `vault check` names it
                sealed += 1
        if store.meta(rowmac.PLATFORM_MAC) is None:
            seal_platform(ctx)
        audit.record(ctx, "vault.mac_rows", after={"adopted": True, "rows": sealed})


def _not_legacy(ctx: Context) -> str | None:
    """Why the vault may not be adopted, or None if it predates row MACs."""
    import json

    from byokctl.services import audit
    from byokctl.vault import macs

    store = ctx.store
    if store.audit.has_action("vault.mac_rows"):
        return "its rows were MACed before"
    covered = ("seq", "ts", "actor", "action", "org", "target", "before", "after")  # no os_user
    first = store.audit.entry(1, (*covered, "mac"))
    if first is None or first["action"] != "vault.init":
        return "its audit log has no vault.init entry"
    try:
        genuine = macs.chain_mac(ctx.vault().audit_key, audit.GENESIS,
                                 audit._fields(*(first[c] for c in covered))) == first["mac"]
        marked = "row_macs" in json.loads(first["after"] or "{}")
    except (TypeError, ValueError):
        genuine = marked = False
    if not genuine:
        return "its vault.init audit entry does not verify"
    if marked:
        return "it was created with row MACs"
    _, problems = audit.verify(ctx)
    if problems:
        return f"its audit chain is broken at {problems[0].to_json()}"
    return None
