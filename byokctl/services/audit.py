"""The tamper-evident audit log: append inside a write transaction, query, verify the chain.

Each entry's MAC covers its content and the previous MAC; the vault keeps the chain head
(last seq and MAC, itself MACed), so an edit, insertion, deletion, reorder or truncation
all show up, and `verify` names the first bad entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from byokctl import clock
from byokctl.services.context import Context

GENESIS = "genesis"


def _dump(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _fields(seq: int, ts: str, actor: str, action: str, org: str | None, target: str | None,
            before: str | None, after: str | None) -> list:
    return [seq, ts, actor, action, org, target, before, after]


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
    mac = macs.chain_mac(key, prev_mac, _fields(seq, ts, ctx.actor, action, org, target, b, a))
    store.conn.execute(
        "INSERT INTO audit (seq, ts, actor, action, org, target, before, after, mac) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, ts, ctx.actor, action, org, target, b, a, mac),
    )
    head_text = _head_text(seq, mac)
    store.set_meta("audit_head", head_text)
    store.set_meta("audit_head_tag", macs.tag(key, "audit-head|" + head_text))
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
) -> list[Entry]:
    """Newest first. `action` matches exactly or as a prefix group (`key` → `key.*`)."""
    where, params = [], []
    if org:
        where.append("org = ?")
        params.append(org)
    if action:
        where.append("(action = ? OR action LIKE ? ESCAPE '\\')")
        params += [action, action.replace("_", "\\_").replace("%", "\\%") + ".%"]
    if actor:
        where.append("actor = ?")
        params.append(actor)
    if since:
        where.append("ts >= ?")
        params.append(since)
    sql = "SELECT seq, ts, actor, action, org, target, before, after FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return [
        Entry(r["seq"], r["ts"], r["actor"], r["action"], r["org"], r["target"],
              json.loads(r["before"]) if r["before"] else None,
              json.loads(r["after"]) if r["after"] else None)
        for r in ctx.store.conn.execute(sql, params)
    ]


@dataclass
class Problem:
    ref: str  # "seq" or "key_id"
    value: int | str
    problem: str

    def to_json(self) -> dict:
        return {self.ref: self.value, "problem": self.problem}


def verify(ctx: Context) -> tuple[int, list[Problem]]:
    """Walk the chain; returns (entries checked, problems), the first bad entry first."""
    from byokctl.vault import macs

    key = ctx.vault().audit_key
    store = ctx.store
    problems: list[Problem] = []
    prev_mac, expected, checked = GENESIS, 1, 0
    cur = store.conn.execute(
        "SELECT seq, ts, actor, action, org, target, before, after, mac FROM audit ORDER BY seq"
    )
    for r in cur:
        checked += 1
        seq = r["seq"]
        if seq != expected:
            what = "missing" if seq > expected else "duplicated"
            span = f"{expected}" if seq == expected + 1 else f"{expected}-{seq - 1}"
            problems.append(Problem("seq", expected, f"entries {span} {what} (deleted)"))
            break
        fields = _fields(seq, r["ts"], r["actor"], r["action"], r["org"], r["target"],
                         r["before"], r["after"])
        if macs.chain_mac(key, prev_mac, fields) != r["mac"]:
            problems.append(Problem("seq", seq, "entry altered, inserted or reordered (MAC mismatch)"))
            break
        prev_mac, expected = r["mac"], seq + 1
    head = store.meta("audit_head")
    head_tag = store.meta("audit_head_tag")
    if not problems:
        last = expected - 1
        if head is None:
            if last:
                problems.append(Problem("seq", 1, "entries present but the chain head is missing"))
            elif store.meta("vault_id"):  # `init` always writes entry 1
                problems.append(Problem("seq", 1, "the whole log and its chain head were deleted"))
        elif head_tag != macs.tag(key, "audit-head|" + head):
            problems.append(Problem("seq", last, "chain head altered"))
        else:
            head_seq, head_mac = int(head.split(":", 1)[0]), head.split(":", 1)[1]
            if head_seq > last:
                problems.append(
                    Problem("seq", last + 1, f"entries {last + 1}-{head_seq} missing (truncated)")
                )
            elif head_seq < last:
                problems.append(Problem("seq", head_seq + 1, "entries appended outside byokctl"))
            elif head_mac != prev_mac:
                problems.append(Problem("seq", last, "entry does not match the chain head"))
    return checked, problems
