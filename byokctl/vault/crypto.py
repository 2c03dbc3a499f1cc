"""Envelope encryption primitives: AES-256-GCM with associated data, HKDF sub-keys, MACs."""

from __future__ import annotations

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12

__all__ = ["InvalidTag", "new_key", "seal", "open_sealed", "wrap", "unwrap", "secret_ad", "data_key_ad"]


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, ad: bytes) -> tuple[bytes, bytes]:
    """Encrypt under a fresh 96-bit nonce; returns (nonce, ciphertext+tag)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce, AESGCM(key).encrypt(nonce, plaintext, ad)


def open_sealed(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Decrypt; raises InvalidTag if the key, the ciphertext or the associated data differ."""
    return AESGCM(key).decrypt(nonce, ciphertext, ad)


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
    """Associated data binding a ciphertext to its row: moved anywhere else, it won't open."""
    return json.dumps(
        ["byokctl-secret/1", vault_id, key_id, scope, org, member, provider, version],
        separators=(",", ":"),
    ).encode()


def data_key_ad(vault_id: str, data_key_id: int, purpose: str) -> bytes:
    return f"byokctl-data-key/1|{vault_id}|{data_key_id}|{purpose}".encode()

