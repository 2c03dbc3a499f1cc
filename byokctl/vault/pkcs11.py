"""The PKCS#11 master-key source: a vault's master key wrapped by an AES-256 key that never
leaves an HSM (or SoftHSM2), named by an RFC 7512 URI (byokctl/vault/pkcs11_uri.py).

Only this module talks to `python-pkcs11`, imported inside `open_wrapper`, so a command that
does not unwrap through an HSM never loads it. The PIN comes from `$BYOKCTL_PKCS11_PIN` or a
private `pin-source=` file, is handed to C_Login and kept nowhere.

Blob format, version 1: `01 || iv (12 bytes) || AES-GCM ciphertext || tag (16 bytes)`, made by
CKM_AES_GCM inside the token with the GCM AAD `01 || aad`, so the version byte is authenticated
with the caller's associated data. The IV comes from the OS's CSPRNG (a fresh 96-bit value per
wrap); SoftHSM2 2.6 and most HSMs take a caller's IV.
"""

from __future__ import annotations

import os
import stat
import threading
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, NoReturn

from byokctl.errors import UsageError, VaultLocked
from byokctl.files import check_private_file
from byokctl.vault.pkcs11_uri import PIN_ENV, Pkcs11Reference, parse_reference

if TYPE_CHECKING:
    from types import ModuleType

BLOB_VERSION = 1
IV_BYTES = 12
TAG_BYTES = 16
KEY_BYTES = 32  # AES-256
_HEADER = bytes([BLOB_VERSION])


def canonical(reference: str) -> str:
    """The reference as the vault stores it: the canonical RFC 7512 spelling (fixed attribute
    order, minimal escaping, no PIN). A malformed one is a usage error (exit 2) here, where a
    person typed it (`init --kms`, `rotate-master --kms`), not exit 10."""
    try:
        return parse_reference(reference).uri
    except VaultLocked as exc:
        raise UsageError(exc.what, exc.fix) from None


def open_wrapper(reference: str, *, create_key: bool = False) -> Pkcs11Wrapper:
    """Open the HSM key `reference` names (log in, find the key) for wrapping and unwrapping.

    With `create_key`, generate the key when the token has none of that label (and refuse if
    it has one). Every failure raises VaultLocked with the fix; nothing here prints or stores
    the PIN. Example: `open_wrapper("pkcs11:token=prod;object=byokctl?module-path=/usr/lib/
    softhsm/libsofthsm2.so")`."""
    ref = parse_reference(reference)
    pin = _pin(ref)
    with ExitStack() as undo:  # on a failure, each step taken is undone, last first
        library = _Library.get(ref.module_path)
        token = _find_token(library.lib, ref)
        slot = library.log_in(token, ref, pin)
        del pin
        undo.callback(library.log_out, slot)
        session = _session(token, ref, rw=create_key)
        undo.callback(_close_quietly, session)
        key = _create_key(session, ref) if create_key else _find_key(session, ref)
        undo.pop_all()
    return Pkcs11Wrapper(ref, library, token, slot, session, key)


