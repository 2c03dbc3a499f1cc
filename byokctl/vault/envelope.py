"""The unlocked vault: data keys opened with the master key, secret sealing, fingerprints.

Bytes in, bytes out: this module never reads or writes the store. The wrapped data keys come
in as `(id, purpose, state, wrapped)` tuples; `services.vaultkeys.unlock(store)` reads them
and hands back a `Vault`. Commands that need no secret never unlock, so they keep working
without a master key (and never import `cryptography` or `keyring`).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

from byokctl.errors import Conflict, Integrity
from byokctl.vault import crypto, macs
from byokctl.vault.master import MasterKey

FINGERPRINT_PREFIX = "fp_"
INTACT_ROWS_KEPT = 4096  # rows a vault remembers as checked (Vault.row_intact)

WrappedKey = tuple[int, str, str, bytes]  # a data key as stored: (id, purpose, state, wrapped)


@dataclass
class Vault:
    vault_id: str
    master: MasterKey
    secrets_keys: dict[int, bytes]
    active_id: int
    next_id: int | None
    mac_root: bytes
    # One AESGCM per data key (by its bytes, which a rekey or refresh cannot make stale):
    # `vault check` and `rekey` open every secret, and building the cipher costs more than
    # decrypting one short secret.
    _ciphers: dict[bytes, crypto.AESGCM] = field(default_factory=dict, repr=False)
    # This unlock finished a pending rotation (`stage_pending`): the caller audits it.
    rotation_finished: bool = field(default=False, repr=False)
    # Rows whose MAC this vault has checked or made, as (the bytes the MAC covers, the MAC): a
    # row read again unchanged (an org and the platform settings at every request, a key's
    # row as its last record left it) is known intact without its HMAC computed again. Keyed
    # by those exact bytes, not by the values (5 == 5.0 == True in Python, not in the MAC), so
    # the memo answers what the HMAC would. Only matches are kept; cleared when full.
    _intact_rows: dict[tuple[bytes, str], None] = field(default_factory=dict, repr=False)

    @cached_property
    def audit_key(self) -> bytes:
        return macs.subkey(self.mac_root, "audit-chain")

    @cached_property
    def row_key(self) -> bytes:
        """Authenticates the rows that decide where keys go and what money moves (rowmac)."""
        from byokctl.vault import rowmac

        return rowmac.row_key(self.mac_root)

    @cached_property
    def _row_sign(self) -> Callable[[bytes], str]:
        return macs.hmac_sha256_hex(self.row_key)

    def row_mac(self, table: str, values: Sequence) -> str:
        """The MAC of a row (`rowmac.mac` under this vault's row key): its table and its
        authenticated values in `rowmac.COLUMNS` order. TypeError/ValueError for a value no
        row byokctl writes can hold."""
        body = macs.canonical([table, *values])
        mac = self._row_sign(body)
        self._remember(body, mac)
        return mac

    def row_intact(self, table: str, values: Sequence, stored: object) -> bool:
        """Whether `stored` is the MAC of these values (`rowmac.matches`, constant time); a
        missing MAC never is."""
        if not isinstance(stored, str):
            return False
        try:
            body = macs.canonical([table, *values])
        except (TypeError, ValueError):
            return False
        if (body, stored) in self._intact_rows:
            return True
        if not hmac.compare_digest(self._row_sign(body), stored):
            return False
        self._remember(body, stored)
        return True

    def _remember(self, body: bytes, mac: str) -> None:
        if len(self._intact_rows) >= INTACT_ROWS_KEPT:
            self._intact_rows.clear()
        self._intact_rows[(body, mac)] = None

    @cached_property
    def fingerprint_key(self) -> bytes:
        return macs.subkey(self.mac_root, "fingerprint")

    @cached_property
    def _fingerprint_mac(self) -> Callable[[bytes], str]:
        return macs.hmac_sha256_hex(self.fingerprint_key)

    def fingerprint(self, secret: str) -> str:
        """A keyed hash: the same secret is recognisable across orgs, yet never revealed."""
        return FINGERPRINT_PREFIX + self._fingerprint_mac(secret.encode())[:16]

    def _cipher(self, dk_id: int) -> crypto.AESGCM | None:
        key = self.secrets_keys.get(dk_id)
        if key is None:
            return None
        cipher = self._ciphers.get(key)
        if cipher is None:
            cipher = self._ciphers[key] = crypto.AESGCM(key)
        return cipher

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
        if dk_id not in self.secrets_keys:
            raise KeyError(dk_id)
        ad = crypto.secret_ad(self.vault_id, key_id, scope, org, member, provider, version)
        nonce, ct = crypto.seal(self._cipher(dk_id), secret.encode(), ad)  # type: ignore[arg-type]
        return dk_id, nonce, ct

    def open(self, row: object) -> str:
        """Decrypt a `keys` row; raises Integrity if it was tampered with or moved."""
        r = row  # sqlite3.Row or mapping with the keys-table columns
        return self.open_fields(
            r["id"], r["scope"], r["org"], r["member"], r["provider"],  # type: ignore[index]
            r["version"], r["data_key_id"], r["nonce"], r["ciphertext"],  # type: ignore[index]
        )

    def open_with_ad(self, key_id: str, data_key_id: int, nonce: bytes, ciphertext: bytes,
                     ad: bytes) -> str:
        """`open` with the associated data already built (`crypto.SECRET_AD_SQL`)."""
        cipher = self._cipher(data_key_id)
        try:
            if cipher is None or not isinstance(nonce, bytes) or not isinstance(ciphertext, bytes):
                raise crypto.InvalidTag
            return crypto.open_sealed(cipher, nonce, ciphertext, ad).decode()
        except (crypto.InvalidTag, UnicodeDecodeError, ValueError, TypeError):
            raise _undecryptable(key_id) from None

    def open_fields(self, key_id: str, scope: str, org: str | None, member: str | None,
                    provider: str, version: int, data_key_id: int, nonce: bytes,
                    ciphertext: bytes) -> str:
        """`open` for a row already taken apart (the keys-table columns, in schema order)."""
        cipher = self._cipher(data_key_id)
        try:
            if cipher is None or not isinstance(nonce, bytes) or not isinstance(ciphertext, bytes):
                raise crypto.InvalidTag
            ad = crypto.secret_ad(self.vault_id, key_id, scope, org, member, provider, version)
            return crypto.open_sealed(cipher, nonce, ciphertext, ad).decode()
        except (crypto.InvalidTag, UnicodeDecodeError, ValueError, TypeError):
            raise _undecryptable(key_id) from None


def _undecryptable(key_id: str) -> Integrity:
    return Integrity(
        f"Key {key_id} cannot be decrypted: its ciphertext was altered or belongs to another "
        "row", f"replace the secret with `byokctl key rotate {key_id}`"
    )


def open_data_keys(master: MasterKey, vault_id: str, rows: Iterable[WrappedKey]) -> Vault:
    """Unwrap every data key; InvalidTag if this master key is not the vault's.

    A rotation re-wraps all rows in one transaction, so a key that opens some rows but not
    others means a damaged row, not a wrong key.
    """
    secrets: dict[int, bytes] = {}
    active_id = next_id = None
    mac_root = None
    for i, (dk_id, purpose, state, wrapped) in enumerate(rows):
        ad = crypto.data_key_ad(vault_id, dk_id, purpose)
        try:
            key = crypto.unwrap(master.key, wrapped, ad)
        except crypto.InvalidTag:
            if i == 0:
                raise
            raise Integrity(
                f"Data key {dk_id} of this vault is damaged (it no longer opens with the master "
                "key that opens the others)", "restore the vault from a backup"
            ) from None
        if purpose == "mac":
            mac_root = key
        else:
            secrets[dk_id] = key
            if state == "active":
                active_id = dk_id
            else:
                next_id = dk_id
    if mac_root is None or active_id is None:
        raise Integrity("The vault's key table is incomplete", "restore the vault from a backup")
    return Vault(vault_id, master, secrets, active_id, next_id, mac_root)


def wrap_data_key(master_key: bytes, vault_id: str, dk_id: int, purpose: str, key: bytes) -> bytes:
    """A data key wrapped under the master key, bound to its vault, id and purpose."""
    return crypto.wrap(master_key, key, crypto.data_key_ad(vault_id, dk_id, purpose))


def unwrap_data_key(master_key: bytes, vault_id: str, dk_id: int, purpose: str,
                    wrapped: bytes) -> bytes:
    """The data key `wrap_data_key` wrapped; InvalidTag if this master key did not wrap it."""
    return crypto.unwrap(master_key, wrapped, crypto.data_key_ad(vault_id, dk_id, purpose))


def rewrapped(vault: Vault, new: MasterKey, rows: Iterable[WrappedKey]) -> list[tuple[int, bytes]]:
    """Every data key of `rows` (wrapped under the vault's master key) wrapped under `new`, as
    (id, wrapped); Conflict if the vault's master key no longer opens one."""
    out = []
    for dk_id, purpose, _state, wrapped in rows:
        try:
            key = unwrap_data_key(vault.master.key, vault.vault_id, dk_id, purpose, wrapped)
        except crypto.InvalidTag:
            raise Conflict(
                "The vault's master key changed while this command ran", "run it again"
            ) from None
        out.append((dk_id, wrap_data_key(new.key, vault.vault_id, dk_id, purpose, key)))
    return out


# A master-key rotation whose new key has not been used yet is recorded as the key that wraps
# the data keys today, wrapped under the new master key (base64 text, which the store keeps).

def _pending_ad(vid: str) -> bytes:
    return f"byokctl-pending-master/1|{vid}".encode()


def seal_pending(vault: Vault, new_key: bytes) -> str:
    """The record of a rotation to `new_key`: the current master key, wrapped under it."""
    import base64

    blob = crypto.wrap(new_key, vault.master.key, _pending_ad(vault.vault_id))
    return base64.b64encode(blob).decode()


def open_pending(key: bytes, vid: str, record: str) -> bytes | None:
    """The master key a pending rotation `record` holds, if `key` is its new key; else None."""
    import base64
    import binascii

    try:
        return crypto.unwrap(key, base64.b64decode(record, validate=True), _pending_ad(vid))
    except (crypto.InvalidTag, binascii.Error, ValueError):
        return None
