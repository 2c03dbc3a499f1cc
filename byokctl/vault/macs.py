"""Keyed hashes over the stdlib only, so audit and fingerprints never load `cryptography`."""

from __future__ import annotations

import hashlib
import hmac
import json


def subkey(root: bytes, label: str) -> bytes:
    """A purpose-bound key derived from a root key (HMAC-SHA256 as a one-block HKDF-Expand)."""
    return hmac.new(root, b"byokctl/" + label.encode() + b"\x01", hashlib.sha256).digest()


def chain_mac(key: bytes, prev_mac: str, fields: list) -> str:
    """One audit link: HMAC over the previous link's MAC and this entry's canonical content."""
    body = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    return hmac.new(key, prev_mac.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def tag(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
