"""Crash safety: `vault rekey`, `key rotate`, `apply` and the credit deduction of `ask` are
killed with SIGKILL at random moments, dozens of times each. After every kill every secret
is still readable (`vault check` exits 0) and nothing is half-written; running the command
again reaches the intended end state.

The commands run in processes forked from a server that has already imported byokctl, so a
kill costs milliseconds instead of an interpreter start and the random delays (fixed seed
per test) fall inside the command's own work. Each forked child runs the real CLI entry
point with the real arguments, opens its own SQLite connection, and dies without running
any cleanup, exactly as `kill -9 $(pgrep byokctl)` would leave it.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import OPENAI_TEST_KEY, REPO, connect, master_key_b64, run, vault_db

from byokctl.services.context import open_context

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` leaves it out

KILLS = 30  # landed kills per operation (the delays are drawn until this many hit a live process)

FORKSERVER = textwrap.dedent("""
    import gc, json, os, sys
    # What the commands under test import, so a forked child starts at the command itself.
    import byokctl.cli.vault, byokctl.cli.key, byokctl.cli.apply, byokctl.cli.ask
    import byokctl.cli.credits, byokctl.vault.crypto, byokctl.vault.envelope, byokctl.services.vaultkeys
    import byokctl.providers.openai, openai
    from byokctl.cli import app
    proto = os.fdopen(os.dup(1), "w")
    saved = {fd: os.dup(fd) for fd in (0, 1, 2)}

    def redirect(req):
        for fd, name, mode in ((0, os.devnull, os.O_RDONLY),
                               (1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                               (2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            f = os.open(name, mode, 0o600)
            os.dup2(f, fd)
            os.close(f)

    def setenv(env):
        for name in [k for k in os.environ if k.startswith("BYOKCTL_")]:
            del os.environ[name]
        os.environ.update(env)

    for line in sys.stdin:
        req = json.loads(line)
        if req.get("inline"):  # run here, once, so the lazy imports of its path are done
            env = dict(os.environ)
            setenv(req["env"])
            redirect(req)
            code = app(args=req["args"], standalone_mode=False)
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
            os.environ.clear()
            os.environ.update(env)
            gc.collect()
            gc.freeze()
            proto.write(f"{code if isinstance(code, int) else 0}\\n")
            proto.flush()
            continue
        pid = os.fork()
        if pid == 0:
            setenv(req["env"])
            redirect(req)
            code = 1
            try:
                code = app(args=req["args"], standalone_mode=False)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code if isinstance(code, int) else 0)
        proto.write(f"{pid}\\n")
        proto.flush()
        sys.stdin.readline()  # the child stays unreaped (so its pid stays ours) until told
        _, status = os.waitpid(pid, 0)
        proto.write(f"{os.waitstatus_to_exitcode(status)}\\n")
        proto.flush()
""")


class ForkServer:
    """Runs byokctl commands in forked children; `kill_after` SIGKILLs one after a delay."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.proc = subprocess.Popen([sys.executable, "-c", FORKSERVER], cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _spawn(self, args: list[str], env: dict[str, str] | None, inline: bool = False) -> int:
        full = {k: v for k, v in os.environ.items() if k.startswith("BYOKCTL_")} | (env or {})
        req = {"args": args, "env": full, "out": str(self.scratch / "out"),
               "err": str(self.scratch / "err"), "inline": inline}
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the fork server died"
        return int(line)

    def _reap(self) -> int:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write("reap\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def warm(self, *args: str, env: dict[str, str] | None = None) -> None:
        """Run the command once inside the server itself (not forked): the modules its path
        imports lazily are then loaded in every later child, as in a long-lived process."""
        code = self._spawn(list(args), env, inline=True)
        assert code == 0, (self.scratch / "err").read_text()

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
        """Run to completion: (exit code, stdout, stderr, seconds)."""
        started = time.monotonic()
        self._spawn(list(args), env)
        code = self._reap()
        took = time.monotonic() - started
        return (code, (self.scratch / "out").read_text(), (self.scratch / "err").read_text(),
                took)

    def kill_after(self, delay: float, *args: str, env: dict[str, str] | None = None,
                   since: Callable[[], bool] | None = None) -> bool:
        """Start the command, SIGKILL it `delay` seconds later (counted from the moment
        `since()` turns true, if given); True if it was still running."""
        pid = self._spawn(list(args), env)
        if since is not None:
            wait_for(since)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)  # unreaped, so this pid cannot belong to anyone else yet
        code = self._reap()
        assert code in (-signal.SIGKILL, 0), (self.scratch / "err").read_text()
        return code == -signal.SIGKILL

    def time_after(self, since: Callable[[], bool], *args: str,
                   env: dict[str, str] | None = None) -> float:
        """Run to completion; the seconds from the moment `since()` turned true to the end."""
        self._spawn(list(args), env)
        wait_for(since)
        marked = time.monotonic()
        code = self._reap()
        assert code == 0, (self.scratch / "err").read_text()
        return time.monotonic() - marked

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def forks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ForkServer]:
    server = ForkServer(tmp_path_factory.mktemp("forks"))
    yield server
    server.close()


def duration(forks: ForkServer, args: tuple[str, ...], env: dict[str, str] | None = None,
             runs: int = 5) -> float:
    """The command's shortest wall time in `runs` runs to completion (each must succeed): a
    delay below it finds the command still running."""
    forks.warm(*args, env=env)
    times = []
    for _ in range(runs):
        code, _out, err, took = forks.run(*args, env=env)
        assert code == 0, err
        times.append(took)
    return min(times)


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the command never got there"
        time.sleep(0.0005)


class Timing:
    """Random kill delays: half uniform over the command's whole run (`window`); half over the
    part where it does its work: after `since()` turns true, uniform over `tail` seconds, or
    without `since` over the window's last quarter (where the commands commit). A command
    that finished before its kill shrinks both (they were measured on a busier machine)."""

    def __init__(self, window: float, since: Callable[[], bool] | None = None,
                 tail: float = 0.0) -> None:
        self.window, self.since, self.tail = window, since, tail

    def draw(self, rng: random.Random) -> tuple[float, Callable[[], bool] | None]:
        """(delay, the moment it counts from: None for the start of the command)."""
        if rng.random() < 0.5:
            return rng.uniform(0, self.window), None
        if self.since is not None:
            return rng.uniform(0, self.tail), self.since
        return rng.uniform(0.75, 1) * self.window, None

    def missed(self) -> None:
        self.window *= 0.9
        self.tail *= 0.9


def work_after(forks: ForkServer, since: Callable[[], bool], args: tuple[str, ...],
               reset: Callable[[], None], runs: int = 5) -> float:
    """The shortest time, in `runs` runs to completion, from `since()` turning true to the end."""
    times = []
    for _ in range(runs):
        reset()
        times.append(forks.time_after(since, *args))
    return min(times)


def kill_repeatedly(forks: ForkServer, rng: random.Random, timing: Timing, args_for,
                    after_kill, rerun) -> int:
    """Kill `args_for(i)` at random delays (drawn by `timing`) until KILLS kills have landed
    in a running command; after each, call `after_kill(i)` (checks the state it left), then
    `rerun(i)` (the command again, to completion). Returns the attempts."""
    landed = attempts = 0
    while landed < KILLS:
        attempts += 1
        assert attempts <= 4 * KILLS, f"only {landed} of {attempts} kills landed mid-command"
        args, env = args_for(attempts)
        delay, since = timing.draw(rng)
        if forks.kill_after(delay, *args, env=env, since=since):
            landed += 1
            after_kill(attempts)
            rerun(attempts)
        else:
            timing.missed()
    return attempts


# ---- helpers over the vault file -----------------------------------------------------------------

def secrets_now() -> dict[str, tuple[str, int]]:
    """Every stored key as (secret, version), decrypted by a fresh unlock as a new process
    would; a ciphertext that fails its AES-GCM check (garbage, or a version that does not
    match the one bound in its associated data) raises Integrity and fails the test."""
    ctx = open_context(None)
    try:
        vault = ctx.vault()
        return {r["id"]: (vault.open(r), r["version"]) for r in ctx.store.all("SELECT * FROM keys")}
    finally:
        ctx.close()


def rows(sql: str, params: tuple = ()) -> list[tuple]:
    conn = connect(vault_db())
    try:
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def vault_is_clean() -> dict:
    r = run("vault", "check", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["problems"] == []
    return doc


def audit_ok() -> None:
    r = run("audit", "verify", "--json")
    assert r.exit_code == 0, r.output
    seqs = [s for (s,) in rows("SELECT seq FROM audit ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))


def new_secret(provider: str = "anthropic") -> str:
    return ("sk-ant-api03-" if provider == "anthropic" else "sk-proj-") + secrets.token_urlsafe(24)


def apply_orgs(n: int, round_: int, env: dict[str, str], *, new_org: str | None = None) -> str:
    """A provisioning file for n orgs; each round renames them, flips plan and roles and
    rotates their keys (fresh secrets go into `env`)."""
    out = []
    slugs = [f"org{i:03d}" for i in range(n)] + ([new_org] if new_org else [])
    for j, slug in enumerate(slugs):
        var_a, var_o = f"K_{slug}_A".upper().replace("-", "_"), f"K_{slug}_O".upper().replace("-", "_")
        env[var_a], env[var_o] = new_secret("anthropic"), new_secret("openai")
        role = ("admin", "staffing")[(round_ + j) % 2]
        out.append(textwrap.dedent(f"""
            [orgs.{slug}]
            name = "Org {j} round {round_}"
            plan = "{('growth', 'scale')[round_ % 2]}"
            credits = 100
            [orgs.{slug}.members]
            "a@{slug}.example" = "{role}"
            "b@{slug}.example" = "interviewer"
            [[orgs.{slug}.keys]]
            provider = "anthropic"
            from_env = "{var_a}"
            [[orgs.{slug}.keys]]
            provider = "openai"
            member = "b@{slug}.example"
            from_env = "{var_o}"
        """))
    return "".join(out)


@pytest.fixture
def env_vault(monkeypatch: pytest.MonkeyPatch) -> Path:
    """A vault whose master key is in $BYOKCTL_MASTER_KEY (so forked children share it)."""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    r = run("init")
    assert r.exit_code == 0, r.output
    return vault_db()


def report(op: str, attempts: int, outcomes: Counter) -> None:
    print(f"\n{op}: {KILLS} SIGKILLs landed in {attempts} attempts; state at kill: "
          f"{dict(outcomes)}")


# ---- vault rekey ---------------------------------------------------------------------------------

REKEY_ORGS = 500  # x2 keys: 1,000 secrets (5 batches of 200)


def test_rekey_survives_sigkill_at_random_points(env_vault: Path, forks: ForkServer,
                                                 tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env: dict[str, str] = {}
    lines = []
    for i in range(REKEY_ORGS):
        env[f"K{i}A"], env[f"K{i}O"] = new_secret("anthropic"), new_secret("openai")
        lines.append(f'[orgs.o{i}]\n[[orgs.o{i}.keys]]\nprovider = "anthropic"\nfrom_env = "K{i}A"\n'
                     f'[[orgs.o{i}.keys]]\nprovider = "openai"\nfrom_env = "K{i}O"\n')
    (tmp_path / "keys.toml").write_text("\n".join(lines))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = run("apply", str(tmp_path / "keys.toml"))
    assert r.exit_code == 0, r.output
    expected = {k: s for k, (s, _) in secrets_now().items()}
    assert len(expected) == 2 * REKEY_ORGS

    def secrets_keys() -> list[tuple[int, str]]:
        return rows("SELECT id, state FROM data_keys WHERE purpose = 'secrets' ORDER BY id")

    window = duration(forks, ("vault", "rekey"))
    active_before: list[int] = []
    probe = connect(env_vault)

    def started() -> bool:  # the rekey made its new data key (or is already done)
        ids = [i for (i,) in probe.execute(
            "SELECT id FROM data_keys WHERE purpose = 'secrets' ORDER BY id")]
        return ids != active_before

    def before() -> None:
        active_before[:] = [i for i, s in secrets_keys() if s == "active"]

    work = work_after(forks, started, ("vault", "rekey"), before)
    outcomes: Counter = Counter()

    def args_for(_i: int) -> tuple[tuple[str, ...], None]:
        before()
        return ("vault", "rekey", "--json"), None

    def after_kill(_i: int) -> None:
        dks = secrets_keys()
        nxt = [i for i, s in dks if s == "next"]
        if nxt:
            moved = rows("SELECT count(*) FROM keys WHERE data_key_id = ?", (nxt[0],))[0][0]
            outcomes["mid-way" if moved else "new key made, no row moved yet"] += 1
        else:
            outcomes["finished" if [i for i, _ in dks] != active_before else "not started"] += 1
        assert {k: s for k, (s, _) in secrets_now().items()} == expected
        vault_is_clean()

    def rerun(_i: int) -> None:
        code, out, err, _ = forks.run("vault", "rekey", "--json")
        assert code == 0, err
        dks = secrets_keys()
        assert [s for _, s in dks] == ["active"]  # one data key for secrets, nothing pending
        assert json.loads(out)["data_key_id"] == dks[0][0]
        assert rows("SELECT DISTINCT data_key_id FROM keys") == [(dks[0][0],)]

    # half the kills fall after the new data key was made, while the rows move to it
    attempts = kill_repeatedly(forks, random.Random(1001), Timing(window, started, work),
                               args_for, after_kill, rerun)
    probe.close()
    report("vault rekey", attempts, outcomes)
    inside = outcomes["mid-way"] + outcomes["new key made, no row moved yet"]
    assert inside >= KILLS // 3 and outcomes["mid-way"] >= 1, outcomes  # kills landed mid-rekey
    assert {k: s for k, (s, _) in secrets_now().items()} == expected
    vault_is_clean()
    audit_ok()


# ---- key rotate ----------------------------------------------------------------------------------

def test_key_rotate_survives_sigkill_at_random_points(env_vault: Path, forks: ForkServer) -> None:
    assert run("org", "create", "acme", "--plan", "growth").exit_code == 0
    assert run("member", "add", "acme", "sam@acme.com", "--role", "admin").exit_code == 0
    r = run("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=new_secret() + "\n")
    assert r.exit_code == 0, r.output
    key_id = json.loads(r.stdout)["id"]
    bystander = run("key", "add", "acme", "--provider", "openai", "--member", "sam@acme.com",
                    "--from-stdin", "--json", input=(other := new_secret("openai")) + "\n")
    assert bystander.exit_code == 0, bystander.output
    bystander_id = json.loads(bystander.stdout)["id"]

    rotate = ("key", "rotate", key_id, "--from-env", "NEW_SECRET", "--no-test", "--json")
    window = duration(forks, rotate, env={"NEW_SECRET": new_secret()})
    outcomes: Counter = Counter()
    state: dict = {}

    def args_for(_i: int) -> tuple[tuple[str, ...], dict[str, str]]:
        state["old"] = secrets_now()[key_id]
        state["new"] = new_secret()
        return rotate, {"NEW_SECRET": state["new"]}

    def after_kill(_i: int) -> None:
        old_secret, old_version = state["old"]
        now = secrets_now()
        assert now[bystander_id] == (other, 1)
        secret, version = now[key_id]  # decrypts: the version matches its associated data
        if secret == old_secret:
            assert version == old_version
            outcomes["old secret kept"] += 1
        else:
            assert (secret, version) == (state["new"], old_version + 1)
            outcomes["new secret committed"] += 1
        assert rows("SELECT hint FROM keys WHERE id = ?", (key_id,)) == [("…" + secret[-4:],)]
        logged = sum(json.loads(after).get("version") == old_version + 1 for (after,) in rows(
            "SELECT after FROM audit WHERE action = 'key.rotate' AND target = ?", (key_id,)))
        assert logged == (version == old_version + 1)  # audited iff committed, in one transaction
        vault_is_clean()  # also: the fingerprint matches the secret

    def rerun(_i: int) -> None:
        code, out, err, _ = forks.run(*rotate, env={"NEW_SECRET": state["new"]})
        assert code == 0, err
        secret, version = secrets_now()[key_id]
        assert secret == state["new"]
        assert version == json.loads(out)["version"] in (state["old"][1] + 1, state["old"][1] + 2)

    attempts = kill_repeatedly(forks, random.Random(2002), Timing(window), args_for, after_kill, rerun)
    report("key rotate", attempts, outcomes)
    assert outcomes["old secret kept"] >= 1, outcomes  # kills landed before the commit
    vault_is_clean()
    audit_ok()


# ---- apply ---------------------------------------------------------------------------------------

APPLY_ORGS = 40


def snapshot() -> tuple:
    """Everything `apply` converges, plus the audit log's length (its entries are the changes)."""
    return (
        rows("SELECT slug, name, plan, credits, provider FROM orgs ORDER BY slug"),
        rows("SELECT org, email, role FROM members ORDER BY org, email"),
        rows("SELECT id, scope, org, member, provider, version, fingerprint FROM keys ORDER BY id"),
        rows("SELECT count(*), max(seq) FROM audit"),
    )


def test_apply_survives_sigkill_at_random_points(env_vault: Path, forks: ForkServer,
                                                 tmp_path: Path) -> None:
    env: dict[str, str] = {}
    path = tmp_path / "orgs.toml"
    path.write_text(apply_orgs(APPLY_ORGS, 0, env))
    forks.warm("apply", str(path), env=env)
    # calibrate on rounds that change everything, as the killed ones will
    times = []
    for round_ in range(1, 6):
        path.write_text(apply_orgs(APPLY_ORGS, round_, env))
        code, _out, err, took = forks.run("apply", str(path), env=env)
        assert code == 0, err
        times.append(took)
    window = min(times)
    outcomes: Counter = Counter()
    state: dict = {}

    def args_for(i: int) -> tuple[tuple[str, ...], dict[str, str]]:
        state["env"] = {}
        path.write_text(apply_orgs(APPLY_ORGS, 5 + i, state["env"], new_org=f"new{i}"))
        state["before"] = snapshot()
        return ("apply", str(path)), state["env"]

    def after_kill(_i: int) -> None:
        state["killed"] = snapshot()
        vault_is_clean()

    def rerun(i: int) -> None:
        code, _out, err, _ = forks.run("apply", str(path), env=state["env"])
        assert code == 0, err
        after = snapshot()
        # all or nothing: the kill left the state as it was before the run or after it
        if state["killed"] == state["before"]:
            outcomes["nothing applied"] += 1
        else:
            assert state["killed"] == after, "a killed apply left part of its changes"
            outcomes["all applied"] += 1
        # converged on the file: names, plans, roles and every key's secret
        orgs, members, key_rows, _ = after
        names = {slug: (name, plan) for slug, name, plan, _c, _p in orgs}
        assert names[f"new{i}"] == (f"Org {APPLY_ORGS} round {5 + i}", ("growth", "scale")[(5 + i) % 2])
        assert names["org000"] == (f"Org 0 round {5 + i}", ("growth", "scale")[(5 + i) % 2])
        assert ("org001", "a@org001.example", ("admin", "staffing")[(5 + i + 1) % 2]) in members
        held = {s for s, _ in secrets_now().values()}
        assert set(state["env"].values()) <= held
        assert len(key_rows) == 2 * (APPLY_ORGS + i)
        again = run("apply", str(path), "--json", env=state["env"])
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["changes"] == []  # a second run changes nothing

    attempts = kill_repeatedly(forks, random.Random(3003), Timing(window), args_for, after_kill, rerun)
    report("apply", attempts, outcomes)
    assert outcomes["nothing applied"] >= 1, outcomes
    vault_is_clean()
    audit_ok()


# ---- ask: the credit deduction -------------------------------------------------------------------

START = 1_000_000


def credits_consistent() -> tuple[int, int]:
    """balance == start − Σ credits_charged, and every successful platform call was charged
    (and no failed one): a usage record never exists without its deduction, nor the other way."""
    balance = rows("SELECT credits FROM orgs WHERE slug = 'acme'")[0][0]
    charged, calls = rows("SELECT coalesce(sum(credits_charged), 0), count(*) FROM usage "
                          "WHERE org = 'acme'")[0]
    assert balance == START - charged
    assert rows("SELECT count(*) FROM usage WHERE outcome = 'ok' AND credits_charged < 1") == [(0,)]
    assert rows("SELECT count(*) FROM usage WHERE outcome != 'ok' AND credits_charged != 0") == [(0,)]
    return calls, balance


def test_ask_credit_deduction_survives_sigkill_at_random_points(env_vault: Path, forks: ForkServer,
                                                                emulator) -> None:
    assert run("org", "create", "acme", "--credits", str(START)).exit_code == 0
    r = run("key", "add", "--platform", "--provider", "openai", "--from-stdin",
            input=OPENAI_TEST_KEY + "\n")
    assert r.exit_code == 0, r.output
    r = run("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url",
            emulator.openai_base_url)
    assert r.exit_code == 0, r.output
    ask = ("ask", "acme", "warm up", "--json", "--retries", "0")
    window = duration(forks, ask)
    state: dict = {}

    def answered() -> bool:  # the emulator has logged the call and is sending its answer
        return len(emulator.requests) > state["requests"]

    tail = work_after(forks, answered, ask, lambda: state.update(requests=len(emulator.requests)))
    outcomes: Counter = Counter()

    def args_for(i: int) -> tuple[tuple[str, ...], None]:
        state["calls"], _ = credits_consistent()
        state["requests"] = len(emulator.requests)
        stream = () if i % 2 else ("--no-stream",)
        return ("ask", "acme", f"question {i}", "--json", "--retries", "0", *stream), None

    def after_kill(_i: int) -> None:
        calls, _ = credits_consistent()
        assert calls in (state["calls"], state["calls"] + 1)
        outcomes["call recorded and charged" if calls > state["calls"] else "nothing recorded"] += 1
        vault_is_clean()

    def rerun(i: int) -> None:
        calls, balance = credits_consistent()
        code, out, err, _ = forks.run("ask", "acme", f"question {i} again", "--json",
                                      "--retries", "0")
        assert code == 0, err
        charged = json.loads(out)["credits_charged"]
        assert charged >= 1
        assert credits_consistent() == (calls + 1, balance - charged)

    # half the kills fall after the provider answered: where the usage record and the
    # deduction are written
    attempts = kill_repeatedly(forks, random.Random(4004), Timing(window, answered, tail),
                               args_for, after_kill, rerun)
    report("ask (credit deduction)", attempts, outcomes)
    assert outcomes["nothing recorded"] >= 1, outcomes
    vault_is_clean()
    audit_ok()


# ---- vault rotate-master -------------------------------------------------------------------------

def _opens_with(key: str | None) -> dict[str, str] | None:
    """Every secret, as a fresh process holding `key` in $BYOKCTL_MASTER_KEY (or, for None, the
    vault's own key file) would decrypt them; None if that key does not open the vault."""
    from byokctl.errors import VaultLocked

    saved = os.environ.pop("BYOKCTL_MASTER_KEY", None)
    if key is not None:
        os.environ["BYOKCTL_MASTER_KEY"] = key
    try:
        return {k: s for k, (s, _) in secrets_now().items()}
    except VaultLocked:
        return None
    finally:
        os.environ.pop("BYOKCTL_MASTER_KEY", None)
        if saved is not None:
            os.environ["BYOKCTL_MASTER_KEY"] = saved


def _some_keys() -> None:
    assert run("org", "create", "acme", "--plan", "growth").exit_code == 0
    for provider in ("anthropic", "openai"):
        r = run("key", "add", "acme", "--provider", provider, "--from-stdin",
                input=new_secret(provider) + "\n")
        assert r.exit_code == 0, r.output


def test_rotate_master_env_survives_sigkill_at_random_points(env_vault: Path,
                                                             forks: ForkServer) -> None:
    """Killed at any instant, the key the operator holds (the old one, or the new one if it
    was printed) opens the vault and every secret decrypts."""
    _some_keys()
    expected = _opens_with(os.environ["BYOKCTL_MASTER_KEY"])
    held = {"key": os.environ["BYOKCTL_MASTER_KEY"]}
    args = ("vault", "rotate-master", "--json")
    window = duration(forks, args, env={"BYOKCTL_MASTER_KEY": held["key"]})
    outcomes: Counter = Counter()

    def args_for(_i: int) -> tuple[tuple[str, ...], dict[str, str]]:
        return args, {"BYOKCTL_MASTER_KEY": held["key"]}

    def printed() -> str | None:
        try:
            return json.loads((forks.scratch / "out").read_text())["master_key"]
        except (ValueError, KeyError):
            return None

    def after_kill(_i: int) -> None:
        new = printed()
        pending = bool(rows("SELECT 1 FROM meta WHERE key = 'master_pending'"))
        outcomes["printed" if new else "pending, not printed" if pending else "nothing"] += 1
        assert _opens_with(held["key"]) == expected  # the key the operator holds
        if new:  # the operator stores the printed key: it opens the vault too, and takes over
            assert _opens_with(new) == expected
            held["key"] = new

    def rerun(_i: int) -> None:
        code, out, err, _ = forks.run(*args, env={"BYOKCTL_MASTER_KEY": held["key"]})
        assert code == 0, err
        new = json.loads(out)["master_key"]
        assert _opens_with(new) == expected
        assert _opens_with(held["key"]) is None  # the new key was used: the old one is retired
        held["key"] = new

    attempts = kill_repeatedly(forks, random.Random(1013), Timing(window), args_for, after_kill,
                               rerun)
    report("vault rotate-master (env)", attempts, outcomes)
    assert _opens_with(held["key"]) == expected
    os.environ["BYOKCTL_MASTER_KEY"] = held["key"]
    vault_is_clean()
    audit_ok()


def test_rotate_master_key_file_survives_sigkill_at_random_points(
        forks: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BYOKCTL_MASTER_KEY", raising=False)
    kf = tmp_path / "keys" / "master.key"
    r = run("init", "--master-key-file", str(kf))
    assert r.exit_code == 0, r.output
    _some_keys()
    expected = _opens_with(None)
    args = ("vault", "rotate-master", "--json")
    window = duration(forks, args)
    outcomes: Counter = Counter()

    def after_kill(_i: int) -> None:
        staged = kf.with_name("master.key.next").exists()
        outcomes["staged" if staged else "not staged or done"] += 1
        assert _opens_with(None) == expected  # the key file (or its `.next`) opens the vault

    def rerun(_i: int) -> None:
        code, _out, err, _ = forks.run(*args)
        assert code == 0, err
        assert _opens_with(None) == expected
        assert not kf.with_name("master.key.next").exists()

    attempts = kill_repeatedly(forks, random.Random(1014), Timing(window),
                               lambda _i: (args, None), after_kill, rerun)
    report("vault rotate-master (key file)", attempts, outcomes)
    vault_is_clean()
    audit_ok()


def test_moving_the_master_key_between_a_key_file_and_transit_survives_sigkill(
        forks: ForkServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transit: str) -> None:
    """`rotate-master --kms REF` and `--master-key-file PATH`, back and forth, killed at any
    instant: the vault's own source (key file, its `.next`, or the transit-wrapped key in the
    same transaction as the re-wrapped data keys) opens it and every secret decrypts."""
    monkeypatch.delenv("BYOKCTL_MASTER_KEY", raising=False)
    vault_env = {"VAULT_ADDR": os.environ["VAULT_ADDR"], "VAULT_TOKEN": os.environ["VAULT_TOKEN"]}
    r = run("init", "--master-key-file", str(tmp_path / "keys" / "master-0.key"))
    assert r.exit_code == 0, r.output
    _some_keys()
    expected = _opens_with(None)
    to_kms = ("vault", "rotate-master", "--kms", transit, "--json")
    outcomes: Counter = Counter()

    def source() -> str:
        return rows("SELECT value FROM meta WHERE key = 'master_source'")[0][0]

    last: dict[str, tuple[str, ...]] = {}

    def args_for(i: int) -> tuple[tuple[str, ...], dict[str, str]]:
        """The other way from where the vault is now (a new key file each time)."""
        last["args"] = to_kms if source() == "file" else (
            "vault", "rotate-master", "--master-key-file", str(tmp_path / "keys" / f"master-{i}.key"),
            "--json")
        return last["args"], vault_env

    window = duration(forks, to_kms, env=vault_env, runs=2)  # kms → kms: the same work

    def after_kill(_i: int) -> None:
        outcomes[f"{'to kms' if last['args'] == to_kms else 'to file'}, left on {source()}"] += 1
        assert _opens_with(None) == expected

    def rerun(_i: int) -> None:  # the same move again finishes it
        code, _out, err, _ = forks.run(*last["args"], env=vault_env)
        assert code == 0, err
        assert source() == ("kms" if last["args"] == to_kms else "file")
        assert _opens_with(None) == expected

    attempts = kill_repeatedly(forks, random.Random(1015), Timing(window), args_for, after_kill,
                               rerun)
    report("vault rotate-master (key file <-> transit)", attempts, outcomes)
    vault_is_clean()
    audit_ok()
