"""Vault lifecycle: init, status, master-key rotation, rekey, check."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from byokctl.errors import ByokError, Conflict
from byokctl.services import audit
from byokctl.services.context import Context
from byokctl.store import SCHEMA_LATEST, create_store, resolve_path
from byokctl.vault import master as mk


@dataclass
class InitResult:
    path: str
    vault_id: str
    master_source: str
    master_location: str

    def to_json(self) -> dict:
        return asdict(self)


def init(db: str | None, key_file: str | None) -> InitResult:
    """Create the vault file and its keys; the master key goes to env/keyring/file."""
    from byokctl.vault import crypto
    from byokctl.vault.envelope import initialize, new_vault_id

    path = resolve_path(db)
    if path.exists():
        raise Conflict(f"A vault already exists at {path}; use it, or pass --db for a new one")
    vid = new_vault_id()
    cleanup = None
    if env := os.environ.get(mk.ENV_VAR):
        master = mk.MasterKey(mk.decode(env, f"${mk.ENV_VAR}"), "env", f"${mk.ENV_VAR}")
    elif key_file:
        kf = Path(key_file).expanduser().resolve()
        if kf.exists():
            raise Conflict(f"{kf} already exists; choose a new path for the master key file")
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
            raise ByokError("The OS keyring did not keep the master key; run `byokctl init "
                            "--master-key-file PATH` or set $BYOKCTL_MASTER_KEY instead")
        master = mk.MasterKey(key, "keyring", f"the OS keyring ({mk.KEYRING_SERVICE}/{user})")

        def cleanup() -> None:
            mk.keyring_delete(user)
    try:
        store = create_store(path)
    except BaseException:
        if cleanup:
            cleanup()
        raise
    try:
        ctx = Context(store)
        with store.tx():
            ctx._vault = initialize(store, master, vid, key_file)
            audit.record(ctx, "vault.init", target=vid,
                         after={"master_source": master.source, "schema": SCHEMA_LATEST})
    except BaseException:
        store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        if cleanup:
            cleanup()
        raise
    store.close()
    return InitResult(str(path), vid, master.source, master.location)


@dataclass
class Status:
    path: str
    vault_id: str
    schema_version: int
    created_at: str | None
    master_source: str
    master_location: str | None
    unlocked: bool
    locked_reason: str | None
    rekey_in_progress: bool
    orgs: int
    members: int
    keys: int
    usage_records: int
    audit_entries: int

    def to_json(self) -> dict:
        return asdict(self)


def status(ctx: Context) -> Status:
    s = ctx.store
    vid = s.meta("vault_id") or ""
    source = s.meta("master_source", "keyring") or "keyring"
    if os.environ.get(mk.ENV_VAR):
        source = "env"
    location, reason, unlocked = None, None, False
    try:
        v = ctx.vault()
        unlocked, location = True, v.master.location
    except ByokError as exc:
        reason = exc.message
        location = {"env": f"${mk.ENV_VAR}", "file": s.meta("master_key_file")}.get(
            source, f"the OS keyring ({mk.KEYRING_SERVICE}/{mk.keyring_user(vid)})")

    def count(table: str) -> int:
        return s.scalar(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed table names

    return Status(
        path=str(s.path), vault_id=vid, schema_version=s.scalar("PRAGMA user_version"),
        created_at=s.meta("created_at"), master_source=source, master_location=location,
        unlocked=unlocked, locked_reason=reason,
        rekey_in_progress=bool(s.scalar("SELECT 1 FROM data_keys WHERE state = 'next'")),
        orgs=count("orgs"), members=count("members"), keys=count("keys"),
        usage_records=count("usage"), audit_entries=count("audit"),
    )