class Pkcs11Wrapper:
    """An open HSM key: wraps and unwraps a master key inside the token. Close it when done."""

    def __init__(self, ref: Pkcs11Reference, library: _Library, token: Any, slot: int, session: Any,
                 key: Any) -> None:
        self.reference: str = ref.uri  # canonical, non-secret
        self._ref = ref
        self._library = library
        self._slot = slot
        self._session = session
        self._key = key
        # Read once, while open: `vault status` asks after the work is done.
        extractable = "extractable" if _attribute(key, "EXTRACTABLE") else "non-extractable"
        pin = f"PIN from file {ref.pin_source}" if ref.pin_source else f"PIN from ${PIN_ENV}"
        self._description = (f"PKCS#11 key {ref.object!r} (AES-256, {extractable}) on token "
                             f"{_token_field(token, 'label')!r} (serial {_token_serial(token)}) "
                             f"through {ref.module_path}; {pin}")

    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt `plaintext` with the token's key (AES-GCM, `aad` authenticated) into a blob."""
        self._check_open()
        iv = os.urandom(IV_BYTES)
        body = self._crypt("encrypt", bytes(plaintext), iv, aad)
        return _HEADER + iv + body

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob `wrap` made with this key and the same `aad`; refuse any other."""
        self._check_open()
        blob = bytes(blob)
        if len(blob) < 1 + IV_BYTES + TAG_BYTES or blob[0] != BLOB_VERSION:
            version = f"version {blob[0]}" if blob else "an empty blob"
            raise VaultLocked(
                f"The wrapped master key is not a PKCS#11 blob byokctl can read ({version}, "
                f"{len(blob)} bytes)", "restore the vault from a backup, or upgrade byokctl if a "
                "newer version wrote it")
        iv, body = blob[1:1 + IV_BYTES], blob[1 + IV_BYTES:]
        return self._crypt("decrypt", body, iv, aad)

    def describe(self) -> str:
        """One line for `vault status`: the key, the token, the module and the PIN's source."""
        return self._description

    def close(self) -> None:
        """Close the session, and log out if no other wrapper uses the token; twice is harmless."""
        if self._session is None:
            return
        session, self._session, self._key = self._session, None, None
        _close_quietly(session)
        self._library.log_out(self._slot)

    def __enter__(self) -> Pkcs11Wrapper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pkcs11Wrapper({self.reference!r})"

    def _check_open(self) -> None:
        if self._session is None:
            raise VaultLocked("The PKCS#11 key was already closed", "open it again with open_wrapper")

    def _crypt(self, direction: str, data: bytes, iv: bytes, aad: bytes) -> bytes:
        pkcs11 = _pkcs11()
        from pkcs11.mechanisms import GCMParams

        param = GCMParams(iv, _HEADER + bytes(aad), TAG_BYTES * 8)
        try:
            return getattr(self._key, direction)(data, mechanism=pkcs11.Mechanism.AES_GCM,
                                                 mechanism_param=param)
        except pkcs11.exceptions.PKCS11Error as exc:
            if direction == "decrypt" and isinstance(exc, _undecryptable()):
                raise VaultLocked(
                    f"The wrapped master key does not decrypt with PKCS#11 key {self._ref.object!r} "
                    f"on {self._ref.token_description}: another key, another vault, or a tampered "
                    "blob", "point the vault at the key that wrapped it (restore the key on the "
                    "token, or use the reference the vault was created with), or restore the vault "
                    "from a backup") from None
            _fail(exc, self._ref, f"could not {direction} with key {self._ref.object!r}")


# --- the module, shared by the wrappers open on it -------------------------------------------

class _Library:
    """The process's one handle on each PKCS#11 module, loaded on first use and kept: PKCS#11
    allows one C_Initialize per process, a second handle's C_Finalize would pull the module from
    under the first, and SoftHSM2 crashes when initialised again after C_Finalize.

    PKCS#11 logs in the application, not a session: a second C_Login on a token fails, and one
    session's C_Logout logs every other out. So each token's login is held here by a session of
    its own, counted, and each wrapper works in a session that did not log in. A wrapper opened
    while the process is logged in to its token is not asked for the PIN again: PKCS#11 has no
    way to check a PIN but C_Login."""

    _lock = threading.Lock()
    _loaded: dict[str, _Library] = {}

    def __init__(self, lib: Any) -> None:
        self.lib = lib
        self.logins: dict[int, list] = {}  # slot id -> [the session holding the login, users]

    @classmethod
    def get(cls, path: str) -> _Library:
        with cls._lock:
            library = cls._loaded.get(path)
            if library is None:
                library = cls._loaded[path] = cls(_load(path))
            return library

    def log_in(self, token: Any, ref: Pkcs11Reference, pin: str | None) -> int:
        """Log in to `token` unless this process already has; return its slot id."""
        slot = token.slot.slot_id
        with self._lock:
            held = self.logins.get(slot)
            if held is None:
                held = self.logins[slot] = [_login_session(token, ref, pin), 0]
            held[1] += 1
        return slot

    def log_out(self, slot: int) -> None:
        """Let go of the token's login; the last to let go logs out."""
        with self._lock:
            held = self.logins[slot]
            held[1] -= 1
            if held[1] == 0:
                del self.logins[slot]
                if held[0] is not None:
                    _close_quietly(held[0])


def load_module(path: str) -> Any:
    """The process's python-pkcs11 `lib` for the PKCS#11 module at `path`, loaded once and shared
    (with the wrappers too): never load the module a second time in a process that uses this."""
    return _Library.get(path).lib


def _pkcs11() -> ModuleType:
    try:
        import pkcs11
    except ImportError:
        raise VaultLocked("The vault's master key is in a PKCS#11 HSM, but python-pkcs11 is not "
                          "installed", "run `pip install 'byokctl[pkcs11]'`") from None
    return pkcs11


