"""Where the master key lives: `$BYOKCTL_MASTER_KEY`, the OS keyring, a key file, or wrapped
by a key manager (`kms`: Vault transit, PKCS#11; see `vault.kms`).

Only this module talks to `keyring`. A rotation writes the new key beside the old one first
(`<entry>.next` / `<file>.next`), so a crash between the store commit and the swap never
locks the vault: `load` tries the pending key when the current one does not open it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
from pathlib import Path
from typing import NamedTuple

from byokctl.errors import UsageError, VaultLocked

ENV_VAR = "BYOKCTL_MASTER_KEY"
KEYRING_SERVICE = "byokctl"


class MasterKey(NamedTuple):
    key: bytes
    source: str  # "env" | "keyring" | "file" | "kms"
    location: str  # human description: "$BYOKCTL_MASTER_KEY", "keyring byokctl/vault-…", a path
    pending: bool = False  # the key came from a rotation's `.next` slot

    def __repr__(self) -> str:  # never the key itself
        return f"MasterKey(source={self.source!r}, location={self.location!r}, pending={self.pending})"


def encode(key: bytes) -> str:
    return base64.b64encode(key).decode()


def decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise VaultLocked(
            f"The master key in {where} is not base64 of 32 bytes", "fix it, or unset it to use "
            "the vault's own key source"
        )
    return key


def keyring_user(vault_id: str) -> str:
    return f"vault-{vault_id}"


def _keyring():  # noqa: ANN202 - the keyring module, imported only when needed
    import keyring

    return keyring


def keyring_get(user: str) -> str | None:
    try:
        return _keyring().get_password(KEYRING_SERVICE, user)
    except Exception as exc:  # any backend failure means "not available here"
        raise VaultLocked(
            f"The OS keyring could not be read ({type(exc).__name__})", "unlock or start your "
            f"keyring, or set ${ENV_VAR} to the vault's master key"
        ) from None


def keyring_set(user: str, value: str) -> None:
    try:
        _keyring().set_password(KEYRING_SERVICE, user, value)
    except Exception as exc:
        raise VaultLocked(
            f"The OS keyring could not store the master key ({type(exc).__name__})", "run "
            f"`byokctl init --master-key-file PATH` or set ${ENV_VAR} instead"
        ) from None


def keyring_delete(user: str) -> None:
    with contextlib.suppress(Exception):  # already gone is fine
        _keyring().delete_password(KEYRING_SERVICE, user)


def read_key_file(path: Path) -> bytes | None:
    """The key in `path`, or None if there is none; its directory, owner and mode are checked
    first (as ssh does), on the open file itself, so nothing can be swapped in between."""
    from byokctl.files import check_private_dir, check_private_file

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        check_private_file(path, os.lstat(path), "master key file", VaultLocked)  # names the link
        raise
    try:
        check_private_dir(path.absolute().parent, "master key file", VaultLocked)
        check_private_file(path, os.fstat(fd), "master key file", VaultLocked)
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read(4096)
    finally:
        os.close(fd)
    return decode(raw.decode("ascii", "replace"), str(path))


def write_key_file(path: Path, key: bytes) -> None:
    """Write the key atomically with mode 0600 (`write_private_file`)."""
    write_private_file(path, (encode(key) + "\n").encode())


def write_private_file(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600: a new file of a random name in the same directory
    (O_EXCL|O_NOFOLLOW, so nothing another user planted there receives the key), then rename."""
    from byokctl.files import check_private_dir

    parent = path.absolute().parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
        parent.chmod(0o700)  # mkdir's mode is filtered by the umask
    check_private_dir(parent, "master key file", VaultLocked)
    tmp = parent / f".{path.name}.{os.urandom(8).hex()}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_WRONLY, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # os.write and fsync name no file: name the key file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def candidates(vault_id: str, source: str, key_file: str | None,
               kms_ref: str | None = None, kms_blob: str | None = None) -> list[MasterKey]:
    """The master keys to try, in order; raises VaultLocked when there is none at all.

    `$BYOKCTL_MASTER_KEY`, when set, is the only one (whatever the vault's own source). A
    `kms` vault's key is its wrapped blob (`kms_blob`, base64) unwrapped by the key manager
    `kms_ref` names: one round trip."""
    if env := os.environ.get(ENV_VAR):
        return [MasterKey(decode(env, f"${ENV_VAR}"), "env", f"${ENV_VAR}")]
    found: list[MasterKey] = []
    if source == "kms":
        return [kms_unwrap(vault_id, kms_ref, kms_blob)]
    if source == "keyring":
        user = keyring_user(vault_id)
        where = f"the OS keyring ({KEYRING_SERVICE}/{user})"
        for name, pending in ((user, False), (user + ".next", True)):
            if (value := keyring_get(name)) is not None:
                found.append(MasterKey(decode(value, where), "keyring", where, pending))
        if not found:
            raise VaultLocked(
                f"No master key for this vault in {where}", f"set ${ENV_VAR} to the vault's master "
                "key, or restore the keyring entry"
            )
    elif source == "file" and key_file:
        path = Path(key_file)
        for p, pending in ((path, False), (path.with_name(path.name + ".next"), True)):
            if (key := read_key_file(p)) is not None:
                found.append(MasterKey(key, "file", str(path), pending))
        if not found:
            raise VaultLocked(
                f"The master key file {path} is missing", f"restore it, or set ${ENV_VAR} to the "
                "vault's master key"
            )
    else:
        raise VaultLocked(
            "This vault keeps its master key outside the file and none was given", "set "
            f"${ENV_VAR} to the vault's master key"
        )
    return found


