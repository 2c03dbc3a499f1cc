"""Secret hygiene, swept across every command: with an org key, a member key and a platform key
stored, each command of the tree runs once, validly, and none of the secrets -- nor any 16
characters of one -- shows up in its stdout or stderr, in any file under the vault's directory,
in the audit or usage tables, or in the temp directory (which must be left empty). `ask` and
`key test` also run as real processes against a stalled provider, to read what `ps` would see:
no secret in their argv or any child's, and no core file even when they crash under
`ulimit -c unlimited`.

The table below has one valid invocation per command; a command added to the tree without an
entry here fails `test_the_table_covers_every_command`.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, connect, master_key_b64, run, vault_db

from byokctl.providers.emulator import Config, Emulator

ORG_SECRET = "sk-ant-api03-hygieneOrg-" + "Zq8Wm3Lx7Tn2Vb5R" * 2
MEMBER_SECRET = "sk-ant-api03-hygieneMem-" + "Hp4Jk9Fd1Ys6Gc0U" * 2
PLATFORM_SECRET = "sk-proj-hygienePlat-" + "Qe7Ra2Ws5Dx8Cv3B" * 2
ROTATED_SECRET = "sk-ant-api03-hygieneNew-" + "Mn6Bv1Cx4Za9Sd2F" * 2
APPLY_SECRET = "sk-proj-hygieneApply-" + "Tg3Yh8Uj5Ik0Ol7P" * 2
SECRETS = (ORG_SECRET, MEMBER_SECRET, PLATFORM_SECRET, ROTATED_SECRET, APPLY_SECRET)
ENV = {"MEMBER_KEY": MEMBER_SECRET, "APPLY_KEY": APPLY_SECRET}

APPLY_FILE = """
[orgs.gamma]
plan = "scale"
provider = "openai"
base_url = "{O}"

[orgs.gamma.members]
"gwen@gamma.io" = "admin"

