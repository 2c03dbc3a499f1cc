"""Vault lifecycle: init, status, master-key rotation, rekey, check."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from byokctl.errors import ByokError, Conflict, Integrity, UsageError
from byokctl.services import audit, integrity
from byokctl.services.context import Context
from byokctl.store import SCHEMA_LATEST, Store, create_any, target
from byokctl.vault import master as mk

if TYPE_CHECKING:
    from byokctl.store.filecheck import FileCheck
    from byokctl.vault.envelope import Vault


@dataclass
class InitResult:
    path: str
    vault_id: str
    master_source: str
    master_location: str
    master_reference: str | None = None  # a key manager's (`vault-transit:transit/KEY`)

    def to_json(self) -> dict:
        return asdict(self)


def init(db: str | None, key_file: str | None, kms: str | None = None,
         create_key: bool = False) -> InitResult:
    """Create the vault file and its keys; the master key goes to env/keyring/file, or is
    wrapped by the key manager `kms` names (the wrapped blob stays in the vault)."""
    from byokctl.services.vaultkeys import initialize, new_vault_id
    from byokctl.vault import crypto

    where = target(db)  # a file, or a PostgreSQL database (whose create_any refuses a vault)
    if isinstance(where, Path) and where.exists():
        raise Conflict(f"A vault already exists at {where}", "use it, or pass --db for a new one")
    vid = new_vault_id()
    cleanup = None
    env = os.environ.get(mk.ENV_VAR)
    if env and key_file:
        raise UsageError(f"Both ${mk.ENV_VAR} and --master-key-file were given", "unset "
                         f"{mk.ENV_VAR} to keep a new master key in the file, or drop "
                         "--master-key-file to use the key from the environment")
    if kms and (env or key_file):
        given = f"${mk.ENV_VAR}" if env else "--master-key-file"
        raise UsageError(f"Both {given} and --kms were given", f"drop {given}: with --kms the key "
                         "manager keeps the master key")
    if create_key and not kms:
        raise UsageError("--create-key needs --kms", "add --kms REF, or drop --create-key")
    wrapped = None
    if kms:
        key = crypto.new_key()
        ref, blob, described = mk.kms_wrap(vid, kms, key, create_key=create_key)
        master, wrapped = mk.MasterKey(key, "kms", described), (ref, blob)
    elif env:
        master = mk.MasterKey(mk.decode(env, f"${mk.ENV_VAR}"), "env", f"${mk.ENV_VAR}")
    elif key_file:
        kf = Path(key_file).expanduser().resolve()
        if kf.exists():
            raise Conflict(f"{kf} already exists", "choose a new path for the master key file")
        key = crypto.new_key()
        mk.write_key_file(kf, key)
        master = mk.MasterKey(key, "file", str(kf))
        key_file = str(kf)

        def cleanup() -> None:
            kf.unlink(missing_ok=True)
    else:
        key = crypto.new_key()
        user = mk.keyring_user(vid)
        mk.keyring_set(user, mk.encode(key))
        if mk.keyring_get(user) != mk.encode(key):
            raise ByokError("The OS keyring did not keep the master key", "run `byokctl init "
                            "--master-key-file PATH` or set $BYOKCTL_MASTER_KEY instead")
        master = mk.MasterKey(key, "keyring", f"the OS keyring ({mk.KEYRING_SERVICE}/{user})")

        def cleanup() -> None:
            mk.keyring_delete(user)
    try:
        store = create_any(where)
    except BaseException:
        if cleanup:
            cleanup()
        raise
    try:
        ctx = Context(store)
        with store.tx():
            ctx._vault = initialize(store, master, vid, key_file, wrapped)
            integrity.seal_platform(ctx)
            # `row_macs`: this vault MACs its rows from the start, so no row of it may ever
            # be adopted unMACed (integrity.adopt_legacy reads this first, MACed, entry).
            audit.record(ctx, "vault.init", target=vid,
                         after={"master_source": master.source, "schema": SCHEMA_LATEST,
                                "row_macs": True, **({"kms": wrapped[0]} if wrapped else {})})
    except BaseException:
        store.discard()
        if cleanup:
            cleanup()
        raise
    audit.save_head(ctx)  # the first anchor beside the master key (key file or keyring)
    store.close()
    return InitResult(store.location, vid, master.source, master.location,
                      wrapped[0] if wrapped else None)


@dataclass
class Status:
    path: str  # the file, or the database URL without its password
    engine: str  # "sqlite" or "postgresql"
    vault_id: str
    schema_version: int
    created_at: str | None
    master_source: str
    master_location: str | None
    master_reference: str | None  # a key manager's reference (never a token or PIN)
    unlocked: bool
    locked_reason: str | None
    rekey_in_progress: bool
    rotation_pending: bool
    orgs: int
    members: int
    keys: int
    usage_records: int
    audit_entries: int

    def to_json(self) -> dict:
        return asdict(self)


def status(ctx: Context) -> Status:
    from byokctl.services.vaultkeys import kms_settings, rotation_pending

    s = ctx.store
    vid = s.meta("vault_id") or ""
    source = s.meta("master_source", "keyring") or "keyring"
    reference = kms_settings(s)[0] if source == "kms" else None
    if os.environ.get(mk.ENV_VAR):
        source, reference = "env", None
    location, reason, unlocked = None, None, False
    try:
        v = ctx.vault()
        unlocked, location = True, v.master.location
    except ByokError as exc:
        reason = exc.message
        location = {"env": f"${mk.ENV_VAR}", "file": s.meta("master_key_file"), "kms": reference}.get(
            source, f"the OS keyring ({mk.KEYRING_SERVICE}/{mk.keyring_user(vid)})")

    return Status(
        path=s.location, engine=s.engine, vault_id=vid, schema_version=s.schema_version(),
        created_at=s.meta("created_at"), master_source=source, master_location=location,
        master_reference=reference, unlocked=unlocked, locked_reason=reason,
        rekey_in_progress=s.data_keys.has_next(),
        rotation_pending=rotation_pending(s),
        orgs=s.orgs.count(), members=s.members.count(), keys=s.keys.count(),
        usage_records=s.usage.count(), audit_entries=s.audit.count(),
    )


@dataclass
class RotateResult:
    vault_id: str
    master_source: str
    master_location: str
    data_keys: int
    master_key: str | None  # only for an environment-variable source: printed once, then gone
    warnings: list[str]
    # An environment-variable rotation waits for the new key's first use (which re-wraps the
    # data keys); until then the old key still opens the vault. The record, for `cancel_rotation`.
    pending: str | None = None
    master_reference: str | None = None  # a key manager's reference (`vault-transit:transit/K`)

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["pending"] = self.pending is not None
        return doc


def rotate_master(ctx: Context, to: str | None = None, key_file: str | None = None,
                  kms: str | None = None, create_key: bool = False) -> RotateResult:
    """New master key, stored where the old one came from (or moved `to` another source:
    "keyring", "file" with `key_file`, "env", "kms" with the reference `kms`), such that no
    failure or crash at any instant leaves the vault openable by no key the operator holds.

    Keyring and file targets stage the key in a `.next` slot first, then re-wrap every data
    key in one transaction (see `vault.master`). A key-manager target wraps the new key
    first (nothing stored yet), then writes the wrapped key and the re-wrapped data keys in
    ONE transaction. For `$BYOKCTL_MASTER_KEY` the new key is printed, and may never reach
    the operator: so nothing is re-wrapped yet, the rotation is recorded as pending
    (`envelope.stage_pending`), the old key keeps opening the vault, and the first open with
    the new key finishes the rotation. After a move the old source's key is deleted (its
    keyring entry or key file), so it cannot open a copy of the vault either."""
    from byokctl.services import vaultkeys as envelope
    from byokctl.vault import crypto

    store = ctx.store
    vault = ctx.vault()
    old = vault.master
    target = to or ("kms" if kms else old.source)
    before = _where_now(store)
    if target == "env":
        return _rotate_to_env(ctx, vault, crypto.new_key(), before)
    if target == "kms":
        return _rotate_to_kms(ctx, vault, crypto.new_key(), kms or before.get("kms"), create_key, before)
    if target == "file":
        key_file = _target_file(key_file or (before.get("file") if before["source"] == "file" else None),
                                before)
    new = mk.MasterKey(crypto.new_key(), target, key_file if target == "file" else
                       f"the OS keyring ({mk.KEYRING_SERVICE}/{mk.keyring_user(vault.vault_id)})")
    moved = before["source"] != target or (target == "file" and key_file != before.get("file"))
    vid = vault.vault_id
    mk.stage(target, vid, key_file, new.key)
    try:
        with ctx.write():
            count = envelope.rewrap(store, vault, new)
            if moved:
                envelope.set_source(store, target, key_file)
            audit.record(ctx, "vault.rotate_master", target=vid, before=_audited(before),
                         after={"master_source": new.source, "data_keys": count})
    except BaseException:
        vault.master = old
        if envelope.opens_with(store, vault):
            mk.unstage(target, vid, key_file)
        raise
    warnings: list[str] = []
    try:
        mk.promote(target, vid, key_file, new.key)
    except (ByokError, OSError):
        warnings.append(
            f"the new master key is committed but still waits in the `.next` slot of "
            f"{new.location}; it moves into place the next time the vault is opened"
        )
    if moved:
        warnings += _retire(before, vid) + _env_warning()
    return RotateResult(
        vault_id=vid, master_source=new.source, master_location=new.location, data_keys=count,
        master_key=None, warnings=warnings,
    )


def _where_now(store: Store) -> dict:
    """The vault's stored master-key source and its settings (no secret)."""
    from byokctl.services.vaultkeys import kms_settings

    source = store.meta("master_source", "keyring") or "keyring"
    return {"source": source, "file": store.meta("master_key_file"),
            "kms": kms_settings(store)[0] if source == "kms" else None}


