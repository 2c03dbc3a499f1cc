"""What every service call runs with: the store, who is acting, and the vault when needed."""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byokctl.store import Store, open_any

if TYPE_CHECKING:
    from byokctl.providers.pool import Pool
    from byokctl.vault.envelope import Vault

UNSEEN = object()  # Context.recall: not read by this request


def operator_name() -> str:
    """The platform operator's name for the audit log: `$BYOKCTL_ACTOR`, else the OS user."""
    if name := os.environ.get("BYOKCTL_ACTOR", "").strip():
        return _printable(name)
    try:
        return _printable(getpass.getuser())
    except Exception:  # no passwd entry (containers): still record something honest
        return f"uid:{os.getuid()}"


def os_user() -> str:
    """The OS account behind this process, by uid (not `$USER`, which anyone can set)."""
    try:
        import pwd

        return _printable(pwd.getpwuid(os.getuid()).pw_name)
    except (ImportError, KeyError):  # no passwd entry (containers)
        return f"uid:{os.getuid()}"


def _printable(name: str) -> str:
    """The name as UTF-8 text: bytes the environment held that are not UTF-8 (surrogate
    escapes) are kept visible as `\\xff`, since the audit log and its MACs need real text."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class Context:
    store: Store
    as_email: str | None = None  # `--as EMAIL`: act as this member of the command's org
    _vault: Vault | None = field(default=None, repr=False)
    # (org, email) of the member rows whose roles decided permissions (`--as`); a write
    # checks their MACs first, so a role changed outside byokctl grants nothing.
    acting_members: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        # `--as " BOB@x "` is bob@x everywhere: permissions, key lookups, messages, the audit.
        if self.as_email is not None:
            self.as_email = self.as_email.strip().lower()
    audit_appended: bool = field(default=False, repr=False)  # since the last commit
    defer_head_check: bool = field(default=False, repr=False)  # `audit.verify` reports it instead
    # The operator's name for the audit log when a program gives one (`Vault.open(actor=)`);
    # None: `$BYOKCTL_ACTOR`, else the OS user.
    operator: str | None = None
    # The raw master key a program gave (`Vault.open(master_key=)`); None: the vault's sources.
    master_key: bytes | None = field(default=None, repr=False)
    # The rows a request was decided from (`resolution.remember`): (table, primary key) → row,
    # ("meta", key) → value. Used by `recall` outside a transaction; forgotten at each write.
    seen: dict[tuple[str, object], Any] = field(default_factory=dict, repr=False)
    # SDK clients kept for reuse by a long-lived process (byokctl.Vault); None: one per call.
    clients: Pool | None = field(default=None, repr=False)

    def recall(self, table: str, key: object) -> Any:
        """What this request read of `table`'s row `key` (a primary key; for "meta", a meta
        key), for the checks and the secret's opening before its call, so they do not read it
        again; UNSEEN if it was not read, or inside a write transaction (read it there)."""
        if not self.seen or self.store.in_transaction:
            return UNSEEN
        return self.seen.get((table, key), UNSEEN)

    @property
    def actor(self) -> str:
        """Who the audit log names: the member acting with `--as` (as stored), else the operator."""
        if self.as_email:
            return self.as_email
        if self.operator is None:  # asked of the environment once (a passwd lookup per call)
            self.operator = operator_name()
        return self.operator

    @property
    def os_user(self) -> str | None:
        """With `--as`, the OS account that ran the command (recorded beside the member)."""
        return os_user() if self.as_email is not None else None

    def vault(self) -> Vault:
        """Unlock on first use: commands that never ask need no master key."""
        if self._vault is None:
            from byokctl.services.vaultkeys import unlock

            vault = unlock(self.store, self.master_key)
            from byokctl.services import audit

            if not self.defer_head_check:
                audit.check_saved_head(self, vault)  # rolled back to an older copy: exit 13
            self._vault = vault
            if vault.rotation_finished:  # the new master key's first use re-wrapped the data keys
                with self.write():
                    audit.record(self, "vault.rotate_master_finish", target=vault.vault_id,
                                 after={"master_source": vault.master.source})
            if self.store.meta("row_macs_pending") is not None:  # set by migration m004
                from byokctl.services.integrity import adopt_legacy

                adopt_legacy(self)
        return self._vault

    @contextmanager
    def write(self) -> Iterator[Store]:
        """A write transaction on the store (yielded). Unlocks first (audit entries are MACed),
        so no lock is held while a keyring is asked for the master key."""
        vault = self.vault()
        self.seen = {}  # what it changes is read again afterwards
        outer = not self.store.in_transaction
        try:
            with self.store.tx() as store:
                from byokctl.services.vaultkeys import refresh

                refresh(self.store, vault)  # a concurrent rekey may have retired our data key
                if self.acting_members:
                    from byokctl.services.integrity import verify_members

                    verify_members(self, self.acting_members)
                yield store
        except BaseException:
            if outer:
                self.audit_appended = False
            raise
        if outer and self.audit_appended:  # committed: the new head goes beside the master key
            self.audit_appended = False
            from byokctl.services import audit

            audit.save_head(self)

    def close(self) -> None:
        self.store.close()


def open_context(db: str | Path | None, as_email: str | None = None) -> Context:
    return Context(open_any(db), as_email=as_email)