def _load(path: str) -> Any:
    pkcs11 = _pkcs11()
    try:
        st = os.stat(path)
    except OSError as exc:
        raise VaultLocked(f"The PKCS#11 module {path} is not there ({exc.strerror})",
                          "install the HSM's PKCS#11 library (SoftHSM2: `apt-get install softhsm2`) "
                          "or fix module-path= in the reference") from None
    _check_module_file(path, st)
    try:
        return pkcs11.lib(path)
    except pkcs11.exceptions.PKCS11Error as exc:
        raise VaultLocked(f"The PKCS#11 module {path} could not be loaded ({_plain(exc)})",
                          "check that module-path= names the HSM vendor's PKCS#11 library for this "
                          "machine's architecture") from None


def _check_module_file(path: str, st: os.stat_result) -> None:
    """Loading a module runs its code: refuse one that another user could have written."""
    if not stat.S_ISREG(st.st_mode):
        raise VaultLocked(f"The PKCS#11 module {path} is not a file",
                          "point module-path= at the library file itself (a .so)")
    if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise VaultLocked(f"The PKCS#11 module {path} could be rewritten by another user, and loading "
                          "it would run their code", f"make it root's (or yours) and not writable by "
                          f"others (`chmod go-w {path}`), or use the vendor's installed copy")


# --- token, PIN, session ----------------------------------------------------------------------

def _find_token(lib: Any, ref: Pkcs11Reference) -> Any:
    pkcs11 = _pkcs11()
    found = []
    try:
        for slot in lib.get_slots(token_present=True):
            if ref.slot_id is not None and slot.slot_id != ref.slot_id:
                continue
            try:
                token = slot.get_token()
            except (pkcs11.exceptions.TokenNotPresent, pkcs11.exceptions.TokenNotRecognised):
                continue
            if _token_matches(token, ref):
                found.append(token)
    except pkcs11.exceptions.PKCS11Error as exc:
        _fail(exc, ref, "could not list its slots")
    if not found:
        raise VaultLocked(f"The HSM holding the vault's master key is not there: no {ref.token_description} "
                          f"in {ref.module_path}", "plug in or start the token (SoftHSM2: check "
                          "$SOFTHSM2_CONF and `softhsm2-util --show-slots`), or fix token= in the "
                          "reference")
    if len(found) > 1:
        raise VaultLocked(f"Several tokens match {ref.token_description} in {ref.module_path}",
                          "add serial= (or slot-id=) to the reference to pick one")
    token = found[0]
    if not token.flags & pkcs11.TokenFlag.TOKEN_INITIALIZED:
        raise VaultLocked(f"The {ref.token_description} is not initialised",
                          "initialise it with the HSM's tool (SoftHSM2: `softhsm2-util --init-token`)")
    return token


def _token_matches(token: Any, ref: Pkcs11Reference) -> bool:
    wanted = {"label": ref.token, "serial": ref.serial, "manufacturer_id": ref.manufacturer,
              "model": ref.model}
    return all(value is None or _token_field(token, name) == value for name, value in wanted.items())