def kms_unwrap(vault_id: str, reference: str | None, blob: str | None) -> MasterKey:
    """The master key a key manager keeps wrapped for this vault (VaultLocked if it will not)."""
    from byokctl.vault import kms

    if not reference or not blob:
        raise VaultLocked("This vault's master key is kept by a key manager, but the vault names "
                          "none", "restore the vault from a backup")
    try:
        wrapped = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise VaultLocked("This vault's wrapped master key is damaged", "restore the vault from a "
                          "backup") from None
    try:
        wrapper = kms.open_wrapper(reference)
    except UsageError:  # a reference this byokctl cannot read: written by another, or damaged
        raise VaultLocked(f"This vault's key manager reference {reference!r} is not one this byokctl "
                          "knows", "use the byokctl that created the vault, or restore the vault "
                          "from a backup") from None
    try:
        key = wrapper.unwrap(wrapped, kms.master_aad(vault_id, reference))
        where = wrapper.describe()
    finally:
        wrapper.close()
    if len(key) != 32:
        raise VaultLocked(f"{reference} unwrapped no master key (got {len(key)} bytes)",
                          "restore the vault from a backup")
    return MasterKey(key, "kms", where)


def kms_wrap(vault_id: str, reference: str, key: bytes, *, create_key: bool = False) -> tuple[str, str, str]:
    """Wrap a new master key with the key manager `reference` names, and unwrap it again to
    be sure the same token can open it; returns (canonical reference, blob as base64,
    description). Nothing is stored here: the caller writes both in its transaction."""
    from byokctl.vault import kms

    reference = kms.canonical(reference)
    wrapper = kms.open_wrapper(reference, create_key=create_key)
    try:
        aad = kms.master_aad(vault_id, reference)
        blob = wrapper.wrap(key, aad)
        if wrapper.unwrap(blob, aad) != key:
            raise VaultLocked(f"{reference} did not give back the master key it wrapped, so "
                              "nothing was changed", "check the key manager, and try again")
        where = wrapper.describe()
    finally:
        wrapper.close()
    return reference, base64.b64encode(blob).decode(), where


