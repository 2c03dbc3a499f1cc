"""Start-up with the master key in Vault transit, side by side with `$BYOKCTL_MASTER_KEY`:
whole `byokctl key list` (needs no secret: no KMS import, no call) and `byokctl ask` (one
transit `decrypt` round trip) processes, against a real OpenBao dev server on loopback
(tests/openbao.py; `pip install --require-hashes -r requirements-kms.txt`) and the emulator.

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
KMS_MODULES = ("byokctl.vault.kms", "byokctl.vault.transit", "byokctl.vault.pkcs11", "httpx2")
# `key list` with transit may cost at most this much more than with the env var (it makes
# no call and imports nothing more, so the difference is noise); `ask` is reported.
KEY_LIST_SLACK_MS = 15.0


@dataclass
class KmsRow:
    command: str
    env_s: float  # median with $BYOKCTL_MASTER_KEY
    kms_s: float  # median with the vault's master key wrapped by transit
    kms_imports: list[str]  # key-manager modules the transit run imported

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


def measure(runs: int = 9) -> list[KmsRow]:
    """Both commands on both vaults, interleaved; raises RuntimeError if no `bao` can start."""
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
            kms_env = {**base, "BYOKCTL_HOME": f"{tmp}/kms", **server.env()}
            _vault(cli, env_env, emu)
            _vault(cli, kms_env, emu, "--kms", f"vault-transit:{server.new_key()}")
            rows = []
            for args in (["key", "list"], ["ask", "acme", "Name three colours", "--no-stream"]):
                argv = [*cli, *args]
                _timed(argv, env_env), _timed(argv, kms_env)  # warm the page cache
                e, k = [], []
                for _ in range(runs):  # interleaved, so drift hits both alike
                    e.append(_timed(argv, env_env))
                    k.append(_timed(argv, kms_env))
                rows.append(KmsRow("byokctl " + args[0] + (" " + args[1] if args[0] == "key" else " acme"),
                                   statistics.median(e), statistics.median(k), _kms_imports(args, kms_env)))
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
    print(f"{'command':<18} {'env var':>9} {'transit':>9} {'extra':>9}  key-manager imports")
    for r in rows:
        print(f"{r.command:<18} {r.env_s * 1000:>7.0f}ms {r.kms_s * 1000:>7.0f}ms "
              f"{r.extra_ms:>+7.1f}ms  {', '.join(r.kms_imports) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
