"""The tamper-evident audit log: append inside a write transaction, query, verify the chain.

Each entry's MAC covers its content and the previous MAC; the vault keeps the chain head
(last seq and MAC, itself MACed), so an edit, insertion, deletion, reorder or truncation
all show up, and `verify` names the first bad entry.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from byokctl import clock
from byokctl.services.context import Context

if TYPE_CHECKING:
    from byokctl.store import Row, Store
    from byokctl.vault.envelope import Vault

GENESIS = "genesis"


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fields(seq: int, ts: str, actor: str, action: str, org: str | None, target: str | None,
            before: str | None, after: str | None, os_user: str | None = None) -> list:
    """What an entry's MAC covers; `os_user` only when set, so entries from before it existed
    (and the operator's own, which have none) keep their MACs."""
    fields = [seq, ts, actor, action, org, target, before, after]
    return fields if os_user is None else [*fields, os_user]


def _head_text(seq: int, mac: str) -> str:
    return f"{seq}:{mac}"


def record(
    ctx: Context,
    action: str,
    *,
    org: str | None = None,
    target: str | None = None,
    before: Any = None,
    after: Any = None,
) -> int:
    """Append one entry; must run inside `ctx.write()`. Returns its sequence number."""
    from byokctl.vault import macs  # hashlib/hmac: not needed by commands that only read

    store = ctx.store
    key = ctx.vault().audit_key
    head = store.meta("audit_head")
    if head:
        last_seq, prev_mac = int(head.split(":", 1)[0]), head.split(":", 1)[1]
    else:
        last_seq, prev_mac = 0, GENESIS
    seq = last_seq + 1
    ts = clock.stamp()
    b, a = _dump(before), _dump(after)
    os_user = ctx.os_user
    mac = macs.chain_mac(key, prev_mac, _fields(seq, ts, ctx.actor, action, org, target, b, a, os_user))
    store.audit.append(seq, ts, ctx.actor, action, org, target, b, a, mac, os_user)
    head_text = _head_text(seq, mac)
    store.set_meta("audit_head", head_text)
    store.set_meta("audit_head_tag", macs.tag(key, "audit-head|" + head_text))
    ctx.audit_appended = True  # `Context.write` copies the head beside the master key on commit
    return seq


@dataclass
class Entry:
    seq: int
    ts: str
    actor: str
    action: str
    org: str | None
    target: str | None
    before: Any
    after: Any
    os_user: str | None = None  # with `--as`: the OS account that ran the command

    def to_json(self) -> dict:
        return self.__dict__.copy()


def log(
    ctx: Context,
    *,
    org: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    since: str | None = None,
    limit: int | None = None,
    from_seq: int | None = None,
) -> list[Entry]:
    """Newest first. `action` matches exactly or as a prefix group (`key` → `key.*`);
    `from_seq` drops older entries (an org's lifetime, `lifetime_start`)."""
    return list(entries(ctx, org=org, action=action, actor=actor, since=since, limit=limit,
                        from_seq=from_seq))


def entries(
    ctx: Context,
    *,
    org: str | None = None,
    action: str | None = None,
    actor: str | None = None,
    since: str | None = None,
    limit: int | None = None,
    from_seq: int | None = None,
) -> Iterator[Entry]:
    """`log`, one entry at a time as the store reads it (memory stays flat in the log's size);
    the store must stay open until it is exhausted."""
    rows = ctx.store.audit.query(org=org, action=action, actor=actor, since=since, limit=limit,
                                 from_seq=from_seq)
    for seq, ts, who, what, in_org, target, before, after, os_user in rows:
        yield Entry(seq, ts, who, what, in_org, target, json.loads(before) if before else None,
                    json.loads(after) if after else None, os_user)


def lifetime_start(ctx: Context, org: str) -> int:
    """Where the current org of this slug begins in the log: its latest `org.create` entry
    (0 if none). An org deleted and created again under the same slug is a new tenant, and
    its members must not read their predecessor's emails, fingerprints or credit reasons."""
    return ctx.store.audit.last_seq(org, "org.create") or 0


def org_log_from(ctx: Context, org: str, *, include_previous: bool = False) -> int | None:
    """The first seq `audit log --org ORG` shows: the org's current lifetime, for members
    and (by default) the operator; the operator alone may add the earlier orgs of the slug
    (`include_previous`, None: from the start). Denied for a member who asks for them."""
    if include_previous:
        from byokctl.services.permissions import require_operator

        require_operator(ctx, "read the audit log of earlier orgs of this slug (--include-previous)")
        return None
    return lifetime_start(ctx, org)


@dataclass
class Problem:
    ref: str  # "seq" or "key_id"
    value: int | str
    problem: str

    def to_json(self) -> dict:
        return {self.ref: self.value, "problem": self.problem}


def verify(ctx: Context) -> tuple[int, list[Problem]]:
    """Walk the chain; returns (entries checked, problems), the first bad entry first.

    Streams the log (memory stays flat in its size), in one pass: the store builds each
    entry's MAC'd body (`store.audit.chain_bodies`), and a MAC that does not match is checked
    again with the reference encoding before it is reported. A row the store cannot turn
    into JSON or text (a BLOB or bytes that are not UTF-8, written outside byokctl) sends the
    whole walk down the reference path, which reads such values leniently and reports them."""
    from byokctl.store import is_error

    ctx.defer_head_check = True  # a rolled-back vault is reported below, not refused at unlock
    key = ctx.vault().audit_key
    try:
        checked, problems, last_mac, last_seq = _walk_fast(ctx.store, key)
    except Exception as exc:
        if not is_error(exc):
            raise
        checked, problems, last_mac, last_seq = _walk_reference(ctx.store, key)
    if not problems:
        problems += _check_head(ctx.store, key, last_seq, last_mac)
    if not problems and (found := saved_head_problem(ctx, ctx.vault())):
        problems.append(found[0])
    return checked, problems


def _gap(seq: int, expected: int) -> Problem:
    what = "missing" if seq > expected else "duplicated"
    span = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
    return Problem("seq", expected, f"entries {span} {what} (deleted)")


_ALTERED = "entry altered, inserted or reordered (MAC mismatch)"


def _walk_fast(store: Store, key: bytes) -> tuple[int, list[Problem], str, int]:
    from byokctl.vault import macs

    digest = macs.hmac_sha256_hex(key)
    prev, expected, checked = GENESIS, 1, 0
    for seq, body, mac in store.audit.chain_bodies():
        checked += 1
        if seq != expected:
            return checked, [_gap(seq, expected)], prev, expected - 1
        if digest(prev.encode() + b"\n" + body) != mac and not _reference_ok(store, key, prev, seq):
            return checked, [Problem("seq", seq, _ALTERED)], prev, expected - 1
        prev, expected = mac, seq + 1
    return checked, [], prev, expected - 1


def _entry_fields(r: Row) -> list:
    """What an entry's MAC covers, from its stored row (`store.audit.entry`)."""
    return _fields(r["seq"], r["ts"], r["actor"], r["action"], r["org"], r["target"], r["before"],
                   r["after"], r["os_user"])


def _reference_ok(store: Store, key: bytes, prev: str, seq: int) -> bool:
    """The entry's MAC checked with the reference encoding (macs.chain_mac, as `record`)."""
    from byokctl.vault import macs

    r = store.audit.entry(seq)
    try:
        return macs.chain_mac(key, prev, _entry_fields(r)) == r["mac"]
    except (TypeError, ValueError):  # a value no entry byokctl wrote can hold
        return False


def _walk_reference(store: Store, key: bytes) -> tuple[int, list[Problem], str, int]:
    from byokctl.vault import macs

    with store.lenient():  # a mangled text column is reported, never a crash
        prev, expected, checked = GENESIS, 1, 0
        for r in store.audit.in_order():
            checked += 1
            seq = r["seq"]
            if seq != expected:
                return checked, [_gap(seq, expected)], prev, expected - 1
            try:
                ok = macs.chain_mac(key, prev, _entry_fields(r)) == r["mac"]
            except (TypeError, ValueError):
                ok = False
            if not ok:
                return checked, [Problem("seq", seq, _ALTERED)], prev, expected - 1
            prev, expected = r["mac"], seq + 1
        return checked, [], prev, expected - 1


def _check_head(store: Store, key: bytes, last: int, last_mac: str) -> list[Problem]:
    """The chain head (last seq and MAC, itself MACed) against the walk's end: catches a
    truncated log, or entries appended outside byokctl."""
    from byokctl.vault import macs

    head = store.meta("audit_head")
    head_tag = store.meta("audit_head_tag")
    if head is None:
        if last:
            return [Problem("seq", 1, "entries present but the chain head is missing")]
        if store.meta("vault_id"):  # `init` always writes entry 1
            return [Problem("seq", 1, "the whole log and its chain head were deleted")]
        return []
    if head_tag != macs.tag(key, "audit-head|" + head):
        return [Problem("seq", last, "chain head altered")]
    head_seq, head_mac = int(head.split(":", 1)[0]), head.split(":", 1)[1]
    if head_seq > last:
        return [Problem("seq", last + 1, f"entries {last + 1}-{head_seq} missing (truncated)")]
    if head_seq < last:
        return [Problem("seq", head_seq + 1, "entries appended outside byokctl")]
    if head_mac != last_mac:
        return [Problem("seq", last, "entry does not match the chain head")]
    return []


# ---- anchors outside the vault -------------------------------------------------------------------
# Nothing inside one file can tell a whole older copy of it (or a cut tail with an older head
# put back) from the real thing, since each is self-consistent. An anchor is the head kept
# elsewhere: printed by `audit anchor` for the operator, and kept automatically beside a master
# key that lives in a key file or the keyring, then checked at every unlock.

@dataclass
class Anchor:
    seq: int
    mac: str
    ts: str | None

    def to_json(self) -> dict:
        return {"seq": self.seq, "mac": self.mac, "ts": self.ts}


def current_anchor(ctx: Context) -> Anchor:
    """The chain head, once the whole chain verifies (an anchor of a broken log is worthless)."""
    from byokctl.errors import Integrity

    _checked, problems = verify(ctx)
    if problems:
        first = problems[0]
        raise Integrity(f"Audit entry {first.value}: {first.problem}, so there is no head to anchor",
                        "restore the vault from a backup and run `byokctl audit verify`")
    head = ctx.store.meta("audit_head") or ""
    seq, mac = int(head.split(":", 1)[0]), head.split(":", 1)[1]
    return Anchor(seq, mac, ctx.store.audit.ts_at(seq))


def parse_anchor(text: str, where: str) -> tuple[int, str]:
    """(seq, mac) from an anchor: `audit anchor --json` output, its `seq:`/`mac:` lines, or
    `SEQ:MAC`; a UsageError naming `where` otherwise."""
    import re

    from byokctl.errors import UsageError

    seq = mac = None
    try:
        doc = json.loads(text)
        if isinstance(doc, dict):
            seq, mac = doc.get("seq"), doc.get("mac")
    except ValueError:
        fields = dict(re.findall(r"^\s*(seq|mac)\s*:\s*(\S+)\s*$", text, re.MULTILINE))
        if fields:
            seq, mac = fields.get("seq"), fields.get("mac")
        elif m := re.fullmatch(r"\s*(\d+):([0-9a-f]{16,})\s*", text):
            seq, mac = m.group(1), m.group(2)
    try:
        seq = int(seq)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seq = None
    if not seq or seq < 1 or not isinstance(mac, str) or not mac:
        raise UsageError(f"{where} holds no audit anchor", "save one with `byokctl audit anchor --json "
                         f"> {where}`")
    return seq, mac


def check_anchor(ctx: Context, seq: int, mac: str) -> list[Problem]:
    """Whether the chain still holds entry `seq` with that MAC."""
    stored = ctx.store.audit.mac_at(seq)
    if stored is None:
        return [Problem("seq", seq, "the anchored entry is gone: the log was cut, or an older "
                                    "copy of the vault was put back")]
    if stored != mac:
        return [Problem("seq", seq, "the anchored entry was replaced (its MAC is not the anchor's)")]
    return []


def save_head(ctx: Context) -> None:
    """Copy the committed head beside the master key (key file or keyring); best effort, since
    the write it follows has committed, and a copy that lags only anchors an older entry."""
    from byokctl.errors import ByokError
    from byokctl.vault import master as mk

    vault = ctx._vault
    if vault is None or vault.master.source not in ("keyring", "file"):
        return  # no place for it: not even a read
    head = ctx.store.meta("audit_head")
    if head is None:
        return
    with contextlib.suppress(ByokError, OSError):
        mk.write_head(vault.master.source, vault.vault_id, ctx.store.meta("master_key_file"), head)


def check_saved_head(ctx: Context, vault: Vault) -> None:
    """At unlock: the head kept beside the master key must still be in the chain; else the
    vault was rolled back (exit 13). `verify` reports it as a problem instead."""
    from byokctl.errors import Integrity

    if found := saved_head_problem(ctx, vault):
        raise Integrity(*found[1:])


def saved_head_problem(ctx: Context, vault: Vault) -> tuple[Problem, str, str] | None:
    """(problem, what, fix) if the chain no longer reaches the head kept beside the master
    key. Read before the table, so a head saved by a concurrent writer is never newer than
    what the query sees. Where there is no copy yet, this vault's head becomes it."""
    from byokctl.errors import ByokError
    from byokctl.vault import master as mk

    source = vault.master.source
    if source not in ("keyring", "file"):
        return None
    key_file = ctx.store.meta("master_key_file")
    text = mk.read_head(source, vault.vault_id, key_file)
    if text is None:  # a vault from before anchors, or one restored on purpose: start here
        head = ctx.store.meta("audit_head")
        if head is not None:
            with contextlib.suppress(ByokError, OSError):
                mk.write_head(source, vault.vault_id, key_file, head)
        return None
    where = mk.head_location(source, vault.vault_id, key_file)
    try:
        seq, mac = parse_anchor(text, str(where))
    except ByokError:
        seq, problems = 0, [Problem("seq", 0, f"the head kept in {where} is unreadable")]
    else:
        problems = check_anchor(ctx, seq, mac)
    if not problems:
        return None
    reset = (f"delete {where}" if source == "file" else
             f"delete that keyring entry (`keyring del {mk.KEYRING_SERVICE} "
             f"{mk.keyring_user(vault.vault_id)}.head`)")
    problem = Problem("seq", seq, f"the log no longer reaches entry {seq} recorded in {where}: "
                                  + problems[0].problem)
    what = (f"This vault's audit log no longer reaches entry {seq} recorded in {where} (an older "
            "copy of the vault was put back, or its log was cut)")
    fix = (f"restore the newest copy of the vault, or if this copy was restored on purpose, {reset}, "
           "then run `byokctl audit verify`")
    return problem, what, fix