def _audited(before: dict) -> dict:
    doc = {"master_source": before["source"]}
    if before.get("kms"):
        doc["kms"] = before["kms"]
    return doc


def _target_file(path: str | None, before: dict) -> str:
    if not path:
        raise UsageError("Moving the master key to a file needs its path", "pass --master-key-file PATH")
    resolved = Path(path).expanduser().resolve()
    if str(resolved) != before.get("file") and resolved.exists():
        raise Conflict(f"{resolved} already exists", "choose a new path for the master key file")
    return str(resolved)


def _rotate_to_env(ctx: Context, vault: Vault, key: bytes, before: dict) -> RotateResult:
    """The pending rotation of `$BYOKCTL_MASTER_KEY`: see `rotate_master`."""
    from byokctl.services import vaultkeys as envelope

    store, vid = ctx.store, vault.vault_id
    warnings: list[str] = []
    with ctx.write():
        count = store.data_keys.count()
        record = envelope.stage_pending(store, vault, key)
        if before["source"] != "env":
            was = {"file": "its key file", "kms": "its key manager"}.get(before["source"], "the OS keyring")
            warnings.append(f"this vault used to open with {was}; once the new key has opened "
                            "it, only $BYOKCTL_MASTER_KEY will")
        audit.record(ctx, "vault.rotate_master", target=vid, before=_audited(before),
                     after={"master_source": "env", "data_keys": count, "pending": True})
    return RotateResult(vault_id=vid, master_source="env", master_location=f"${mk.ENV_VAR}",
                        data_keys=count, master_key=mk.encode(key), warnings=warnings,
                        pending=record)


