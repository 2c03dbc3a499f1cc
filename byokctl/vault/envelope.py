"""The unlocked vault: data keys opened with the master key, secret sealing, fingerprints.

A `Vault` is obtained with `unlock(store)`; commands that need no secret never unlock, so
they keep working without a master key (and never import `cryptography` or `keyring`).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from dataclasses import dataclass

from byokctl import clock
from byokctl.errors import Integrity, VaultLocked
from byokctl.store import Store
from byokctl.vault import crypto, macs
from byokctl.vault.master import MasterKey, candidates

FINGERPRINT_PREFIX = "fp_"


@dataclass
class Vault:
    vault_id: str
    master: MasterKey
    secrets_keys: dict[int, bytes]
    active_id: int
    next_id: int | None
    mac_root: bytes

    @property
    def audit_key(self) -> bytes:
        return macs.subkey(self.mac_root, "audit-chain")

    @property
    def fingerprint_key(self) -> bytes:
        return macs.subkey(self.mac_root, "fingerprint")

    def fingerprint(self, secret: str) -> str:
        """A keyed hash: the same secret is recognisable across orgs, yet never revealed."""
        digest = hmac.new(self.fingerprint_key, secret.encode(), hashlib.sha256).hexdigest()
        return FINGERPRINT_PREFIX + digest[:16]

    def seal(
        self,
        secret: str,
        *,
        key_id: str,
        scope: str,
        org: str | None,
        member: str | None,
        provider: str,
        version: int,
        data_key_id: int | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Encrypt a secret bound to its row; returns (data_key_id, nonce, ciphertext)."""
        dk_id = self.active_id if data_key_id is None else data_key_id
        ad = crypto.secret_ad(self.vault_id, key_id, scope, org, member, provider, version)
        nonce, ct = crypto.seal(self.secrets_keys[dk_id], secret.encode(), ad)
        return dk_id, nonce, ct

    def open(self, row: object) -> str:
        """Decrypt a `keys` row; raises Integrity if it was tampered with or moved."""
        r = row  # sqlite3.Row or mapping with the keys-table columns
        key = self.secrets_keys.get(r["data_key_id"])  # type: ignore[index]
        ad = crypto.secret_ad(
            self.vault_id, r["id"], r["scope"], r["org"], r["member"],  # type: ignore[index]
            r["provider"], r["version"],  # type: ignore[index]
        )
        try:
            if key is None:
                raise crypto.InvalidTag
            return crypto.open_sealed(key, r["nonce"], r["ciphertext"], ad).decode()  # type: ignore[index]
        except (crypto.InvalidTag, UnicodeDecodeError):
            raise Integrity(
                f"Key {r['id']} cannot be decrypted: its ciphertext was altered or belongs to "  # type: ignore[index]
                f"another row; replace the secret with `byokctl key rotate {r['id']}`"  # type: ignore[index]
            ) from None


def _data_key_rows(store: Store) -> list:
    return store.all("SELECT id, purpose, state, wrapped FROM data_keys ORDER BY id")


def _open_with(master: MasterKey, vault_id: str, rows: list) -> Vault:
    secrets: dict[int, bytes] = {}
    active_id = next_id = None
    mac_root = None
    for row in rows:
        ad = crypto.data_key_ad(vault_id, row["id"], row["purpose"])
        key = crypto.unwrap(master.key, row["wrapped"], ad)  # raises InvalidTag
        if row["purpose"] == "mac":
            mac_root = key
        else:
            secrets[row["id"]] = key
            if row["state"] == "active":
                active_id = row["id"]
            else:
                next_id = row["id"]
    if mac_root is None or active_id is None:
        raise Integrity("The vault's key table is incomplete; restore the vault from a backup")
    return Vault(vault_id, master, secrets, active_id, next_id, mac_root)


def vault_id(store: Store) -> str:
    vid = store.meta("vault_id")
    if vid is None:
        raise Integrity(f"{store.path} has no vault id; it was not created by `byokctl init`")
    return vid


def unlock(store: Store) -> Vault:
    """Open the vault's data keys with the first master key that fits; else VaultLocked."""
    vid = vault_id(store)
    rows = _data_key_rows(store)
    tried = candidates(vid, store.meta("master_source", "keyring"), store.meta("master_key_file"))
    for master in tried:
        try:
            return _open_with(master, vid, rows)
        except crypto.InvalidTag:
            continue
    where = tried[0].location
    raise VaultLocked(
        f"The master key from {where} does not open this vault ({store.path}); set "
        "$BYOKCTL_MASTER_KEY to this vault's key, or point --db at the vault it belongs to"
    )


def new_vault_id() -> str:
    return uuid.uuid4().hex


def initialize(store: Store, master: MasterKey, vid: str, key_file: str | None = None) -> Vault:
    """Write a new vault's identity and wrapped data keys (inside the caller's transaction)."""
    now = clock.stamp()
    store.set_meta("vault_id", vid)
    store.set_meta("created_at", now)
    store.set_meta("master_source", master.source)
    store.set_meta("master_key_file", key_file)
    for purpose in ("secrets", "mac"):
        cur = store.conn.execute(
            "INSERT INTO data_keys (purpose, state, wrapped, created_at) VALUES (?, 'active', ?, ?)",
            (purpose, b"", now),
        )
        dk_id = cur.lastrowid
        wrapped = crypto.wrap(master.key, crypto.new_key(), crypto.data_key_ad(vid, dk_id, purpose))
        store.conn.execute("UPDATE data_keys SET wrapped = ? WHERE id = ?", (wrapped, dk_id))
    return _open_with(master, vid, _data_key_rows(store))

