"""The vault's keys as the store holds them: unlocking, catching up with a rekey, re-wrapping
under a new master key, the pending master-key rotation, and a new vault's first keys.

The crypto is `vault.envelope`'s (bytes in, bytes out); this module reads and writes the
wrapped data keys (`store.data_keys`) and the vault's identity and master-key settings
(`store.meta`). Crash safety rests on where its transactions begin and end: every function
that says "inside the caller's transaction" opens none.
"""

from __future__ import annotations

import uuid

from byokctl import clock
from byokctl.errors import Conflict, Integrity, VaultLocked
from byokctl.store import Store
from byokctl.vault import crypto
from byokctl.vault.envelope import (
    Vault,
    open_data_keys,
    open_pending,
    rewrapped,
    seal_pending,
    unwrap_data_key,
    wrap_data_key,
)
from byokctl.vault.master import MasterKey, candidates, promote, unstage


def vault_id(store: Store) -> str:
    vid = store.meta("vault_id")
    if vid is None:
        raise Integrity(f"{store.location} has no vault id", "it was not created by `byokctl init`")
    return vid


GIVEN = "the master key given to byokctl.Vault.open"


def unlock(store: Store, master_key: bytes | None = None) -> Vault:
    """Open the vault's data keys with the first master key that fits (`master_key`, raw 32
    bytes a program gave, else the vault's own sources in their order); else VaultLocked.

    A key found in a rotation's `.next` slot that opens the vault means the rotation committed
    but crashed before the swap: finish it now. A key that opens only the pending rotation
    (`stage_pending`) is the new key printed by `rotate-master`: its first use finishes that
    rotation, and from then on the old key no longer opens the vault.
    """
    vid = vault_id(store)
    key_file = store.meta("master_key_file")
    if master_key is not None:
        if not isinstance(master_key, bytes) or len(master_key) != 32:
            raise VaultLocked("The master key given is not 32 raw bytes",
                              "pass the key itself (base64-decode $BYOKCTL_MASTER_KEY's form), or "
                              "None to use the vault's own key source")
        # Like $BYOKCTL_MASTER_KEY: a key held outside byokctl, with no place for a `.next`.
        tried = [MasterKey(master_key, "env", GIVEN)]
    else:
        tried = candidates(vid, store.meta("master_source", "keyring") or "keyring", key_file,
                           store.meta(KMS_REF_META), store.meta(KMS_BLOB_META))
    for _attempt in range(3):  # another process may finish the same pending rotation meanwhile
        rows = store.data_keys.all()
        for master in tried:
            try:
                vault = open_data_keys(master, vid, rows)
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
        f"The master key from {where} does not open this vault ({store.location})", "set "
        "$BYOKCTL_MASTER_KEY to this vault's key, or point --db at the vault it belongs to"
    )


# A vault whose master key a key manager keeps (`master_source` "kms"): the key manager's
# reference and the master key it wrapped (base64), neither secret (`vault.kms`).
KMS_REF_META = "master_kms_ref"
KMS_BLOB_META = "master_kms_blob"


def set_source(store: Store, source: str, key_file: str | None = None, kms_ref: str | None = None,
               kms_blob: str | None = None) -> None:
    """Where the master key lives from now on (inside the caller's transaction): one source,
    the settings of any other cleared."""
    store.set_meta("master_source", source)
    store.set_meta("master_key_file", key_file if source == "file" else None)
    store.set_meta(KMS_REF_META, kms_ref if source == "kms" else None)
    store.set_meta(KMS_BLOB_META, kms_blob if source == "kms" else None)


def kms_settings(store: Store) -> tuple[str | None, str | None]:
    """(reference, wrapped blob) of a key-manager vault; (None, None) for the other sources."""
    return store.meta(KMS_REF_META), store.meta(KMS_BLOB_META)


# A rotation whose new key has not been used yet: the key that wraps the data keys today,
# wrapped under the new master key (base64, in `meta`). The old key keeps opening the vault
# until the new one first does, so a new key that never reached the operator (stdout full or
# closed, a kill before it was printed) locks nobody out.
PENDING_META = "master_pending"


def stage_pending(store: Store, vault: Vault, new_key: bytes) -> str:
    """Record a rotation to `new_key` without re-wrapping anything yet (inside the caller's
    transaction); returns the record, for `cancel_pending`."""
    record = seal_pending(vault, new_key)
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
        wrapping = open_pending(master.key, vid, record)
        if wrapping is None:
            continue
        try:
            vault = open_data_keys(master._replace(key=wrapping), vid, rows)
        except crypto.InvalidTag:
            return None  # a record left behind by an older master key: it opens nothing
        return vault if _finish_pending(store, vault, master, record) else _RETRY
    return None