def _rotate_to_kms(ctx: Context, vault: Vault, key: bytes, reference: str | None, create_key: bool,
                   before: dict) -> RotateResult:
    """A new master key wrapped by a key manager: the wrapped key and the re-wrapped data keys
    are written in one transaction, so a crash leaves the old source or the new one in force."""
    from byokctl.services import vaultkeys as envelope

    if not reference:
        raise UsageError("No key manager was named", "pass --kms REF (vault-transit:KEY or pkcs11:...)")
    store, vid, old = ctx.store, vault.vault_id, vault.master
    ref, blob, where = mk.kms_wrap(vid, reference, key, create_key=create_key)  # nothing stored yet
    new = mk.MasterKey(key, "kms", where)
    try:
        with ctx.write():
            count = envelope.rewrap(store, vault, new)
            envelope.set_source(store, "kms", None, ref, blob)
            audit.record(ctx, "vault.rotate_master", target=vid, before=_audited(before),
                         after={"master_source": "kms", "kms": ref, "data_keys": count})
    except BaseException:
        vault.master = old
        raise
    warnings = _retire(before, vid) + _env_warning()
    return RotateResult(vault_id=vid, master_source="kms", master_location=where, data_keys=count,
                        master_key=None, warnings=warnings, master_reference=ref)