[[orgs.gamma.keys]]
provider = "openai"
from_env = "APPLY_KEY"
"""

# One valid invocation per command, in an order that works: (argv, stdin, expected exit code).
# {A}/{O}: the emulator's Anthropic/OpenAI base URL; {org_key} etc.: ids known by then;
# {file}: the apply file. `emulator serve` runs until interrupted: it is swept separately.
SWEEP: list[tuple[tuple[str, ...], str | None, int]] = [
    (("init",), None, 0),
    (("org", "create", "acme", "--plan", "growth", "--credits", "100"), None, 0),
    (("org", "create", "beta", "--credits", "5"), None, 0),
    (("member", "add", "acme", "alice@acme.com", "--role", "admin"), None, 0),
    (("member", "add", "acme", "ivan@acme.com", "--role", "interviewer"), None, 0),
    (("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--base-url", "{A}",
      "--fallback", "provider-error", "--yes"), None, 0),
    (("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url", "{O}"), None, 0),
    (("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--test"), ORG_SECRET, 0),
    (("key", "add", "acme", "--provider", "anthropic", "--member", "ivan@acme.com", "--from-env",
      "MEMBER_KEY", "--as", "ivan@acme.com"), None, 0),
    (("key", "add", "--platform", "--provider", "openai", "--from-stdin", "--json"),
     PLATFORM_SECRET, 0),
    (("key", "list"), None, 0),
    (("key", "test", "{org_key}"), None, 0),
    # The operator set acme's base_url; ivan approves it for his own key (hostile review 6/11).
    (("key", "approve-endpoint", "{member_key}", "--as", "ivan@acme.com"), None, 0),
    (("resolve", "acme", "--as", "ivan@acme.com"), None, 0),
    (("ask", "acme", "Say hello"), None, 0),
    (("ask", "acme", "-", "--as", "ivan@acme.com", "--no-stream", "--system", "be brief"),
     "Say hello from stdin", 0),
    (("ask", "beta", "Say hello", "--json"), None, 0),
    (("key", "rotate", "{org_key}", "--from-stdin"), ROTATED_SECRET, 0),
    (("org", "list"), None, 0),
    (("org", "show", "acme"), None, 0),
    (("org", "migrate-model", "haiku", "claude-haiku-4-5", "--yes"), None, 0),
    (("org", "set-budget", "acme", "--monthly-usd", "50"), None, 0),
    (("member", "list", "acme"), None, 0),
    (("member", "set-role", "acme", "alice@acme.com", "staffing"), None, 0),
    (("plan", "show", "acme"), None, 0),
    (("plan", "set", "beta", "growth"), None, 0),
    (("plan", "grant-grace", "beta", "--days", "5", "--reason", "renewal"), None, 0),
    (("plan", "revoke-grace", "beta"), None, 0),
    (("credits", "add", "beta", "10", "--reason", "top-up"), None, 0),
    (("credits", "show", "beta"), None, 0),
    (("platform", "show"), None, 0),
    (("models", "list"), None, 0),
    (("completion", "bash"), None, 0),
    (("usage", "show", "acme", "--by", "mode"), None, 0),
    (("apply", "{file}", "--test-keys"), None, 0),
    (("export",), None, 0),
    (("audit", "log", "--limit", "100"), None, 0),
    (("audit", "verify"), None, 0),
    (("audit", "anchor", "--json"), None, 0),
    (("vault", "status"), None, 0),
    (("vault", "check"), None, 0),
    (("vault", "copy", "--to", "{home}/copy/vault.db"), None, 0),  # scanned with the rest of home
    (("vault", "rekey"), None, 0),
    (("demo",), None, 0),
    (("member", "remove", "acme", "alice@acme.com"), None, 0),
    (("key", "revoke-endpoint", "{member_key}", "--as", "ivan@acme.com"), None, 0),
    (("key", "remove", "{member_key}", "--yes"), None, 0),
    (("org", "delete", "beta", "--yes"), None, 0),
    (("vault", "rotate-master", "--json"), None, 0),  # last: the master key changes
]
SEPARATELY = {("emulator", "serve")}


def leaf_commands() -> set[tuple[str, ...]]:
    from typer.main import get_command

    from byokctl.cli import app

    found = set()

    def walk(command, path):
        subs = getattr(command, "commands", None)
        if subs is None:
            found.add(path)
            return
        for name in command.list_commands(None):
            walk(command.get_command(None, name), (*path, name))

    walk(get_command(app), ())
    return found


def command_of(argv: tuple[str, ...], leaves: set[tuple[str, ...]]) -> tuple[str, ...]:
    for n in (1, 2):
        if tuple(argv[:n]) in leaves:
            return tuple(argv[:n])
    raise AssertionError(f"{argv} names no command")


# ---- looking for the secrets ------------------------------------------------------------------

FRAGMENTS = {s[i:i + 16] for s in SECRETS for i in range(len(s) - 15)}


def leaks(data: str | bytes) -> list[str]:
    """Which secrets, or 16-character pieces of them, `data` holds."""
    if isinstance(data, bytes):
        return sorted(f for f in FRAGMENTS if f.encode() in data)
    return sorted(f for f in FRAGMENTS if f in data)


def test_the_needle_finder_finds_needles():
    assert leaks(f"xx{ORG_SECRET[3:19]}yy") == [ORG_SECRET[3:19]]
    assert leaks(PLATFORM_SECRET.encode())
    assert leaks(ORG_SECRET[:15]) == [] and leaks("…" + ORG_SECRET[-4:]) == []


def test_the_table_covers_every_command():
    leaves = leaf_commands()
    swept = {command_of(argv, leaves) for argv, _, _ in SWEEP}
    assert swept | SEPARATELY == leaves, (
        f"missing from SWEEP: {sorted(leaves - swept - SEPARATELY)}; "
        f"not commands: {sorted((swept | SEPARATELY) - leaves)}")


# ---- the sweep ------------------------------------------------------------------------------------

@pytest.fixture
def emu():
    keys = {"anthropic": {ORG_SECRET, MEMBER_SECRET, ROTATED_SECRET},
            "openai": {PLATFORM_SECRET, APPLY_SECRET}}
    e = Emulator(Config(valid_keys=keys)).start()
    yield e
    e.stop()


@pytest.fixture
def fresh_tmp(tmp_path, monkeypatch) -> Path:
    """TMPDIR for byokctl (in-process too: tempfile caches its choice, so reset it)."""
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp


def scan_tables(db: Path) -> list[str]:
    conn = connect(db)
    try:
        text = "\n".join(repr(row) for table in ("audit", "usage", "orgs", "members", "meta")
                         for row in conn.execute(f"SELECT * FROM {table}"))
    finally:
        conn.close()
    return leaks(text)


def scan_files(root: Path) -> dict[str, list[str]]:
    return {str(p.relative_to(root)): found for p in sorted(root.rglob("*"))
            if p.is_file() and (found := leaks(p.read_bytes()))}


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
def test_every_command_keeps_every_secret(home, tmp_path, fresh_tmp, emu, monkeypatch):
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    apply_file = tmp_path / "provision.toml"
    apply_file.write_text(APPLY_FILE.replace("{O}", emu.openai_base_url))
    ids: dict[str, str] = {}
    leaves = leaf_commands()
    ran = set()
    for argv, stdin, code in SWEEP:
        args = [a.format(A=emu.anthropic_base_url, O=emu.openai_base_url, file=apply_file,
                         home=home, **ids)
                for a in argv]
        r = run(*args, input=stdin)
        shown = " ".join(args)
        assert r.exit_code == code, f"{shown}\n{r.output}"
        assert "Traceback" not in r.output, shown
        assert leaks(r.stdout) == [], f"stdout of {shown}"
        assert leaks(r.stderr) == [], f"stderr of {shown}"
        ran.add(command_of(argv, leaves))
        if argv[:2] == ("key", "list"):
            listed = json.loads(run("key", "list", "--json").stdout)
            ids["org_key"] = next(k["id"] for k in listed if k["scope"] == "org")
            ids["member_key"] = next(k["id"] for k in listed if k["scope"] == "member")
        # Everything on disk, after every command (a later one might have purged a leak).
        assert scan_files(home) == {}, f"after {shown}"
        assert scan_tables(vault_db()) == [], f"after {shown}"
        assert list(fresh_tmp.iterdir()) == [], f"{shown} left {list(fresh_tmp.iterdir())}"
    assert ran | SEPARATELY == leaves
    # The secrets were really used: each answered through the emulator at least once.
    hints = {q.key_hint for q in emu.requests if q.status == 200}
    assert {s[-4:] for s in SECRETS} <= hints


def test_emulator_serve_shows_no_stored_secret(tmp_path):
    """The one command that runs until interrupted: started, read, then stopped with Ctrl-C."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "BYOKCTL_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "byokctl", "emulator", "serve", "--valid-key",
                             "sk-test-made-up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    try:
        first = proc.stdout.readline()
        assert first.startswith("anthropic: http://127.0.0.1:"), first
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err
    assert leaks(first + out + err) == []
    assert list(tmp_path.iterdir()) == []  # nothing in TMPDIR, no vault created


