"""What the PKCS#11 master-key source costs a command: `open_wrapper` + `unwrap` per process,
on a SoftHSM2 token of its own, split into the import, the open (load, C_Initialize, login,
key lookup) and the unwrap (one CKM_AES_GCM decrypt in the token).

    python benchmarks/hsm.py [--runs 15] [--module /usr/lib/softhsm/libsofthsm2.so]

`measure()` returns the rows for benchmarks/run.py's table, to sit beside the env-var source.
Needs python-pkcs11 (`pip install -e '.[pkcs11]'`) and SoftHSM2 (`apt-get install softhsm2`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "1234-bench"

# One process = one command's unwrap: timed from inside, printed as JSON.
PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from byokctl.vault.pkcs11 import open_wrapper
import pkcs11  # what open_wrapper imports lazily, counted with the import
t1 = time.perf_counter()
wrapper = open_wrapper(sys.argv[1])
t2 = time.perf_counter()
wrapper.unwrap(bytes.fromhex(sys.argv[2]), b"bench")
t3 = time.perf_counter()
wrapper.close()
print(json.dumps({"import": t1 - t0, "open": t2 - t1, "unwrap": t3 - t2}))
"""


def token(root: Path, module: str) -> tuple[dict[str, str], str, str]:
    """A SoftHSM2 token in `root` with a key: the environment, the reference and a blob."""
    (root / "tokens").mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "BYOKCTL_PKCS11_PIN": PIN}
    subprocess.run([shutil.which("softhsm2-util") or "softhsm2-util", "--init-token", "--free",
                    "--label", "bench", "--pin", PIN, "--so-pin", "5678-bench"],
                   env=env, check=True, capture_output=True)
    reference = f"pkcs11:token=bench;object=master?module-path={module}"
    make = ("import sys; from byokctl.vault.pkcs11 import open_wrapper\n"
            "w = open_wrapper(sys.argv[1], create_key=True); print(w.wrap(bytes(32), b'bench').hex())")
    blob = subprocess.run([sys.executable, "-c", make, reference], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    return env, reference, blob


def measure(runs: int = 15, module: str = DEFAULT_MODULE) -> list[dict[str, object]]:
    """Median seconds of each part, and of the whole process, over `runs` processes."""
    with tempfile.TemporaryDirectory(prefix="byokctl-hsm-bench-") as tmp:
        env, reference, blob = token(Path(tmp), module)
        parts: dict[str, list[float]] = {"import": [], "open": [], "unwrap": [], "process": []}
        for _ in range(runs):
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", PROBE, reference, blob], env=env, check=True,
                                 capture_output=True, text=True).stdout
            parts["process"].append(time.perf_counter() - start)
            for name, seconds in json.loads(out).items():
                parts[name].append(seconds)
    labels = {"import": "import python-pkcs11 + byokctl.vault.pkcs11",
              "open": "open_wrapper (load module, C_Initialize, login, find key)",
              "unwrap": "unwrap (CKM_AES_GCM decrypt in the token)",
              "process": "whole process (python -c: open + unwrap)"}
    return [{"name": labels[name], "seconds": statistics.median(samples)}
            for name, samples in parts.items()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--module", default=os.environ.get("BYOKCTL_SOFTHSM2_MODULE", DEFAULT_MODULE))
    args = parser.parse_args()
    for row in measure(args.runs, args.module):
        print(f"{row['seconds'] * 1000:9.2f} ms  {row['name']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