def _retire(before: dict, vid: str) -> list[str]:
    """After a committed move: delete the old source's key (best effort), so the key that no
    longer opens the vault cannot open an older copy of it either."""
    import contextlib

    if before["source"] == "keyring":
        for name in (mk.keyring_user(vid), mk.keyring_user(vid) + ".next"):
            mk.keyring_delete(name)
        return []
    if before["source"] == "file" and before.get("file"):
        path = Path(before["file"])
        try:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                mk.next_path(path).unlink(missing_ok=True)
        except OSError as exc:
            return [f"the old master key file {path} could not be deleted ({exc.strerror}); delete it"]
        return [f"the old master key file {path} was deleted"]
    return []


def _env_warning() -> list[str]:
    if os.environ.get(mk.ENV_VAR):
        return [f"unset ${mk.ENV_VAR}: while it is set it is the only master key tried"]
    return []


def rewrap_master(ctx: Context) -> RotateResult:
    """The same master key wrapped again under the key manager key's newest version (after a
    transit key rotation): no data key and no secret is re-encrypted; the new wrapped key is
    checked to open before it replaces the old one."""
    from byokctl.services import vaultkeys as envelope

    store = ctx.store
    if (store.meta("master_source") or "keyring") != "kms":
        raise UsageError("Only a vault whose master key a key manager keeps can be rewrapped",
                         "replace the master key with `byokctl vault rotate-master` instead")
    vault = ctx.vault()
    ref, blob = envelope.kms_settings(store)
    new_blob, where = mk.kms_rewrap(vault.vault_id, ref or "", blob or "")
    with ctx.write():
        if envelope.kms_settings(store) != (ref, blob):
            raise Conflict("The vault's master key changed while this command ran", "run it again")
        store.set_meta(envelope.KMS_BLOB_META, new_blob)
        audit.record(ctx, "vault.rewrap_master", target=vault.vault_id, after={"kms": ref})
    return RotateResult(vault_id=vault.vault_id, master_source="kms", master_location=where,
                        data_keys=0, master_key=None, warnings=[], master_reference=ref)


def cancel_rotation(ctx: Context, result: RotateResult) -> bool:
    """The new key of `result` never reached the operator (stdout failed): forget it, so the
    old key stays the vault's only key. Best effort: a pending rotation left behind is harmless."""
    from byokctl.services import vaultkeys as envelope

    if result.pending is None:
        return False
    with ctx.write():
        if not envelope.cancel_pending(ctx.store, result.pending):
            return False
        audit.record(ctx, "vault.rotate_master_cancel", target=result.vault_id,
                     after={"reason": "the new master key could not be printed"})
    return True


@dataclass
class RekeyResult:
    vault_id: str
    data_key_id: int
    retired_data_key_ids: list[int]
    keys: int
    reencrypted: int
    resumed: bool

    def to_json(self) -> dict:
        return asdict(self)


Progress = Callable[[int, int], None]  # (done, total)

REKEY_BATCH = 200  # a few ms per transaction: other writers wait at most that long


def rekey(ctx: Context, progress: Progress | None = None, batch_size: int = REKEY_BATCH) -> RekeyResult:
    """New 'secrets' data key and every secret re-encrypted under it, resumably.

    1. the new key is stored as 'next' (its own transaction); a rerun reuses it;
    2. key rows move to it in batches, each its own transaction; every row names its data
       key, so an interruption at any point leaves every secret readable. The batches walk
       the table in storage order (`store.keys.not_under`) from where the last one ended:
       not from the start each time (quadratic in the number of keys), and not by key id
       (random ids would make every batch rewrite pages all over the file);
    3. one last transaction moves any stragglers (keys added behind the walk meanwhile),
       makes 'next' active and purges the old key.
    """
    from byokctl.services import vaultkeys as envelope

    store = ctx.store
    vault = ctx.vault()
    with ctx.write():
        new_id, created = envelope.next_secrets_key(store, vault)
    resumed = not created
    total = store.keys.count_not_under(new_id)
    done = 0
    if progress:
        progress(done, total)

    def move(rows: list[tuple]) -> int:
        """Seal the batch again under the new key; returns the last row's position."""
        moved, last = [], 0
        for *fields, position in rows:
            key_id, scope, org, member, provider, version = fields[:6]
            secret = _open_for_rekey(vault, fields)
            _, nonce, ct = vault.seal(secret, key_id=key_id, scope=scope, org=org, member=member,
                                      provider=provider, version=version, data_key_id=new_id)
            moved.append((new_id, nonce, ct, position))
            last = position
        store.keys.reseal(moved)
        return last

    after = 0
    while True:
        with ctx.write():
            rows = store.keys.not_under(new_id, batch_size, after=after)
            last = move(rows)
        if not rows:
            break
        after = last
        done += len(rows)
        if progress:
            progress(done, max(total, done))
    with ctx.write():
        while rows := store.keys.not_under(new_id, batch_size):
            move(rows)
            done += len(rows)
        retired = envelope.activate_next_secrets_key(store, vault)
        keys = store.keys.count()
        audit.record(ctx, "vault.rekey", target=vault.vault_id,
                     before={"data_key_id": retired[0] if len(retired) == 1 else retired},
                     after={"data_key_id": new_id, "keys": keys, "reencrypted": done,
                            "resumed": resumed})
    ctx.store.purge_wal()  # the retired data key and old ciphertexts leave the WAL now, not later
    return RekeyResult(vault.vault_id, new_id, retired, keys, done, resumed)