def _finish_pending(store: Store, vault: Vault, new: MasterKey, record: str) -> bool:
    """The new key of a pending rotation has opened the vault: re-wrap every data key under
    it and drop the record, in one transaction. False if another process changed the data
    keys first. On a vault that cannot be written (read-only, busy) the vault stays open with
    the key that still wraps it, and the next writable open finishes."""
    from byokctl.store import is_busy, is_storage

    wrapping, nested = vault.master, store.in_transaction
    try:
        with store.tx():
            if store.meta(PENDING_META) != record:
                return False
            rewrap(store, vault, new)
            store.set_meta(PENDING_META, None)
            if new.source == "env" and store.meta("master_source") != "env":
                set_source(store, "env")  # the vault moved to $BYOKCTL_MASTER_KEY
        vault.rotation_finished = True
    except Conflict:
        vault.master = wrapping
        return False
    except Exception as exc:
        if not (is_busy(exc) or is_storage(exc)):
            raise
        vault.master = wrapping  # nothing was committed: the old wrapping still holds
        if not nested:
            store.rollback()
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
    rows = store.data_keys.as_begun()
    stored = {(r.id, r.state) for r in rows if r.purpose == "secrets"}
    known = {(vault.active_id, "active")} | ({(vault.next_id, "next")} if vault.next_id else set())
    if stored == known:
        return
    try:
        fresh = open_data_keys(vault.master, vault.vault_id, rows)
    except crypto.InvalidTag:
        raise Conflict("The vault's master key changed while this command ran", "run it again") from None
    vault.secrets_keys, vault.active_id, vault.next_id = fresh.secrets_keys, fresh.active_id, fresh.next_id


def rewrap(store: Store, vault: Vault, new: MasterKey) -> int:
    """Re-wrap every data key under a new master key (inside the caller's transaction)."""
    rows = rewrapped(vault, new, store.data_keys.all())
    for dk_id, wrapped in rows:
        store.data_keys.set_wrapped(dk_id, wrapped)
    vault.master = new
    return len(rows)


def opens_with(store: Store, vault: Vault) -> bool:
    """Whether the vault's current master key still opens its stored data keys."""
    try:
        open_data_keys(vault.master, vault.vault_id, store.data_keys.all())
    except (crypto.InvalidTag, Integrity):
        return False
    return True


def next_secrets_key(store: Store, vault: Vault) -> tuple[int, bool]:
    """The 'next' secrets data key of a rekey, created if none (inside the caller's
    transaction). Returns (id, created)."""
    row = store.data_keys.next_secrets()
    if row is not None:
        if row.id not in vault.secrets_keys:  # started by another process after our unlock
            vault.secrets_keys[row.id] = unwrap_data_key(vault.master.key, vault.vault_id, row.id,
                                                         "secrets", row.wrapped)
        vault.next_id = row.id
        return row.id, False
    dk_id = store.data_keys.insert("secrets", "next", b"", clock.stamp())
    key = crypto.new_key()
    store.data_keys.set_wrapped(dk_id, wrap_data_key(vault.master.key, vault.vault_id, dk_id,
                                                     "secrets", key))
    vault.secrets_keys[dk_id] = key
    vault.next_id = dk_id
    return dk_id, True


def activate_next_secrets_key(store: Store, vault: Vault) -> list[int]:
    """End of a rekey (inside the caller's transaction, once no row uses an old key): the
    'next' key becomes active and the old ones are deleted. Returns the deleted ids."""
    new_id = vault.next_id
    if new_id is None:
        raise Integrity("No rekey is in progress")
    old = store.data_keys.other_secrets_ids(new_id)
    store.data_keys.activate_secrets(new_id)
    for dk_id in old:
        vault.secrets_keys.pop(dk_id, None)
    vault.active_id, vault.next_id = new_id, None
    return old


def new_vault_id() -> str:
    return uuid.uuid4().hex


def initialize(store: Store, master: MasterKey, vid: str, key_file: str | None = None,
               kms: tuple[str, str] | None = None) -> Vault:
    """Write a new vault's identity and wrapped data keys (inside the caller's transaction);
    `kms` is a key-manager vault's (reference, wrapped master key)."""
    now = clock.stamp()
    store.set_meta("vault_id", vid)
    store.set_meta("created_at", now)
    set_source(store, master.source, key_file, *(kms or (None, None)))
    for purpose in ("secrets", "mac"):
        dk_id = store.data_keys.insert(purpose, "active", b"", now)
        store.data_keys.set_wrapped(dk_id, wrap_data_key(master.key, vid, dk_id, purpose,
                                                         crypto.new_key()))
    return open_data_keys(master, vid, store.data_keys.all())
