"""The unlocked vault: data keys opened with the master key, secret sealing, fingerprints.

A `Vault` is obtained with `unlock(store)`; commands that need no secret never unlock, so
they keep working without a master key (and never import `cryptography` or `keyring`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from byokctl import clock
from byokctl.errors import Conflict, Integrity, VaultLocked
from byokctl.store import Store
from byokctl.vault import crypto, macs
from byokctl.vault.master import MasterKey, candidates, promote, unstage

FINGERPRINT_PREFIX = "fp_"


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

    @cached_property
    def audit_key(self) -> bytes:
        return macs.subkey(self.mac_root, "audit-chain")

    @cached_property
    def row_key(self) -> bytes:
        """Authenticates the rows that decide where keys go and what money moves (rowmac)."""
        from byokctl.vault import rowmac

        return rowmac.row_key(self.mac_root)

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


def _data_key_rows(store: Store) -> list:
    return store.all("SELECT id, purpose, state, wrapped FROM data_keys ORDER BY id")


def _open_with(master: MasterKey, vault_id: str, rows: list) -> Vault:
    """Unwrap every data key; InvalidTag if this master key is not the vault's.

    A rotation re-wraps all rows in one transaction, so a key that opens some rows but not
    others means a damaged row, not a wrong key.
    """
    secrets: dict[int, bytes] = {}
    active_id = next_id = None
    mac_root = None
    for i, row in enumerate(rows):
        ad = crypto.data_key_ad(vault_id, row["id"], row["purpose"])
        try:
            key = crypto.unwrap(master.key, row["wrapped"], ad)
        except crypto.InvalidTag:
            if i == 0:
                raise
            raise Integrity(
                f"Data key {row['id']} of this vault is damaged (it no longer opens with the master "
                "key that opens the others)", "restore the vault from a backup"
            ) from None
        if row["purpose"] == "mac":
            mac_root = key
        else:
            secrets[row["id"]] = key
            if row["state"] == "active":
                active_id = row["id"]
            else:
                next_id = row["id"]
    if mac_root is None or active_id is None:
        raise Integrity("The vault's key table is incomplete", "restore the vault from a backup")
    return Vault(vault_id, master, secrets, active_id, next_id, mac_root)


def vault_id(store: Store) -> str:
    vid = store.meta("vault_id")
    if vid is None:
        raise Integrity(f"{store.path} has no vault id", "it was not created by `byokctl init`")
    return vid


def unlock(store: Store) -> Vault:
    """Open the vault's data keys with the first master key that fits; else VaultLocked.

    A key found in a rotation's `.next` slot that opens the vault means the rotation committed
    but crashed before the swap: finish it now. A key that opens only the pending rotation
    (`stage_pending`) is the new key printed by `rotate-master`: its first use finishes that
    rotation, and from then on the old key no longer opens the vault.
    """
    vid = vault_id(store)
    key_file = store.meta("master_key_file")
    tried = candidates(vid, store.meta("master_source", "keyring") or "keyring", key_file)
    for _attempt in range(3):  # another process may finish the same pending rotation meanwhile
        rows = _data_key_rows(store)
        for master in tried:
            try:
                vault = _open_with(master, vid, rows)
            except crypto.InvalidTag:
                continue
            _settle(vault, tried, key_file)
            return vault
        pending = store.meta(PENDING_META)
        opened = _open_pending(store, tried, vid, rows, pending) if pending else None
        if opened is None:
            break
        if opened is not _RETRY:
            return opened  # type: ignore[return-value]
    where = tried[0].location
    raise VaultLocked(
        f"The master key from {where} does not open this vault ({store.path})", "set "
        "$BYOKCTL_MASTER_KEY to this vault's key, or point --db at the vault it belongs to"
    )


# A rotation whose new key has not been used yet: the key that wraps the data keys today,
# wrapped under the new master key (base64, in `meta`). The old key keeps opening the vault
# until the new one first does, so a new key that never reached the operator (stdout full or
# closed, a kill before it was printed) locks nobody out.
PENDING_META = "master_pending"


def _pending_ad(vid: str) -> bytes:
    return f"byokctl-pending-master/1|{vid}".encode()


def stage_pending(store: Store, vault: Vault, new_key: bytes) -> str:
    """Record a rotation to `new_key` without re-wrapping anything yet (inside the caller's
    transaction); returns the record, for `cancel_pending`."""
    import base64

    blob = crypto.wrap(new_key, vault.master.key, _pending_ad(vault.vault_id))
    record = base64.b64encode(blob).decode()
    store.set_meta(PENDING_META, record)
    return record


def cancel_pending(store: Store, record: str) -> bool:
    """Drop the pending rotation `record` if it is still the pending one (inside the caller's
    transaction); the old key goes on opening the vault."""
    if store.meta(PENDING_META) != record:
        return False
    store.set_meta(PENDING_META, None)
    return True


def rotation_pending(store: Store) -> bool:
    return store.meta(PENDING_META) is not None


_RETRY = object()


def _open_pending(store: Store, tried: list[MasterKey], vid: str, rows: list,
                  record: str) -> Vault | object | None:
    """The vault opened by a key that opens the pending rotation `record` (finishing it), None
    if no key does, or `_RETRY` if another process changed the data keys meanwhile."""
    for master in tried:
        wrapping = _unwrap_pending(master.key, vid, record)
        if wrapping is None:
            continue
        try:
            vault = _open_with(master._replace(key=wrapping), vid, rows)
        except crypto.InvalidTag:
            return None  # a record left behind by an older master key: it opens nothing
        return vault if _finish_pending(store, vault, master, record) else _RETRY
    return None


def _unwrap_pending(key: bytes, vid: str, record: str) -> bytes | None:
    import base64
    import binascii

    try:
        return crypto.unwrap(key, base64.b64decode(record, validate=True), _pending_ad(vid))
    except (crypto.InvalidTag, binascii.Error, ValueError):
        return None


def _finish_pending(store: Store, vault: Vault, new: MasterKey, record: str) -> bool:
    """The new key of a pending rotation has opened the vault: re-wrap every data key under
    it and drop the record, in one transaction. False if another process changed the data
    keys first. On a vault that cannot be written (read-only, busy) the vault stays open with
    the key that still wraps it, and the next writable open finishes."""
    import sqlite3

    wrapping, nested = vault.master, store.conn.in_transaction
    try:
        with store.tx():
            if store.meta(PENDING_META) != record:
                return False
            rewrap(store, vault, new)
            store.set_meta(PENDING_META, None)
            if new.source == "env" and store.meta("master_source") != "env":
                store.set_meta("master_source", "env")  # the vault moved to $BYOKCTL_MASTER_KEY
        vault.rotation_finished = True
    except Conflict:
        vault.master = wrapping
        return False
    except sqlite3.OperationalError:
        vault.master = wrapping  # nothing was committed: the old wrapping still holds
        if store.conn.in_transaction and not nested:
            store.conn.execute("ROLLBACK")
    return True


def _settle(vault: Vault, tried: list[MasterKey], key_file: str | None) -> None:
    """Finish an interrupted rotation; best effort, since the vault opens either way."""
    m = vault.master
    try:
        if m.pending:
            promote(m.source, vault.vault_id, key_file, m.key)
            vault.master = m._replace(pending=False)
        elif any(c.pending and c.key == m.key for c in tried):
            unstage(m.source, vault.vault_id, key_file)  # swapped, but `.next` not yet removed
    except (VaultLocked, OSError):
        pass


def refresh(store: Store, vault: Vault) -> None:
    """Catch up, in place, with a rekey another process started or finished since `unlock`
    (call inside a write transaction, so that a new secret is never sealed under a data key
    that was just retired). Same master key, so no keyring round trip."""
    rows = _data_key_rows(store)
    stored = {(r["id"], r["state"]) for r in rows if r["purpose"] == "secrets"}
    known = {(vault.active_id, "active")} | ({(vault.next_id, "next")} if vault.next_id else set())
    if stored == known:
        return
    try:
        fresh = _open_with(vault.master, vault.vault_id, rows)
    except crypto.InvalidTag:
        raise Conflict("The vault's master key changed while this command ran", "run it again") from None
    vault.secrets_keys, vault.active_id, vault.next_id = fresh.secrets_keys, fresh.active_id, fresh.next_id


def rewrap(store: Store, vault: Vault, new: MasterKey) -> int:
    """Re-wrap every data key under a new master key (inside the caller's transaction)."""
    rows = _data_key_rows(store)
    for row in rows:
        ad = crypto.data_key_ad(vault.vault_id, row["id"], row["purpose"])
        try:
            key = crypto.unwrap(vault.master.key, row["wrapped"], ad)
        except crypto.InvalidTag:
            raise Conflict(
                "The vault's master key changed while this command ran", "run it again"
            ) from None
        store.conn.execute(
            "UPDATE data_keys SET wrapped = ? WHERE id = ?", (crypto.wrap(new.key, key, ad), row["id"])
        )
    vault.master = new
    return len(rows)


def opens_with(store: Store, vault: Vault) -> bool:
    """Whether the vault's current master key still opens its stored data keys."""
    try:
        _open_with(vault.master, vault.vault_id, _data_key_rows(store))
    except (crypto.InvalidTag, Integrity):
        return False
    return True


def next_secrets_key(store: Store, vault: Vault) -> tuple[int, bool]:
    """The 'next' secrets data key of a rekey, created if none (inside the caller's
    transaction). Returns (id, created)."""
    row = store.one("SELECT id, purpose, wrapped FROM data_keys WHERE purpose = 'secrets' "
                    "AND state = 'next' ORDER BY id LIMIT 1")
    if row is not None:
        if row["id"] not in vault.secrets_keys:  # started by another process after our unlock
            ad = crypto.data_key_ad(vault.vault_id, row["id"], "secrets")
            vault.secrets_keys[row["id"]] = crypto.unwrap(vault.master.key, row["wrapped"], ad)
        vault.next_id = row["id"]
        return row["id"], False
    cur = store.conn.execute(
        "INSERT INTO data_keys (purpose, state, wrapped, created_at) VALUES ('secrets', 'next', ?, ?)",
        (b"", clock.stamp()),
    )
    dk_id = int(cur.lastrowid or 0)
    key = crypto.new_key()
    wrapped = crypto.wrap(vault.master.key, key, crypto.data_key_ad(vault.vault_id, dk_id, "secrets"))
    store.conn.execute("UPDATE data_keys SET wrapped = ? WHERE id = ?", (wrapped, dk_id))
    vault.secrets_keys[dk_id] = key
    vault.next_id = dk_id
    return dk_id, True


def activate_next_secrets_key(store: Store, vault: Vault) -> list[int]:
    """End of a rekey (inside the caller's transaction, once no row uses an old key): the
    'next' key becomes active and the old ones are deleted. Returns the deleted ids."""
    new_id = vault.next_id
    if new_id is None:
        raise Integrity("No rekey is in progress")
    old = [r["id"] for r in store.all(
        "SELECT id FROM data_keys WHERE purpose = 'secrets' AND id != ?", (new_id,))]
    store.conn.execute("DELETE FROM data_keys WHERE purpose = 'secrets' AND id != ?", (new_id,))
    store.conn.execute("UPDATE data_keys SET state = 'active' WHERE id = ?", (new_id,))
    for dk_id in old:
        vault.secrets_keys.pop(dk_id, None)
    vault.active_id, vault.next_id = new_id, None
    return old


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