def _open_for_rekey(vault: Vault, fields: list) -> str:
    """The secret of one row (its `store.keys.SEALED_COLUMNS`), or why the rekey stops."""
    try:
        return vault.open_fields(*fields)
    except Integrity:
        key_id = fields[0]
        raise Integrity(
            f"Key {key_id} cannot be decrypted, so the rekey stopped (every other secret is still "
            "readable)", f"replace it with `byokctl key rotate {key_id}` or remove it, then run "
            "`byokctl vault rekey` again to finish"
        ) from None


@dataclass
class CheckReport:
    ok: bool
    checked: int
    problems: list[audit.Problem]
    keys_checked: int
    audit_checked: int
    rekey_in_progress: bool
    rows_checked: int = 0  # org, member and key rows and the platform record, by their MACs

    def to_json(self) -> dict:
        return {"ok": self.ok, "checked": self.checked,
                "problems": [p.to_json() for p in self.problems],
                "keys_checked": self.keys_checked, "audit_checked": self.audit_checked,
                "rows_checked": self.rows_checked, "rekey_in_progress": self.rekey_in_progress}


@dataclass
class CopyResult:
    source: str
    target: str
    rows: dict[str, int]  # table → rows copied
    keys_checked: int
    rows_checked: int
    audit_checked: int

    def to_json(self) -> dict:
        return asdict(self)


def copy(ctx: Context, to: str) -> CopyResult:
    """Copy the vault, row for row, into a new file or an empty PostgreSQL database (either
    way round), then check the copy as `vault check` does before saying it is done.

    Ciphertexts, row MACs, ids and the audit chain go over unchanged, so the same master key
    opens the copy and its chain verifies. The source must check clean first (a copy would
    carry its damage). Its rows are read under its write lock, so the copy is one consistent
    state; they are written in one transaction, so an interrupted copy leaves the target's
    schema alone, and running the command again starts over."""
    from byokctl.store import copy_target, describe, target
    from byokctl.store.transfer import ORDER

    source = ctx.store
    if describe(target(to)) == source.location:
        raise UsageError("The copy would overwrite the vault itself", "give --to another file or database")
    report = check(ctx)
    if not report.ok:
        raise Integrity(f"{source.location} has {len(report.problems)} problem(s), which a copy "
                        "would carry", "see `byokctl vault check`, mend them or restore a backup, "
                        "then copy")
    dest = copy_target(to)
    try:
        rows: dict[str, int] = {}
        with source.tx(), dest.tx():  # the source's lock: no writer changes it meanwhile
            for table in ORDER:
                columns = source.transfer.columns(table)
                rows[table] = dest.transfer.load(table, columns, source.transfer.rows(table, columns))
            dest.transfer.loaded()
            short = [t for t in ORDER if source.transfer.count(t) != rows[t]]
        short += [t for t in ORDER if dest.transfer.count(t) != rows[t]]
        if short:
            raise Integrity(f"The copy at {dest.location} is short in {', '.join(sorted(set(short)))}",
                            "remove it and run `byokctl vault copy` again")
        copied = check(Context(dest))
        if not copied.ok:
            raise Integrity(f"The copy at {dest.location} fails its check ({len(copied.problems)} "
                            "problem(s))", "remove it and run `byokctl vault copy` again")
    finally:
        dest.close()
    return CopyResult(source.location, dest.location, rows, copied.keys_checked,
                      copied.rows_checked, copied.audit_checked)


