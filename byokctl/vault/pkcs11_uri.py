"""RFC 7512 `pkcs11:` URIs naming the HSM key that wraps a vault's master key: parsing, checks,
and the one canonical spelling stored in the vault and shown to people.

Pure string work (no PKCS#11 library): a reference can be checked, and printed, on a machine
without the token. A PIN never lives in a reference: `pin-value=` is refused, and `pin-source=`
holds only where to read the PIN from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote, unquote_to_bytes

from byokctl.errors import VaultLocked

SCHEME = "pkcs11:"
PIN_ENV = "BYOKCTL_PKCS11_PIN"
EXAMPLE = "pkcs11:token=NAME;object=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so"

# The path attributes this source matches on, in the order the canonical spelling writes them
# (token first, then the object), and the query attributes it reads. Anything else is refused:
# an attribute ignored would widen the match to keys the user did not name.
PATH_ATTRIBUTES = ("token", "manufacturer", "model", "serial", "slot-id", "object", "id", "type")
QUERY_ATTRIBUTES = ("module-path", "pin-source")
_UNSUPPORTED = {
    "module-name": "give the module's file with module-path=/path/to/module.so instead",
    "library-manufacturer": "name the module with module-path= instead",
    "library-description": "name the module with module-path= instead",
    "library-version": "name the module with module-path= instead",
    "slot-description": "name the token with token= or serial= instead",
    "slot-manufacturer": "name the token with token= or serial= instead",
}
# CK_TOKEN_INFO's fixed-width fields: a longer value can match no token.
_TOKEN_FIELD_WIDTH = {"token": 32, "manufacturer": 32, "model": 16, "serial": 16}
# Characters left unescaped in the canonical spelling: RFC 7512's unreserved set plus the
# reserved ones it allows in each part (`;`, `?`, `&`, `=`, `%` and `/` in a path value escaped).
_PATH_SAFE = ":[]@!$'()*+,"
_QUERY_SAFE = "/:[]@!$'()*+,"
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True)
class Pkcs11Reference:
    """A parsed `pkcs11:` URI: which module, which token, which key, where the PIN comes from."""

    module_path: str
    object: str
    token: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    serial: str | None = None
    slot_id: int | None = None
    id: bytes | None = None
    pin_source: str | None = None  # an absolute path (from `pin-source=file:...`), never a PIN

    @property
    def uri(self) -> str:
        """The canonical RFC 7512 spelling: fixed attribute order, minimal escaping, no PIN."""
        path = [f"{name}={_escape(value, _PATH_SAFE)}" for name, value in self._path_values()]
        query = [f"module-path={_escape(self.module_path, _QUERY_SAFE)}"]
        if self.pin_source is not None:
            query.append(f"pin-source={_escape('file:' + self.pin_source, _QUERY_SAFE)}")
        return f"{SCHEME}{';'.join(path)}?{'&'.join(query)}"

    @property
    def token_description(self) -> str:
        """How a person would name the token: its label, else its serial, else its slot."""
        if self.token is not None:
            return f"token {self.token!r}"
        if self.serial is not None:
            return f"the token with serial {self.serial!r}"
        return f"the token in slot {self.slot_id}"

    def _path_values(self) -> list[tuple[str, str | bytes]]:
        values: dict[str, str | bytes | None] = {
            "token": self.token, "manufacturer": self.manufacturer, "model": self.model,
            "serial": self.serial, "slot-id": None if self.slot_id is None else str(self.slot_id),
            "object": self.object, "id": self.id, "type": "secret-key",
        }
        return [(name, values[name]) for name in PATH_ATTRIBUTES if values[name] is not None]


def parse_reference(reference: str) -> Pkcs11Reference:
    """Parse and check a `pkcs11:` URI naming the wrapping key; raise VaultLocked saying what to fix.

    The URI must name the module (`module-path=`, an absolute path), the token (`token=`,
    `serial=` or `slot-id=`) and the key (`object=`); `id=`, `manufacturer=`, `model=` and
    `type=secret-key` narrow the match; `pin-source=file:/path` names a PIN file."""
    if not isinstance(reference, str) or reference[:len(SCHEME)].lower() != SCHEME:
        _refuse("is not a pkcs11: URI", f"write it as '{EXAMPLE}'")
    body = reference[len(SCHEME):]
    path_part, _, query_part = body.partition("?")
    path = _attributes(path_part, ";", "path")
    query = _attributes(query_part, "&", "query")
    _check_names(path, query)
    return _reference(path, query)


def _attributes(part: str, separator: str, where: str) -> dict[str, bytes]:
    """`name=value` pairs of one part of the URI, values percent-decoded, each name once."""
    found: dict[str, bytes] = {}
    if not part:
        return found
    for item in part.split(separator):
        name, equals, raw = item.partition("=")
        name = name.strip().lower()
        if not equals or not name:
            _refuse(f"has a {where} attribute that is not name=value (an empty one, or one "
                    "without '=')", f"write it as '{EXAMPLE}'")
        if _PCT.search(raw):
            _refuse(f"has a stray '%' in {name}=", "escape a literal '%' as %25")
        if name in found:
            _refuse(f"names {name}= twice", f"keep one {name}= attribute")
        found[name] = unquote_to_bytes(raw)
    return found


def _check_names(path: dict[str, bytes], query: dict[str, bytes]) -> None:
    if "pin-value" in path or "pin-value" in query:
        _refuse("holds the PIN itself (pin-value=), which would be stored in the vault and shown "
                "by `vault status`", f"remove pin-value= and set ${PIN_ENV}, or point "
                "pin-source=file:/path at a file only you can read")
    for name in (*path, *query):
        if name in _UNSUPPORTED:
            _refuse(f"uses {name}=, which byokctl does not support", _UNSUPPORTED[name])
    for name in path:
        if name not in PATH_ATTRIBUTES:
            where = " (it belongs after the '?')" if name in QUERY_ATTRIBUTES else ""
            _refuse(f"has an unknown attribute {_shown(name)}={where}",
                    f"use only {', '.join(PATH_ATTRIBUTES)} before the '?'")
    for name in query:
        if name not in QUERY_ATTRIBUTES:
            where = " (it belongs before the '?')" if name in PATH_ATTRIBUTES else ""
            _refuse(f"has an unknown query attribute {_shown(name)}={where}",
                    f"use only {', '.join(QUERY_ATTRIBUTES)} after the '?'")


def _reference(path: dict[str, bytes], query: dict[str, bytes]) -> Pkcs11Reference:
    text = {name: _text(name, value) for name, value in {**path, **query}.items() if name != "id"}
    if "module-path" not in text:
        _refuse("does not name the PKCS#11 module", "add ?module-path=/path/to/module.so "
                "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)")
    if not text["module-path"].startswith("/"):
        _refuse("names the module by a relative path, which would load whatever file of that name "
                "the current directory holds", "give module-path= as an absolute path")
    if "object" not in text:
        _refuse("does not name the key", "add object=LABEL, the label of the AES key on the token")
    if not {"token", "serial", "slot-id"} & text.keys():
        _refuse("does not name the token", "add token=LABEL (or serial= or slot-id=)")
    if text.get("type", "secret-key") != "secret-key":
        _refuse(f"asks for type={text['type']}, but the wrapping key is a secret key",
                "use type=secret-key, or leave type= out")
    for name, width in _TOKEN_FIELD_WIDTH.items():
        if name in text and len(text[name].encode()) > width:
            _refuse(f"has a {name}= longer than the {width} bytes PKCS#11 allows, which matches no "
                    "token", f"check the {name}= value against the token's own")
    if "id" in path and not path["id"]:
        _refuse("has an empty id=", "give the key's CKA_ID, percent-encoded (id=%01%02), or leave id= out")
    return Pkcs11Reference(
        module_path=text["module-path"], object=text["object"], token=text.get("token"),
        manufacturer=text.get("manufacturer"), model=text.get("model"), serial=text.get("serial"),
        slot_id=_slot_id(text["slot-id"]) if "slot-id" in text else None, id=path.get("id"),
        pin_source=_pin_file(text["pin-source"]) if "pin-source" in text else None,
    )


def _text(name: str, value: bytes) -> str:
    """A decoded text attribute: UTF-8, not empty, no control characters (a NUL would cut a
    module path short at dlopen; a newline would forge lines wherever the URI is shown)."""
    try:
        decoded = value.decode("utf-8")
    except UnicodeDecodeError:
        _refuse(f"has a {name}= that is not UTF-8 text", f"check the %-escapes in {name}=")
    if not decoded:
        _refuse(f"has an empty {name}=", f"give {name}= a value, or leave it out")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in decoded):
        _refuse(f"has a control character in {name}=", f"remove it from {name}=")
    return decoded


def _slot_id(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        _refuse(f"has a slot-id= that is not a number ({_shown(value)})", "give the decimal slot id "
                "that `softhsm2-util --show-slots` or `pkcs11-tool -L` prints")
    return int(value)


def _pin_file(value: str) -> str:
    """The absolute path of `pin-source=file:/path` (or `file:///path`)."""
    if value.startswith("file://"):
        value = value[len("file://"):]
        if not value.startswith("/"):
            _refuse("has a pin-source= on another host", "use pin-source=file:/path/to/pin-file")
    elif value.startswith("file:"):
        value = value[len("file:"):]
    else:
        _refuse("has a pin-source= that is not a file: URI", "use pin-source=file:/path/to/pin-file, "
                f"or set ${PIN_ENV}")
    if not value.startswith("/"):
        _refuse("has a pin-source= file given by a relative path", "give it as file:/absolute/path")
    return value


def _escape(value: str | bytes, safe: str) -> str:
    return quote(value, safe=safe)


def _shown(value: str) -> str:
    """A fragment of the user's URI fit to quote in a message: escaped, and short."""
    return repr(_escape(value[:40], _QUERY_SAFE + "=;&?"))


def _refuse(what: str, fix: str) -> NoReturn:
    raise VaultLocked(f"The PKCS#11 reference {what}", fix)
