"""Keyed hashes over the stdlib only, so audit and fingerprints never load `cryptography`."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable

# The canonical body of an audit entry: compact JSON, non-ASCII kept (one encoder, reused).
_canonical = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def subkey(root: bytes, label: str) -> bytes:
    """A purpose-bound key derived from a root key (HMAC-SHA256 as a one-block HKDF-Expand)."""
    return hmac.new(root, b"byokctl/" + label.encode() + b"\x01", hashlib.sha256).digest()


def canonical(fields: list) -> bytes:
    """The bytes an audit link's MAC covers for `fields` (as `json.dumps` with compact
    separators and ensure_ascii=False)."""
    return _canonical(fields).encode()


def chain_mac(key: bytes, prev_mac: str, fields: list) -> str:
    """One audit link: HMAC over the previous link's MAC and this entry's canonical content."""
    return hmac.new(key, prev_mac.encode() + b"\n" + canonical(fields), hashlib.sha256).hexdigest()


def hmac_sha256_hex(key: bytes) -> Callable[[bytes], str]:
    """`hmac.new(key, msg, sha256).hexdigest()` for many messages under one key: the keyed
    inner and outer states (RFC 2104) are computed once and copied per message, which
    roughly halves the cost of a short message."""
    block = 64
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    icopy, ocopy = inner.copy, outer.copy

    def mac(msg: bytes) -> str:
        i = icopy()
        i.update(msg)
        o = ocopy()
        o.update(i.digest())
        return o.hexdigest()

    return mac


def tag(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