def kms_rewrap(vault_id: str, reference: str, blob: str) -> tuple[str, str]:
    """The blob wrapped again under the key manager key's newest version (transit after
    `bao write -f transit/keys/K/rotate`); returns (blob as base64, description)."""
    from byokctl.vault import kms

    wrapper = kms.open_wrapper(reference)
    try:
        rewrap = getattr(wrapper, "rewrap", None)
        if rewrap is None:
            raise UsageError(f"{reference} has no key versions to rewrap to",
                             "move the vault to a new key with `byokctl vault rotate-master --kms REF`")
        aad = kms.master_aad(vault_id, reference)
        new = rewrap(base64.b64decode(blob), aad)
        wrapper.unwrap(new, aad)  # the new blob opens before it replaces the old one
        where = wrapper.describe()
    finally:
        wrapper.close()
    return base64.b64encode(new).decode(), where


def next_path(path: Path) -> Path:
    return path.with_name(path.name + ".next")


def stage(source: str, vault_id: str, key_file: str | None, key: bytes) -> None:
    """Step 1 of a rotation: keep the new key in the `.next` slot before the store commits."""
    if source == "keyring":
        user = keyring_user(vault_id) + ".next"
        try:
            _keyring().set_password(KEYRING_SERVICE, user, encode(key))
            kept = _keyring().get_password(KEYRING_SERVICE, user) == encode(key)
        except Exception as exc:  # any backend failure
            raise VaultLocked(
                f"The OS keyring could not store the new master key ({type(exc).__name__}), so "
                "nothing was changed", "unlock your keyring and run `byokctl vault rotate-master` again"
            ) from None
        if not kept:
            raise VaultLocked(
                "The OS keyring did not keep the new master key, so nothing was changed", "check "
                "your keyring and run `byokctl vault rotate-master` again"
            )
    elif source == "file" and key_file:
        write_key_file(next_path(Path(key_file)), key)


def unstage(source: str, vault_id: str, key_file: str | None) -> None:
    """Drop a staged key whose rotation did not commit (the current key still opens the vault)."""
    if source == "keyring":
        keyring_delete(keyring_user(vault_id) + ".next")
    elif source == "file" and key_file:
        next_path(Path(key_file)).unlink(missing_ok=True)


def promote(source: str, vault_id: str, key_file: str | None, key: bytes) -> None:
    """Step 3 of a rotation (or its recovery): the committed key becomes the current one."""
    if source == "keyring":
        user = keyring_user(vault_id)
        keyring_set(user, encode(key))
        keyring_delete(user + ".next")
    elif source == "file" and key_file:
        path = Path(key_file)
        staged = next_path(path)
        if staged.exists():
            os.replace(staged, path)  # atomic: the file holds the old key or the new one
        else:
            write_key_file(path, key)


# The audit chain's head, kept beside the master key (`<keyfile>.head`, or a second keyring
# entry): an older copy of the vault file restored, or its log cut, no longer reaches it.
# Not secret, but it lives where the key does because that is what an attacker holding only
# the vault file cannot roll back.

def head_location(source: str, vault_id: str, key_file: str | None) -> str | None:
    if source == "keyring":
        return f"the OS keyring ({KEYRING_SERVICE}/{keyring_user(vault_id)}.head)"
    if source == "file" and key_file:
        return str(Path(key_file).with_name(Path(key_file).name + ".head"))
    return None


def read_head(source: str, vault_id: str, key_file: str | None) -> str | None:
    """The stored head text (`SEQ:MAC`), or None where there is none (or no place for one)."""
    if source == "keyring":
        return keyring_get(keyring_user(vault_id) + ".head")
    if source == "file" and key_file:
        path = Path(key_file).with_name(Path(key_file).name + ".head")
        from byokctl.files import check_private_file

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        try:
            check_private_file(path, os.fstat(fd), "audit head file", VaultLocked)
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read(4096).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    return None


def write_head(source: str, vault_id: str, key_file: str | None, text: str) -> None:
    if source == "keyring":
        keyring_set(keyring_user(vault_id) + ".head", text)
    elif source == "file" and key_file:
        path = Path(key_file)
        write_private_file(path.with_name(path.name + ".head"), text.encode() + b"\n")