def _token_field(token: Any, name: str) -> str:
    value = getattr(token, name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value.rstrip(" \x00")


def _token_serial(token: Any) -> str:
    return _token_field(token, "serial") or "none"


def _pin(ref: Pkcs11Reference) -> str | None:
    """The user PIN: from the reference's pin-source file if it names one, else the env var."""
    if ref.pin_source is None:
        return os.environ.get(PIN_ENV) or None
    path = ref.pin_source
    try:
        st = os.lstat(path)
        _check_pin_file(path, st)
        with open(path, "rb") as f:
            raw = f.read(4096)
    except OSError as exc:
        raise VaultLocked(f"The PKCS#11 PIN file {path} could not be read ({exc.strerror})",
                          "create it with the token's user PIN and `chmod 600` it, or fix "
                          "pin-source= in the reference") from None
    try:
        pin = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
    except UnicodeDecodeError:
        pin = ""
    if not pin or "\n" in pin:
        raise VaultLocked(f"The PKCS#11 PIN file {path} does not hold one PIN",
                          "write the token's user PIN on one line, and nothing else")
    return pin


def _check_pin_file(path: str, st: os.stat_result) -> None:
    """The PIN file must be as private as a key file (byokctl/files.py's rule)."""
    check_private_file(path, st, "PKCS#11 PIN file", error=VaultLocked)


def _login_session(token: Any, ref: Pkcs11Reference, pin: str | None) -> Any:
    """A session logged in as the token's user (None for a token that needs no login)."""
    pkcs11 = _pkcs11()
    flags = token.flags
    if flags & pkcs11.TokenFlag.USER_PIN_LOCKED:  # the token says so before any try is spent
        raise failure(pkcs11.exceptions.PinLocked(), ref, "refused the login")
    if pin is None and flags & pkcs11.TokenFlag.PROTECTED_AUTHENTICATION_PATH:
        pin = pkcs11.PROTECTED_AUTH  # a PIN pad on the reader asks for it
    elif pin is None and flags & pkcs11.TokenFlag.LOGIN_REQUIRED:
        raise VaultLocked(f"No PIN for the HSM's {ref.token_description}",
                          f"set ${PIN_ENV} to the token's user PIN, or add pin-source=file:/path "
                          "(a file only you can read) to the reference")
    elif pin is None:
        return None
    try:
        return token.open(user_pin=pin)
    except pkcs11.exceptions.PKCS11Error as exc:
        _fail(exc, ref, "refused the login")


def _session(token: Any, ref: Pkcs11Reference, *, rw: bool) -> Any:
    """A session of the wrapper's own, sharing the process's login (read-write to create a key)."""
    try:
        return token.open(rw=rw)
    except _pkcs11().exceptions.PKCS11Error as exc:
        _fail(exc, ref, "refused a session")


def _close_quietly(session: Any) -> None:
    try:
        session.close()
    except _pkcs11().exceptions.PKCS11Error:
        pass  # the token went away: its session went with it


# --- the key ----------------------------------------------------------------------------------

def _template(ref: Pkcs11Reference) -> dict:
    pkcs11 = _pkcs11()
    template = {pkcs11.Attribute.LABEL: ref.object}
    if ref.id is not None:
        template[pkcs11.Attribute.ID] = ref.id
    return template


def _objects(session: Any, ref: Pkcs11Reference) -> list:
    pkcs11 = _pkcs11()
    try:
        return list(session.get_objects(_template(ref)))
    except pkcs11.exceptions.PKCS11Error as exc:
        _fail(exc, ref, "could not search its keys")


def _find_key(session: Any, ref: Pkcs11Reference) -> Any:
    objects = _objects(session, ref)
    if not objects:
        raise VaultLocked(f"There is no key {ref.object!r} on the HSM's {ref.token_description}",
                          f"create it with `byokctl init --kms '{ref.uri}' --create-key`, or restore "
                          "the key to the token from its "
                          "backup (a vault wrapped with a lost key cannot be opened)")
    if len(objects) > 1:
        raise VaultLocked(f"Several objects are labelled {ref.object!r} on {ref.token_description}",
                          "add id= to the reference to name one")
    key = objects[0]
    wrong = _wrong_kind(key)
    if wrong:
        raise VaultLocked(f"The object {ref.object!r} on {ref.token_description} is {wrong}, not an "
                          "AES-256 secret key", "point object= at the vault's AES-256 key, or "
                          "create one under a new label with `byokctl init --kms REFERENCE --create-key`")
    return key


def _create_key(session: Any, ref: Pkcs11Reference) -> Any:
    pkcs11 = _pkcs11()
    if _objects(session, ref):
        raise VaultLocked(f"The HSM's {ref.token_description} already has an object labelled "
                          f"{ref.object!r}, which --create-key would not replace",
                          "drop --create-key to use that key, or name a new label in object=")
    if pkcs11.Mechanism.AES_GCM not in _mechanisms(session):
        raise VaultLocked(f"The HSM's {ref.token_description} does not offer AES-GCM (CKM_AES_GCM)",
                          "use a token or module that does (SoftHSM2 2.5 and later do)")
    a = pkcs11.Attribute
    template = {a.TOKEN: True, a.PRIVATE: True, a.SENSITIVE: True, a.EXTRACTABLE: False,
                a.ENCRYPT: True, a.DECRYPT: True, a.WRAP: False, a.UNWRAP: False,
                a.SIGN: False, a.VERIFY: False, a.DERIVE: False}
    try:
        return session.generate_key(pkcs11.KeyType.AES, KEY_BYTES * 8, label=ref.object, id=ref.id,
                                    store=True, template=template)
    except pkcs11.exceptions.PKCS11Error as exc:
        _fail(exc, ref, f"could not create the key {ref.object!r}")


def _wrong_kind(key: Any) -> str | None:
    """What the object is when it is not an AES-256 secret key ("an RSA private key"), else None."""
    pkcs11 = _pkcs11()
    kind = _attribute(key, "CLASS")
    if kind != pkcs11.ObjectClass.SECRET_KEY:
        return "a " + getattr(kind, "name", "unknown object").lower().replace("_", " ")
    key_type = _attribute(key, "KEY_TYPE")
    if key_type != pkcs11.KeyType.AES:
        return f"a {getattr(key_type, 'name', 'non-AES')} secret key"
    length = _attribute(key, "VALUE_LEN") or 0
    return None if length == KEY_BYTES else f"an AES-{8 * length} key"


def _mechanisms(session: Any) -> set:
    """The mechanisms the session's token offers."""
    return set(session.token.slot.get_mechanisms())


def _attribute(key: Any, name: str) -> Any:
    pkcs11 = _pkcs11()
    try:
        return key[getattr(pkcs11.Attribute, name)]
    except pkcs11.exceptions.PKCS11Error:
        return None


# --- failures -------------------------------------------------------------------------------

def _undecryptable() -> tuple[type[Exception], ...]:
    """What a token answers to a GCM tag that does not verify: SoftHSM2 says CKR_GENERAL_ERROR,
    others CKR_ENCRYPTED_DATA_INVALID or CKR_FUNCTION_FAILED."""
    e = _pkcs11().exceptions
    return (e.EncryptedDataInvalid, e.EncryptedDataLenRange, e.GeneralError, e.FunctionFailed,
            e.DataInvalid, e.DataLenRange)


def _fail(exc: Exception, ref: Pkcs11Reference, doing: str) -> NoReturn:
    """Raise VaultLocked for a PKCS#11 error, in words, with what to do about it."""
    raise failure(exc, ref, doing) from None


def failure(exc: Exception, ref: Pkcs11Reference, doing: str) -> VaultLocked:
    """The VaultLocked a PKCS#11 error from `doing` something on `ref`'s token turns into."""
    e = _pkcs11().exceptions
    token = ref.token_description
    if isinstance(exc, e.PinIncorrect):
        return VaultLocked(f"The PIN for the HSM's {token} is wrong", f"set ${PIN_ENV} (or the "
                           "pin-source= file) to the token's user PIN; take care, an HSM locks the "
                           "PIN after a few wrong tries")
    if isinstance(exc, e.PinLocked):
        return VaultLocked(f"The user PIN of the HSM's {token} is locked after too many wrong tries",
                           "have the token's security officer unlock or reset it (C_InitPIN, e.g. "
                           "`pkcs11-tool --init-pin --login --login-type so`), then run the command again")
    if isinstance(exc, e.PinExpired):
        return VaultLocked(f"The user PIN of the HSM's {token} has expired",
                           "change it with the HSM's tool, then set the new PIN")
    if isinstance(exc, (e.PinInvalid, e.PinLenRange)):
        return VaultLocked(f"The HSM's {token} does not accept the PIN given (wrong length or "
                           "characters)", f"set ${PIN_ENV} (or the pin-source= file) to the token's "
                           "user PIN")
    if isinstance(exc, e.UserPinNotInitialized):
        return VaultLocked(f"The HSM's {token} has no user PIN yet",
                           "have its security officer set one (C_InitPIN)")
    if isinstance(exc, (e.TokenNotPresent, e.DeviceRemoved, e.SessionClosed, e.SessionHandleInvalid,
                        e.NoSuchToken)):
        return VaultLocked(f"The HSM's {token} went away ({doing})",
                           "plug in or start the token, then run the command again")
    if isinstance(exc, e.TokenWriteProtected):
        return VaultLocked(f"The HSM's {token} is write-protected ({doing})",
                           "create the key on a writable token, or create it with the HSM's tool")
    if isinstance(exc, e.MechanismInvalid):
        return VaultLocked(f"The HSM's {token} does not offer AES-GCM (CKM_AES_GCM) ({doing})",
                           "use a token or module that does")
    return VaultLocked(f"The HSM's {token} {doing} ({_plain(exc)})",
                       "check the token with its vendor's tool, then run the command again")


def _plain(exc: Exception) -> str:
    """A library error in one safe line: its class, and its text without control characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(exc))[:200].strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
