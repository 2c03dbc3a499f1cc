"""A throwaway SoftHSM2 token for the tests of the PKCS#11 master-key source.

Each `SoftHsm` has its own `softhsm2.conf` and token directory in a temp dir (so no test sees
the machine's tokens), and initialises tokens with `softhsm2-util` from Debian's `softhsm2`
package. A process sees the tokens that existed when it first loaded the module (SoftHSM2
reads them once), so tokens are made first and tests tell their keys apart by label. The
module is found in the usual places, or named by `$BYOKCTL_SOFTHSM2_MODULE` elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

MODULE_ENV = "BYOKCTL_SOFTHSM2_MODULE"
CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora, RHEL
    "/usr/local/lib/softhsm/libsofthsm2.so",  # built from source
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",  # macOS
)
USER_PIN = "4321-user"
SO_PIN = "8765-officer"
TOKEN = "byokctl-test"


class SoftHsmMissing(RuntimeError):
    """SoftHSM2 (its module or softhsm2-util) is not installed here."""


def find_module() -> str:
    """The SoftHSM2 PKCS#11 module: `$BYOKCTL_SOFTHSM2_MODULE`, else the first usual path."""
    named = os.environ.get(MODULE_ENV)
    if named:
        if not os.path.isfile(named):
            raise SoftHsmMissing(f"${MODULE_ENV} names {named}, which is not a file")
        return named
    for path in CANDIDATES:
        if os.path.isfile(path):
            return path
    raise SoftHsmMissing("no libsofthsm2.so in the usual places: install Debian's `softhsm2` "
                         f"package (.ci/run does), or name the module in ${MODULE_ENV}")


class SoftHsm:
    """SoftHSM2 confined to `root`: its config in `conf`, its tokens in `root/tokens`."""

    def __init__(self, root: Path) -> None:
        self.module = find_module()
        self.util = shutil.which("softhsm2-util")
        if self.util is None:
            raise SoftHsmMissing("softhsm2-util is not on PATH: install Debian's `softhsm2` package")
        self.root = root
        (root / "tokens").mkdir(parents=True, mode=0o700)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                             "log.level = ERROR\nslots.removable = false\n")

    @property
    def env(self) -> dict[str, str]:
        """What a process needs in its environment to see these tokens (and only these)."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    def init_token(self, label: str = TOKEN, pin: str = USER_PIN, so_pin: str = SO_PIN) -> None:
        """A new token on the first free slot, with a user PIN and an SO PIN."""
        subprocess.run([self.util, "--init-token", "--free", "--label", label, "--pin", pin,
                        "--so-pin", so_pin], env={**os.environ, **self.env}, check=True,
                       capture_output=True, timeout=30)

    def delete_token(self, label: str = TOKEN) -> None:
        """Remove a token and everything on it (the HSM unplugged, or wiped)."""
        subprocess.run([self.util, "--delete-token", "--token", label], env={**os.environ, **self.env},
                       check=True, capture_output=True, timeout=30)

    def for_test(self, prefix: str) -> SoftHsm:
        """The same SoftHSM2, naming its keys with `prefix` first (one prefix per test)."""
        view = object.__new__(SoftHsm)
        view.__dict__.update(self.__dict__, prefix=prefix)
        return view

    prefix = ""

    def label(self, obj: str = "byokctl-master") -> str:
        """The label key `obj` has on the token (the test's prefix, then `obj`)."""
        return self.prefix + obj

    def set_token_flags(self, add: int) -> None:
        """Set CK_TOKEN_INFO flags in the token's file, as SoftHSM2 stores them (before any process
        loads the token): its CKA_OS_TOKENFLAGS attribute (CKA_VENDOR_DEFINED + 0x5348 + 3), a
        big-endian type, kind and CK_ULONG value of 8 bytes each. How a test gets a token into a
        state SoftHSM2 itself never enters, such as CKF_USER_PIN_LOCKED."""
        [path] = (self.root / "tokens").glob("*/token.object")
        data = bytearray(path.read_bytes())
        at = data.find((0x80000000 + 0x5348 + 3).to_bytes(8, "big"))
        assert at >= 0, f"no CKA_OS_TOKENFLAGS in {path}: another SoftHSM2 file format"
        value = int.from_bytes(data[at + 16:at + 24], "big") | add
        data[at + 16:at + 24] = value.to_bytes(8, "big")
        path.write_bytes(bytes(data))

    def reference(self, obj: str = "byokctl-master", token: str = TOKEN, *, module: str | None = None,
                  extra: str = "", query: str = "") -> str:
        """An RFC 7512 URI for the test's key `obj` on `token` through this module."""
        path = f"token={quote(token, safe='')};object={quote(self.label(obj), safe='')}{extra}"
        return f"pkcs11:{path}?module-path={module or self.module}{query}"
