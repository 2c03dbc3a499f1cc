"""`ask` overhead: whole-process `byokctl ask` against a bare script making the same SDK call to
the same loopback emulator, for both providers, streaming and not; and in-process, the time
byokctl's own work adds around the SDK call (resolve, decrypt, record usage, deduct credits).

    python benchmarks/ask.py [--runs N] [--check RATIO]
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

from common import compile_bytecode

from byokctl.providers.emulator import Config, Emulator

WHOLE_GOAL, INPROC_GOAL_MS = 1.15, 5.0  # byokctl / bare SDK script; ms of byokctl per call
KEYS = {"anthropic": "sk-ant-api03-bench-" + "k" * 40, "openai": "sk-proj-bench-" + "k" * 40}
MODELS = {"anthropic": "claude-haiku-5-5", "openai": "gpt-5-nano-2025-08-07"}
PROMPT = "Name three colours"

# The bare scripts read the key from the environment, like any careful script would, and end
# the way byokctl does (byokctl/process.py: gc.freeze(), then the interpreter's normal exit).
END = "import gc; gc.freeze()\n"
BARE = {
    ("anthropic", False): (
        "import os, anthropic\n"
        "c = anthropic.Anthropic(api_key=os.environ['K'], base_url=os.environ['U'], max_retries=0)\n"
        "m = c.messages.create(model=os.environ['M'], max_tokens=256,"
        " messages=[{'role': 'user', 'content': os.environ['P']}])\n"
        "print(''.join(b.text for b in m.content))\n" + END),
    ("anthropic", True): (
        "import os, sys, anthropic\n"
        "c = anthropic.Anthropic(api_key=os.environ['K'], base_url=os.environ['U'], max_retries=0)\n"
        "with c.messages.stream(model=os.environ['M'], max_tokens=256,"
        " messages=[{'role': 'user', 'content': os.environ['P']}]) as s:\n"
        "    for t in s.text_stream: sys.stdout.write(t)\n"
        "print()\n" + END),
    ("openai", False): (
        "import os, openai\n"
        "c = openai.OpenAI(api_key=os.environ['K'], base_url=os.environ['U'], max_retries=0)\n"
        "r = c.chat.completions.create(model=os.environ['M'], max_completion_tokens=256,"
        " messages=[{'role': 'user', 'content': os.environ['P']}])\n"
        "print(r.choices[0].message.content)\n" + END),
    ("openai", True): (
        "import os, sys, openai\n"
        "c = openai.OpenAI(api_key=os.environ['K'], base_url=os.environ['U'], max_retries=0)\n"
        "for ch in c.chat.completions.create(model=os.environ['M'], max_completion_tokens=256,"
        " stream=True, stream_options={'include_usage': True},"
        " messages=[{'role': 'user', 'content': os.environ['P']}]):\n"
        "    if ch.choices and ch.choices[0].delta.content: sys.stdout.write(ch.choices[0].delta.content)\n"
        "print()\n" + END),
}


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])}... failed ({r.returncode}): {r.stderr.strip()}")
    return elapsed


def byokctl(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    r = subprocess.run([sys.executable, "-m", "byokctl", *args], env=env, input=stdin,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"byokctl {' '.join(args)} failed: {r.stderr.strip()}")


def in_process_overhead(env: dict[str, str], provider: str, stream: bool, runs: int) -> float:
    """Median ms of one `ask` in a warm process, minus the adapter's own call."""
    from byokctl.providers import registry
    from byokctl.services import ask
    from byokctl.services.context import open_context

    adapter_cls = type(registry.get(provider))
    inner: list[float] = []
    original = adapter_cls.complete

    def timed_complete(self, *a, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        t0 = time.perf_counter()
        try:
            return original(self, *a, **kw)
        finally:
            inner.append(time.perf_counter() - t0)

    adapter_cls.complete = timed_complete
    old = {k: os.environ.get(k) for k in ("BYOKCTL_HOME", "BYOKCTL_MASTER_KEY")}
    os.environ.update(BYOKCTL_HOME=env["BYOKCTL_HOME"], BYOKCTL_MASTER_KEY=env["BYOKCTL_MASTER_KEY"])
    try:
        overheads = []
        for i in range(runs + 1):
            ctx = open_context(None)
            t0 = time.perf_counter()
            ask.ask(ctx, provider, ask.Request(PROMPT, max_tokens=256, stream=stream),
                    on_text=(lambda _t: None) if stream else None)
            total = time.perf_counter() - t0
            ctx.close()
            if i:  # the first run pays the imports, measured whole-process above
                overheads.append(total - inner[-1])
        return statistics.median(overheads) * 1000
    finally:
        adapter_cls.complete = original
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class AskRow:
    provider: str
    stream: bool
    bare_s: float  # median of the bare SDK script
    mine_s: float  # median of `byokctl ask`
    inproc_ms: float  # byokctl's own time around the adapter's call, in a warm process

    @property
    def ratio(self) -> float:
        return self.mine_s / self.bare_s

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "no-stream"


def measure(runs: int = 7) -> list[AskRow]:
    """Both providers, streaming and not: whole processes interleaved, then in-process."""
    compile_bytecode()
    emu = Emulator(Config(valid_keys={p: {k} for p, k in KEYS.items()})).start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "BYOKCTL_HOME": home,
                   "BYOKCTL_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
            byokctl(env, "init")
            for p in KEYS:
                byokctl(env, "org", "create", p, "--plan", "growth")
                byokctl(env, "key", "add", p, "--provider", p, "--from-stdin", stdin=KEYS[p])
                byokctl(env, "org", "set-provider", p, p, "--model", MODELS[p], "--base-url",
                        emu.base_url(p), "--yes")
            for (provider, stream), script in BARE.items():
                bare_env = {**env, "K": KEYS[provider], "U": emu.base_url(provider),
                            "M": MODELS[provider], "P": PROMPT}
                mine = [sys.executable, "-m", "byokctl", "ask", provider, PROMPT, "--max-tokens",
                        "256"]
                if not stream:
                    mine.append("--no-stream")
                bare = [sys.executable, "-c", script]
                timed(bare, bare_env), timed(mine, env)  # warm the page cache
                b, m = [], []
                for _ in range(runs):  # interleaved, so drift hits both alike
                    b.append(timed(bare, bare_env))
                    m.append(timed(mine, env))
                rows.append(AskRow(provider, stream, statistics.median(b), statistics.median(m),
                                   in_process_overhead(env, provider, stream, runs)))
    finally:
        emu.stop()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--check", type=float, metavar="RATIO",
                    help="exit 1 if any byokctl/bare median ratio is above RATIO")
    opts = ap.parse_args()
    rows = measure(opts.runs)
    print(f"{'provider':<10} {'mode':<10} {'bare SDK':>10} {'byokctl':>10} {'ratio':>7} "
          f"{'in-process':>11}")
    for r in rows:
        print(f"{r.provider:<10} {r.mode:<10} {r.bare_s * 1000:>8.0f}ms {r.mine_s * 1000:>8.0f}ms "
              f"{r.ratio:>6.2f}x {r.inproc_ms:>9.1f}ms")
    print(f"goals: whole-process <= {WHOLE_GOAL}x the bare SDK script; "
          f"in-process <= {INPROC_GOAL_MS:g} ms")
    worst = max(r.ratio for r in rows)
    if opts.check and worst > opts.check:
        print(f"FAIL: worst ratio {worst:.2f}x is above {opts.check:.2f}x", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
