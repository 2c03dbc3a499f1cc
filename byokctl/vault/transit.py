"""HashiCorp Vault / OpenBao transit as a master-key source (`vault-transit:MOUNT/KEY`).

The HTTP client is `httpx2`, the one the anthropic and openai SDKs already install (hvac
would add itself and `requests`): four endpoints of transit's JSON API are all byokctl
needs. Address, token, namespace and CA follow Vault's own conventions: `$VAULT_ADDR`
(default https://127.0.0.1:8200), `$VAULT_TOKEN` (else `~/.vault-token`, as the vault CLI
does), `$VAULT_NAMESPACE`, `$VAULT_CACERT`, `$VAULT_CLIENT_TIMEOUT`; none is ever stored in
the vault, and the token is never printed.

The master key is wrapped with `encrypt` on an `aes256-gcm96` key, its associated data passed
as transit's `associated_data` (authenticated by GCM; `context` is for derived keys, which
byokctl does not need). Every failure is `VaultLocked` naming the fix.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from byokctl.errors import UsageError, VaultLocked

PREFIX = "vault-transit:"
DEFAULT_MOUNT = "transit"
DEFAULT_ADDR = "https://127.0.0.1:8200"
AEAD_TYPES = ("aes256-gcm96", "aes128-gcm96", "chacha20-poly1305")
_SEGMENT = re.compile(r"(?!\.+$)[A-Za-z0-9_.-]+")  # a name; never "." or ".." (a URL path)


def parse(reference: str) -> tuple[str, str]:
    """(mount, key) of `vault-transit:KEY` or `vault-transit:MOUNT/KEY`; UsageError if malformed."""
    body = reference[len(PREFIX):] if reference.startswith(PREFIX) else ""
    mount, _, key = body.strip("/").rpartition("/")
    mount = mount or DEFAULT_MOUNT
    if not key or not all(_SEGMENT.fullmatch(s) for s in [*mount.split("/"), key]):
        raise UsageError(f"{reference!r} is not a transit key reference", "write it as "
                         "vault-transit:KEYNAME or vault-transit:MOUNT/KEYNAME")
    return mount, key


def canonical(reference: str) -> str:
    """The stored spelling: the mount path always written out (`vault-transit:transit/KEY`)."""
    mount, key = parse(reference)
    return f"{PREFIX}{mount}/{key}"


def _token() -> str:
    token = os.environ.get("VAULT_TOKEN", "").strip()
    if not token:
        path = Path.home() / ".vault-token"
        try:
            token = path.read_text().strip()
        except OSError:
            token = ""
    if not token:
        raise VaultLocked("No Vault token was given (neither $VAULT_TOKEN nor ~/.vault-token)",
                          "log in with `vault login` (or `bao login`) or set $VAULT_TOKEN")
    return token


class TransitWrapper:
    """One transit key, reached over HTTP with the caller's token."""

    def __init__(self, reference: str, create_key: bool = False) -> None:
        try:
            import httpx2
        except ImportError:
            raise VaultLocked("Vault transit support needs httpx2, which is not installed",
                              "install it with `pip install 'byokctl[vault]'`") from None

        self.create_key, self._checked = create_key, False

        self.mount, self.key = parse(reference)
        self.reference = f"{PREFIX}{self.mount}/{self.key}"
        self.addr = (os.environ.get("VAULT_ADDR") or DEFAULT_ADDR).rstrip("/")
        self.shown = re.sub(r"//[^/@]*@", "//", self.addr)  # for messages: no user:password@
        headers = {"X-Vault-Token": _token(), "X-Vault-Request": "true"}
        if namespace := os.environ.get("VAULT_NAMESPACE"):
            headers["X-Vault-Namespace"] = namespace
        # Plain http (a dev server on loopback) has no certificate to verify: building the
        # default TLS context there would only load the CA bundle for nothing (tens of ms).
        verify: object = not self.addr.lower().startswith("http://")
        if (cacert := os.environ.get("VAULT_CACERT")) and verify:
            import ssl

            try:
                verify = ssl.create_default_context(cafile=cacert)
            except (OSError, ssl.SSLError) as exc:
                raise VaultLocked(f"$VAULT_CACERT ({cacert}) could not be read ({exc.__class__.__name__})",
                                  "point it at the PEM file of Vault's CA") from None
        try:
            timeout = float(os.environ.get("VAULT_CLIENT_TIMEOUT") or 10)
        except ValueError:
            timeout = 10.0
        try:
            self._http = httpx2.Client(base_url=self.addr, headers=headers, verify=verify,
                                       timeout=timeout, trust_env=False)
        except ValueError as exc:  # a malformed address
            raise VaultLocked(f"$VAULT_ADDR ({self.shown}) is not a usable address ({exc})",
                              "set it to Vault's URL, e.g. https://vault.example.com:8200") from None

    def describe(self) -> str:
        """`Vault transit key transit/NAME at ADDR` (and the namespace), no token."""
        where = f"Vault transit key {self.mount}/{self.key} at {self.shown}"
        if namespace := os.environ.get("VAULT_NAMESPACE"):
            where += f" (namespace {namespace})"
        return where

    def close(self) -> None:
        self._http.close()

    # -- the key ---------------------------------------------------------------------------
    def ensure_key(self, create: bool) -> None:
        """Check the key exists and can take associated data; create it if `create`."""
        found = self._call("GET", f"keys/{self.key}", None, missing_ok=True)
        if found is None:
            if not create:
                raise VaultLocked(
                    f"The transit key {self.mount}/{self.key} does not exist at {self.shown}",
                    f"create it (`bao write -f {self.mount}/keys/{self.key}`) or pass --create-key")
            self._call("POST", f"keys/{self.key}", {"type": "aes256-gcm96"})
            self._checked = True
            return
        kind = (found.get("data") or {}).get("type")
        if kind not in AEAD_TYPES:
            raise VaultLocked(
                f"The transit key {self.mount}/{self.key} is of type {kind}, which cannot bind "
                "the master key to its vault", f"use a key of type {' or '.join(AEAD_TYPES)}")
        self._checked = True

    # -- wrapping --------------------------------------------------------------------------
    def wrap(self, plaintext: bytes, aad: bytes) -> bytes:
        """transit `encrypt`: returns the `vault:vN:...` ciphertext as bytes. The key is
        checked first (transit's encrypt would otherwise create a missing key silently)."""
        if not self._checked:
            self.ensure_key(create=self.create_key)
        body = {"plaintext": _b64(plaintext), "associated_data": _b64(aad)}
        data = self._call("POST", f"encrypt/{self.key}", body)
        return str(data["data"]["ciphertext"]).encode()

    def unwrap(self, blob: bytes, aad: bytes) -> bytes:
        """transit `decrypt`: the key `wrap` wrapped, bound to the same `aad`."""
        body = {"ciphertext": blob.decode("ascii", "replace"), "associated_data": _b64(aad)}
        data = self._call("POST", f"decrypt/{self.key}", body)
        try:
            return base64.b64decode(data["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise VaultLocked(f"Vault's answer from {self.reference} holds no key",
                              "check that VAULT_ADDR points at Vault") from None

    def rewrap(self, blob: bytes, aad: bytes) -> bytes:
        """The same master key wrapped under the transit key's newest version.

        Not transit's `rewrap` endpoint: it takes no `associated_data` (OpenBao 2.7's passes
        none to the decryption), so it cannot open a blob bound to its vault. A `decrypt` and
        an `encrypt` instead: the master key is in this process for that instant, as on every
        unlock, and never anywhere else; no data key and no secret is re-encrypted."""
        return self.wrap(self.unwrap(blob, aad), aad)

    # -- HTTP ------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict | None, missing_ok: bool = False) -> dict | None:
        import httpx2

        url = f"/v1/{self.mount}/{path}"
        try:
            response = self._http.request(method, url, json=body)
        except httpx2.TimeoutException:
            raise VaultLocked(f"Vault at {self.shown} did not answer in time",
                              "check that it is up, or raise $VAULT_CLIENT_TIMEOUT") from None
        except httpx2.HTTPError as exc:
            raise VaultLocked(f"Vault at {self.shown} could not be reached ({type(exc).__name__})",
                              "check $VAULT_ADDR and that Vault is running") from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.is_success:
            try:
                return response.json() if response.content else {}
            except ValueError:
                raise VaultLocked(f"{self.shown} did not answer as Vault does",
                                  "check that $VAULT_ADDR points at Vault") from None
        raise self._failure(response.status_code, _errors(response), path)

    def _failure(self, status: int, errors: str, path: str) -> VaultLocked:
        key = f"{self.mount}/{self.key}"
        action = {"keys": "read"}.get(path.partition("/")[0], path.partition("/")[0])
        if status == 503 and "sealed" in errors:
            return VaultLocked(f"Vault at {self.shown} is sealed", "unseal it (`bao operator unseal`), "
                               "or ask its operator to")
        if status in (401, 403) and ("invalid token" in errors or not self._token_alive()):
            return VaultLocked(f"Vault at {self.shown} refused the token: it is invalid or expired",
                               "log in again (`bao login`) and set $VAULT_TOKEN")
        if status in (401, 403):
            return VaultLocked(f"The Vault token may not {action} with the transit key {key}",
                               f"grant it a policy with `update` on {self.mount}/decrypt/{self.key} "
                               f"(and for init and rotate-master `update` on {self.mount}/encrypt/"
                               f"{self.key} and `read` on {self.mount}/keys/{self.key})")
        if "not found" in errors or status == 404:
            return VaultLocked(f"The transit key {key} does not exist at {self.shown}",
                               "restore the key in Vault, or point $VAULT_ADDR/$VAULT_NAMESPACE at "
                               "the Vault that holds it")
        if "authentication failed" in errors or "invalid ciphertext" in errors:
            return VaultLocked(f"The transit key {key} does not open this vault's wrapped master key "
                               "(it was wrapped for another vault or key)",
                               "restore the vault's own file, or the transit key it was created with")
        return VaultLocked(f"Vault at {self.shown} refused the request ({status}: {errors[:200]})",
                           "see Vault's log, and check $VAULT_ADDR and the token's policy")


    def _token_alive(self) -> bool:
        """Whether Vault still knows the token (`lookup-self`, which every live token may
        call): a 403 from a dead one means log in again, from a live one a missing policy."""
        import httpx2

        try:
            return self._http.get("/v1/auth/token/lookup-self").is_success
        except httpx2.HTTPError:
            return True  # cannot tell: name the policy, the likelier fix


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _errors(response: object) -> str:
    """Vault's `errors` list as one lower-case line ('' if the body is not Vault's JSON)."""
    try:
        errors = response.json().get("errors") or []  # type: ignore[attr-defined]
    except (ValueError, AttributeError):
        return ""
    return "; ".join(str(e) for e in errors).replace("\n", " ").lower()


def open_wrapper(reference: str, *, create_key: bool = False) -> TransitWrapper:
    """The wrapper for a `vault-transit:` reference; nothing is called until a wrap or unwrap.
    Its first wrap checks the key exists, and creates it when absent if `create_key`
    (init's --create-key)."""
    return TransitWrapper(reference, create_key)
