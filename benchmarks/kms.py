"""Start-up with the master key in Vault transit and in a PKCS#11 HSM, side by side with
`$BYOKCTL_MASTER_KEY`: whole `byokctl key list` (needs no secret: no KMS import, no call) and
`byokctl ask` (one unwrap: a transit `decrypt` round trip, or a login and a CKM_AES_GCM decrypt
in the token) processes, against a real OpenBao dev server on loopback (tests/openbao.py;
`pip install --require-hashes -r requirements-kms.txt`), a real SoftHSM2 token
(tests/softhsm.py; Debian's `softhsm2`; left out where it is missing) and the emulator.

    python benchmarks/kms.py [--runs N]
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from common import byokctl, compile_bytecode

from byokctl.providers.emulator import Config, Emulator

KEY = "sk-ant-api03-bench-" + "k" * 40
KMS_MODULES = ("byokctl.vault.kms", "byokctl.vault.transit", "byokctl.vault.pkcs11", "httpx2", "pkcs11")
# `key list` with transit may cost at most this much more than with the env var (it makes
# no call and imports nothing more, so the difference is noise); `ask` is reported.
KEY_LIST_SLACK_MS = 15.0


@dataclass
class KmsRow:
    command: str
    env_s: float  # median with $BYOKCTL_MASTER_KEY
    kms_s: float  # median with the vault's master key wrapped by the key manager
    kms_imports: list[str]  # key-manager modules the key-manager run imported
    source: str = "transit"  # "transit" or "pkcs11"

    @property
    def extra_ms(self) -> float:
        return (self.kms_s - self.env_s) * 1000


def _run(cli: list[str], env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    r = subprocess.run([*cli, *args], env=env, input=stdin, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"byokctl {' '.join(args)} failed: {r.stderr.strip()}")


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def _kms_imports(args: list[str], env: dict[str, str]) -> list[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "byokctl", *args], env=env,
                          capture_output=True, text=True, check=True)
    names = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if "|" in line}
    return sorted(n for n in names if n in KMS_MODULES)


def _vault(cli: list[str], env: dict[str, str], emu: Emulator, *init: str) -> None:
    _run(cli, env, "init", *init)
    _run(cli, env, "org", "create", "acme", "--plan", "growth")
    _run(cli, env, "key", "add", "acme", "--provider", "anthropic", "--from-stdin", stdin=KEY)
    _run(cli, env, "org", "set-provider", "acme", "anthropic", "--model", "claude-haiku-5-5",
         "--base-url", emu.base_url("anthropic"), "--yes")


def _hsm(tmp: str, base: dict[str, str]) -> tuple[dict[str, str], str] | None:
    """A SoftHSM2 token of the benchmark's own: its environment and a key reference; None
    where SoftHSM2 or python-pkcs11 is missing."""
    from softhsm import USER_PIN, SoftHsm, SoftHsmMissing

    try:
        import pkcs11  # noqa: F401 - only to know whether the source can load

        hsm = SoftHsm(Path(tmp) / "hsm")
        hsm.init_token()
    except (ImportError, SoftHsmMissing, subprocess.CalledProcessError):
        return None
    return {**base, **hsm.env, "BYOKCTL_PKCS11_PIN": USER_PIN}, hsm.reference("bench-master")


def measure(runs: int = 9) -> list[KmsRow]:
    """Both commands on each vault, interleaved; raises RuntimeError if no `bao` can start."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from openbao import BaoServer

    compile_bytecode()
    server = BaoServer()
    emu = Emulator(Config(valid_keys={"anthropic": {KEY}})).start()
    cli = byokctl()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            base = {k: v for k, v in os.environ.items() if not k.startswith(("BYOKCTL_", "VAULT_"))}
            env_env = {**base, "BYOKCTL_HOME": f"{tmp}/env",
                       "BYOKCTL_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
            sources = {"transit": {**base, "BYOKCTL_HOME": f"{tmp}/kms", **server.env()}}
            _vault(cli, env_env, emu)
            _vault(cli, sources["transit"], emu, "--kms", f"vault-transit:{server.new_key()}")
            if (hsm := _hsm(tmp, base)) is not None:
                sources["pkcs11"] = {**hsm[0], "BYOKCTL_HOME": f"{tmp}/hsm-vault"}
                _vault(cli, sources["pkcs11"], emu, "--kms", hsm[1], "--create-key")
            rows = []
            for args in (["key", "list"], ["ask", "acme", "Name three colours", "--no-stream"]):
                argv = [*cli, *args]
                name = "byokctl " + args[0] + (" " + args[1] if args[0] == "key" else " acme")
                for env in (env_env, *sources.values()):
                    _timed(argv, env)  # warm the page cache
                times: dict[str, list[float]] = {"env": [], **{s: [] for s in sources}}
                for _ in range(runs):  # interleaved, so drift hits every source alike
                    times["env"].append(_timed(argv, env_env))
                    for source, env in sources.items():
                        times[source].append(_timed(argv, env))
                for source, env in sources.items():
                    rows.append(KmsRow(name, statistics.median(times["env"]),
                                       statistics.median(times[source]), _kms_imports(args, env), source))
    finally:
        emu.stop()
        server.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    opts = ap.parse_args()
    try:
        rows = measure(opts.runs)
    except RuntimeError as exc:
        print(f"no OpenBao server: {exc}", file=sys.stderr)
        return 1
    print(f"{'command':<18} {'source':<8} {'env var':>9} {'source':>9} {'extra':>9}  key-manager imports")
    for r in rows:
        print(f"{r.command:<18} {r.source:<8} {r.env_s * 1000:>7.0f}ms {r.kms_s * 1000:>7.0f}ms "
              f"{r.extra_ms:>+7.1f}ms  {', '.join(r.kms_imports) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