# ---- what `ps` sees, and core files -------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


@pytest.fixture
def stalled(cli, home, emu, monkeypatch, tmp_path):
    """A vault whose org key and platform key answer only after a long stall."""
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master_key_b64())
    for argv in (("init",), ("org", "create", "acme", "--plan", "growth", "--credits", "5"),
                 ("org", "set-provider", "acme", "anthropic", "--base-url", emu.anthropic_base_url,
                  "--yes")):
        assert cli(*argv).exit_code == 0
    r = cli("key", "add", "acme", "--provider", "anthropic", "--from-stdin", "--json",
            input=ORG_SECRET)
    assert r.exit_code == 0, r.output
    emu.inject(stall=60)
    return {"key_id": json.loads(r.stdout)["id"],
            "env": {**os.environ, "TMPDIR": str(tmp_path / "proc-tmp")}}


def in_provider_call(pid: int, started: float) -> bool:
    """The process has a socket open (so it is talking to the stalled provider, the key
    decrypted). A non-dumpable process's fds are root's to read: else give it 2.5 s."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
        return any(os.readlink(fd).startswith("socket:") for fd in fds)
    except PermissionError:
        return time.monotonic() - started > 2.5
    except OSError:
        return False


@pytest.mark.slow  # half a second or more: CI runs it, the quick loop does not
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("argv", [("ask", "acme", "hello", "--timeout", "8", "--retries", "0"),
                                  ("key", "test", "{key_id}", "--timeout", "8", "--retries", "0")],
                         ids=["ask", "key test"])
def test_ps_sees_no_secret_and_core_dumps_are_off(stalled, tmp_path, argv):
    """While waiting on the provider (the decrypted key in memory), the process and any child
    show no secret in their command lines, and core dumps are off whatever the shell allowed:
    killed with SIGSEGV there, it leaves no core file (core_pattern `core` writes it to cwd)."""
    (tmp_path / "proc-tmp").mkdir()
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    args = [a.format(key_id=stalled["key_id"]) for a in argv]

    def unlimited_cores() -> None:  # as after `ulimit -c unlimited` in the user's shell
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    proc = subprocess.Popen([sys.executable, "-m", "byokctl", *args], env=stalled["env"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=unlimited_cores)
    cmdlines: list[bytes] = []
    core_limit = None
    started = time.monotonic()
    while proc.poll() is None and time.monotonic() - started < 6:
        for pid in descendants(proc.pid):
            with contextlib.suppress(OSError):  # it may have just exited
                cmdlines.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        try:
            limits = Path(f"/proc/{proc.pid}/limits").read_text()
            core_limit = next(line.split()[4:6] for line in limits.splitlines()
                              if line.startswith("Max core file size"))
        except (OSError, StopIteration):
            pass
        if in_provider_call(proc.pid, started):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "it should still be waiting on the stalled provider"
    os.kill(proc.pid, signal.SIGSEGV)  # a crash with the key in memory
    out, err = proc.communicate(timeout=20)

    assert proc.returncode == -signal.SIGSEGV
    assert any(b"byokctl" in c for c in cmdlines)  # we did read its command line
    assert [c for c in cmdlines if leaks(c)] == []
    assert core_limit == ["0", "0"], core_limit
    assert list(cwd.iterdir()) == [], "a core file was left behind"
    assert leaks(out) == [] and leaks(err) == []
    assert list((tmp_path / "proc-tmp").iterdir()) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_no_core_dumps_also_makes_the_process_non_dumpable():
    code = ("import ctypes, resource\n"
            "from byokctl.process import no_core_dumps\n"
            "no_core_dumps()\n"
            "print(ctypes.CDLL(None).prctl(3, 0, 0, 0, 0), resource.getrlimit(resource.RLIMIT_CORE))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(None, 1) == ["0", "(0, 0)\n"]  # PR_GET_DUMPABLE: 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
@pytest.mark.parametrize("env", [{}, {"_BYOKCTL_COMPLETE": "complete_bash",
                                      "COMP_WORDS": "byokctl org show ", "COMP_CWORD": "3"}],
                         ids=["command", "shell completion"])
def test_every_byokctl_process_is_hardened_by_the_time_it_exits(vault, env):
    """The entry point hardens the process first, on the completion path too (it never loads
    typer): seen from inside, as the process exits."""
    code = ("import atexit, ctypes, resource, sys\n"
            "def report():\n"
            "    sys.stdout.write(f'\\nDUMPABLE={ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)} '\n"
            "                     f'CORE={resource.getrlimit(resource.RLIMIT_CORE)}\\n')\n"
            "    sys.stdout.flush()\n"
            "atexit.register(report)\n"
            "sys.argv = ['byokctl', 'org', 'list']\n"
            "from byokctl.__main__ import main\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=60, env={**os.environ, **env},
                       preexec_fn=lambda: resource.setrlimit(
                           resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "DUMPABLE=0 CORE=(0, 0)"
