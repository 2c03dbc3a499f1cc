"""Envelope encryption primitives: AES-256-GCM with associated data, HKDF sub-keys, MACs."""

from __future__ import annotations

import json
import os
from json.encoder import encode_basestring_ascii as _json_str
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12

__all__ = ["AESGCM", "InvalidTag", "new_key", "seal", "open_sealed", "wrap", "unwrap",
           "secret_ad", "data_key_ad"]


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes | AESGCM, plaintext: bytes, ad: bytes) -> tuple[bytes, bytes]:
    """Encrypt under a fresh 96-bit nonce; returns (nonce, ciphertext+tag). `key` may be an
    AESGCM made once for many secrets under one data key."""
    nonce = os.urandom(NONCE_BYTES)
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    return nonce, cipher.encrypt(nonce, plaintext, ad)


def open_sealed(key: bytes | AESGCM, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Decrypt; raises InvalidTag if the key, the ciphertext or the associated data differ."""
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    return cipher.decrypt(nonce, ciphertext, ad)


def wrap(master: bytes, key: bytes, ad: bytes) -> bytes:
    nonce, ct = seal(master, key, ad)
    return nonce + ct


def unwrap(master: bytes, blob: bytes, ad: bytes) -> bytes:
    return open_sealed(master, blob[:NONCE_BYTES], blob[NONCE_BYTES:], ad)


def secret_ad(
    vault_id: str,
    key_id: str,
    scope: str,
    org: str | None,
    member: str | None,
    provider: str,
    version: int,
) -> bytes:
    """Associated data binding a ciphertext to its row: moved anywhere else, it won't open.

    The bytes of `json.dumps([...], separators=(",", ":"))`, written out by hand because
    `vault check` and `rekey` build one per secret (a third of json.dumps's cost)."""
    return (f'["byokctl-secret/1",{_json(vault_id)},{_json(key_id)},{_json(scope)},'
            f'{_json(org)},{_json(member)},{_json(provider)},{_json(version)}]').encode()


def _json(value: Any) -> str:
    """One value exactly as json.dumps (ensure_ascii) writes it."""
    kind = type(value)
    if kind is str:
        return _json_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    return json.dumps(value)  # anything else a damaged row may hold (bytes raise TypeError)


def data_key_ad(vault_id: str, data_key_id: int, purpose: str) -> bytes:
    return f"byokctl-data-key/1|{vault_id}|{data_key_id}|{purpose}".encode()