def check(ctx: Context) -> CheckReport:
    """Decrypt every stored secret and verify the audit chain; a bad row is reported, never
    fatal, so the report names every broken row.

    Streams both tables (memory stays flat in the vault's size). The file's own check
    (`store.file_check`, which reads every page, usage records included) runs meanwhile on
    a second connection in a thread: SQLite releases the GIL, so on more than one core it
    costs no extra time."""
    store = ctx.store
    ctx.defer_head_check = True  # a rolled-back vault is one of the problems reported
    vault = ctx.vault()
    storage = store.file_check()
    storage.start()
    try:
        keys, key_problems = _check_keys(store, vault)
        rows, row_problems, key_mac_problems = integrity.check(ctx)
        key_problems = _merge_key_problems(key_problems, key_mac_problems)
        audit_checked, audit_problems = audit.verify(ctx)
    except BaseException:
        storage.cancel()  # Ctrl-C, or a damaged page: do not wait for the whole file's check
        raise
    finally:
        storage.join()
    problems = _storage_problems(store.location, storage) + row_problems + key_problems + audit_problems
    return CheckReport(
        ok=not problems, checked=keys + audit_checked, problems=problems, keys_checked=keys,
        audit_checked=audit_checked, rekey_in_progress=vault.next_id is not None,
        rows_checked=rows,
    )


def _merge_key_problems(found: list[audit.Problem], macs: dict[str, str]) -> list[audit.Problem]:
    """One problem per key, in key id order: what decryption found and what its MAC says."""
    merged = []
    for p in found:
        extra = macs.pop(str(p.value), None)
        merged.append(audit.Problem(p.ref, p.value, f"{p.problem}; {extra}") if extra else p)
    merged += [audit.Problem("key_id", key_id, problem) for key_id, problem in macs.items()]
    merged.sort(key=lambda p: str(p.value))
    return merged


def _storage_problems(path: str, check: FileCheck) -> list[audit.Problem]:
    """What the file's own check found, as problems (after it was joined)."""
    return [audit.Problem("file", path, f"storage damaged: {msg}") for msg in check.damage()]


def _check_keys(store: Store, vault: Vault) -> tuple[int, list[audit.Problem]]:
    """Open every secret and compare its fingerprint; problems in key id order.

    The walk is in storage order, twice as fast as by id through its index; the problems
    are sorted by key id at the end. Fast path: plain tuples, the associated data built by
    the store (`store.keys.check_scan`); a row that does not open that way is read again
    whole and checked the reference way. A value the store cannot hand over that way (a
    BLOB where text belongs, text that is not UTF-8: written outside byokctl) ends the fast
    path; the walk goes on after the last row checked, reading leniently, so the damaged row
    is reported like any other."""
    from byokctl.store import is_unreadable

    problems: list[audit.Problem] = []
    checked, after = 0, 0
    open_with_ad, fingerprint = vault.open_with_ad, vault.fingerprint
    try:
        for position, key_id, dk_id, nonce, ct, ad, stored_fp in store.keys.check_scan(vault.vault_id):
            try:
                problem = None if fingerprint(open_with_ad(key_id, dk_id, nonce, ct, ad)) == \
                    stored_fp else _WRONG_FINGERPRINT
            except Integrity:
                problem = _check_row(vault, store.keys.sealed_at(position))
            if problem:
                problems.append(audit.Problem("key_id", key_id, problem))
            checked, after = checked + 1, position
    except Exception as exc:
        if not is_unreadable(exc):
            raise
        with store.lenient():
            for row in store.keys.sealed_from(after):
                if problem := _check_row(vault, row):
                    key_id, *_ = row
                    problems.append(audit.Problem("key_id", key_id, problem))
                checked += 1
    problems.sort(key=lambda p: str(p.value))
    return checked, problems


_UNDECRYPTABLE = "cannot be decrypted: its ciphertext was altered or belongs to another row"
_WRONG_FINGERPRINT = "fingerprint does not match the stored secret"


def _check_row(vault: Vault, row: tuple) -> str | None:
    """The reference check of one secret (`store.keys.sealed_at`): its problem, or None."""
    *fields, stored_fp = row
    try:
        secret = vault.open_fields(*fields)
    except Integrity:
        return _UNDECRYPTABLE
    return None if vault.fingerprint(secret) == stored_fp else _WRONG_FINGERPRINT
