"""Row MACs: which columns of a security- or money-relevant row are authenticated, their
canonical bytes and the keyed hash over them (stdlib only: no `cryptography` needed).

A row written to the file without the master key cannot carry a matching MAC, so the
services refuse it at use and `vault check` names it (SPEC §2). Secrets' ciphertexts, nonces
and data key ids are left out: AES-GCM already authenticates them, bound to their row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

# hashlib/hmac are imported by the functions, not here: the read-only commands import the
# services that name these columns, and must not pay for loading OpenSSL's hashes.

# Every column that decides where a key goes, who may do what, or what money moves; only
# `updated_at` (display) and the secret's own sealed parts are left out.
ORG_COLUMNS = ("slug", "name", "plan", "credits", "shortfall", "provider", "model", "base_url",
               "fallback", "budget_monthly_usd", "grace_until", "grace_reason", "created_at")
MEMBER_COLUMNS = ("org", "email", "role", "created_at")
KEY_COLUMNS = ("id", "scope", "org", "member", "provider", "version", "hint", "fingerprint",
               "status", "test_result", "created_at", "rotated_at", "last_used_at",
               "last_tested_at")
# Where a member's personal key may be sent (services/endpoints.py): a forged approval would
# send it to a base_url its owner never agreed to.
APPROVAL_COLUMNS = ("org", "member", "provider", "base_url", "approved_by", "approved_as",
                    "approved_at")
COLUMNS = {"orgs": ORG_COLUMNS, "members": MEMBER_COLUMNS, "keys": KEY_COLUMNS,
           "endpoint_approvals": APPROVAL_COLUMNS}
PRIMARY_KEYS = {"orgs": ("slug",), "members": ("org", "email"), "keys": ("id",),
                "endpoint_approvals": ("org", "member", "provider", "base_url")}

# The platform settings, kept in `meta`: MACed together as one record under PLATFORM_MAC.
PLATFORM_META = ("platform_provider", "platform_model", "platform_base_url", "credit_usd")
PLATFORM_MAC = "platform_mac"


def row_key(mac_root: bytes) -> bytes:
    """The key of row MACs, bound to this purpose (the vault's MAC root survives a rekey)."""
    from byokctl.vault import macs

    return macs.subkey(mac_root, "row-mac")


def mac(key: bytes, table: str, values: Sequence) -> str:
    """The MAC of one row: its table and its authenticated values in COLUMNS order (or the
    platform record's in PLATFORM_META order). TypeError/ValueError for a value no row
    byokctl wrote can hold (bytes, text that is not UTF-8)."""
    import hashlib
    import hmac

    from byokctl.vault import macs

    return hmac.new(key, macs.canonical([table, *values]), hashlib.sha256).hexdigest()


def checker(key: bytes) -> Callable[[str, Sequence, object], bool]:
    """`matches` for many rows under one key (`vault check`): the HMAC's keyed states are
    computed once (macs.hmac_sha256_hex), which more than halves the cost of a row."""
    import hmac

    from byokctl.vault import macs

    sign, canonical, same = macs.hmac_sha256_hex(key), macs.canonical, hmac.compare_digest

    def intact(table: str, values: Sequence, stored: object) -> bool:
        if not isinstance(stored, str):
            return False
        try:
            expected = sign(canonical([table, *values]))
        except (TypeError, ValueError):
            return False
        return same(expected, stored)

    return intact


def matches(key: bytes, table: str, values: Sequence, stored: object) -> bool:
    """Whether `stored` is the MAC of these values (constant time); a missing MAC never is."""
    import hmac

    if not isinstance(stored, str):
        return False
    try:
        expected = mac(key, table, values)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(expected, stored)
