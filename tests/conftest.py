"""Every test runs in its own data directory with an in-memory keyring and a fixed actor."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import keyring
import keyring.backend
import pytest
from typer.testing import CliRunner

from byokctl.cli import app

REPO = Path(__file__).resolve().parent.parent


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend that keeps entries in a dict (the in-process OS keyring stand-in)."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--engine", choices=("sqlite", "postgresql"), default="sqlite",
                     help="the engine the vault fixtures use: a file, or a database on a "
                          "throwaway PostgreSQL server (tests/pg_server.py)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: reads or damages the vault's file itself")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--engine") == "postgresql":
        skip = pytest.mark.skip(reason="works on the SQLite file itself (run without --engine)")
        for item in items:
            if "sqlite_only" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
             request: pytest.FixtureRequest) -> MemoryKeyring:
    home = tmp_path / "home"
    monkeypatch.setenv("BYOKCTL_HOME", str(home))
    for var in ("BYOKCTL_DB", "BYOKCTL_MASTER_KEY", "BYOKCTL_DEBUG", "NO_COLOR", "FORCE_COLOR",
                "BYOKCTL_PKCS11_PIN", "SOFTHSM2_CONF"):
        monkeypatch.delenv(var, raising=False)
    if request.config.getoption("--engine") == "postgresql":
        monkeypatch.setenv("BYOKCTL_DB", request.getfixturevalue("pg_server").database())
    monkeypatch.setenv("BYOKCTL_ACTOR", "tester")
    ring = MemoryKeyring()
    previous = keyring.get_keyring()
    keyring.set_keyring(ring)
    yield ring
    keyring.set_keyring(previous)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """Invoke byokctl in-process, as a user would, with stdout and stderr kept apart."""
    r = CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)
    return Result(r.exit_code, r.stdout, r.stderr)


@pytest.fixture
def cli():
    return run


@pytest.fixture
def vault(cli) -> Path | str:
    """An initialised vault whose master key sits in the in-memory keyring: its file (or,
    with `--engine postgresql`, its database URL)."""
    r = cli("init")
    assert r.exit_code == 0, r.output
    return vault_db()


@pytest.fixture
def acme(cli, vault) -> Path:
    """Org `acme` on the growth plan in a fresh vault; the vault's path. A file's own variants
    say what they add (`acme_with_members`, `acme_with_credits`, ...)."""
    assert cli("org", "create", "acme", "--plan", "growth").exit_code == 0
    return vault


class PgConnection:
    """A test's own connection to a PostgreSQL vault, spoken to as to `sqlite3`: `?`
    placeholders, `execute(...).fetchone()`, rows by name or position; each statement commits
    by itself unless the test says BEGIN (so `commit()` has nothing left to do)."""

    def __init__(self, url: str) -> None:
        import psycopg

        from byokctl.store.postgres import _row_factory

        self.conn = psycopg.connect(url, row_factory=_row_factory, autocommit=True)
        self.row_factory = None  # set by callers written for sqlite3; rows work either way

    def execute(self, sql: str, params: tuple | list = ()):  # noqa: ANN201 - a psycopg cursor
        from byokctl.store.postgres import _paramstyle  # the engine's own `?` → `%s`

        if not params:
            return self.conn.execute(sql)
        return self.conn.execute(_paramstyle(sql), params)

    def executemany(self, sql: str, rows: list) -> None:
        from byokctl.store.postgres import _paramstyle

        self.conn.cursor().executemany(_paramstyle(sql), rows)

    def commit(self) -> None:
        if self.conn.info.transaction_status:  # inside a BEGIN the test wrote itself
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> PgConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


def vault_db() -> Path | str:
    """The vault the commands of this test use: `$BYOKCTL_DB` (a database with `--engine
    postgresql`), else the file in `$BYOKCTL_HOME`."""
    return os.environ.get("BYOKCTL_DB") or Path(os.environ["BYOKCTL_HOME"]) / "vault.db"


def connect(db: Path | str):  # noqa: ANN201 - sqlite3.Connection or PgConnection
    """A direct connection to the vault `db` (a file, or a PostgreSQL URL), to read it or
    tamper with it as an attacker with write access to the storage would; each statement
    commits by itself unless the test says BEGIN (`commit()` is then harmless)."""
    if isinstance(db, str) and db.startswith("postgresql://"):
        return PgConnection(db)
    return sqlite3.connect(db, isolation_level=None)  # each statement commits, as on PostgreSQL


class WriteLock:
    """Another process's write transaction on the vault, held until `release()`: SQLite's
    BEGIN IMMEDIATE, or the advisory lock every PostgreSQL write takes."""

    def __init__(self, db: Path | str) -> None:
        if isinstance(db, str) and db.startswith("postgresql://"):
            import psycopg

            from byokctl.store.postgres import WRITE_LOCK

            self.conn = psycopg.connect(db, autocommit=True)
            self.begin = ["BEGIN", f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"]
        else:
            self.conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            self.begin = ["BEGIN IMMEDIATE"]

    def take(self, *_: object) -> None:
        for sql in self.begin:
            self.conn.execute(sql)

    def release(self) -> None:
        self.conn.execute("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


def all_rows(db: Path | str) -> list[tuple]:
    """Every row of every table of the vault `db`, on either engine."""
    from byokctl.store import migrations

    conn = connect(db)
    try:
        return [tuple(r) for t in (*migrations.TABLES, migrations.RECORD_TABLE)
                for r in conn.execute(f"SELECT * FROM {t}").fetchall()]
    finally:
        conn.close()


def stored_text(db: Path | str) -> bytes:
    """What the storage holds of the vault `db`: its file and side files' bytes, or on
    PostgreSQL every row of every table as text."""
    if isinstance(db, str):
        return "\n".join(map(repr, all_rows(db))).encode()
    return b"".join(Path(f"{db}{s}").read_bytes() for s in ("", "-wal", "-journal")
                    if Path(f"{db}{s}").exists())


def audit_rows(db: Path | str, action: str | None = None) -> list[dict]:
    """The audit table as dicts, oldest first, optionally only one action."""
    conn = connect(db)
    conn.row_factory = sqlite3.Row
    sql, params = "SELECT * FROM audit", ()
    if action:
        sql, params = sql + " WHERE action = ?", (action,)
    rows = [dict(r) for r in conn.execute(sql + " ORDER BY seq", params)]
    conn.close()
    return rows


def under_pty(args: list[str], env: dict[str, str]) -> str:
    """`python -m byokctl ARGS` on a pseudo-terminal (with `env` added): all it wrote, stdout
    and stderr together, as a person sees it (escape sequences included)."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env)
        os.execv(sys.executable, [sys.executable, "-m", "byokctl", *args])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode(errors="replace")


def in_threads(n: int, work) -> list[BaseException]:  # noqa: ANN001 - a callable of no arguments
    """Run `work` in `n` threads at once and wait for them all: what any of them raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def added_key(cli, *args: str, secret: str) -> dict:  # noqa: ANN001 - the `cli` fixture
    """`key add ARGS --from-stdin --json` with the secret on stdin, which must succeed; the
    new key's JSON."""
    r = cli("key", "add", *args, "--from-stdin", "--json", input=secret + "\n")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def add_key(cli, *args: str, secret: str) -> str:  # noqa: ANN001 - the `cli` fixture
    """`key add ARGS` with the secret on stdin; the new key's id."""
    return added_key(cli, *args, secret=secret)["id"]


def listed_keys(cli, *args: str) -> list[dict]:  # noqa: ANN001 - the `cli` fixture
    """`key list ARGS --json`, which must succeed."""
    r = cli("key", "list", *args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def provision_byok(cli, emulator) -> dict:  # noqa: ANN001 - the `cli` and `emulator` fixtures
    """org acme (growth, 100 credits) on its own Anthropic key at the emulator, and the
    platform default on the platform's OpenAI key there too: {org_key, platform_key,
    emulator}."""
    cli("org", "create", "acme", "--plan", "growth", "--credits", "100")
    org_key = add_key(cli, "acme", "--provider", "anthropic", secret=ANTHROPIC_TEST_KEY)
    r = cli("org", "set-provider", "acme", "anthropic", "--model", "haiku", "--base-url",
            emulator.anthropic_base_url, "--yes")
    assert r.exit_code == 0, r.output
    plat_key = add_key(cli, "--platform", "--provider", "openai", secret=OPENAI_TEST_KEY)
    r = cli("platform", "set-default", "openai", "--model", "gpt-5-nano", "--base-url",
            emulator.openai_base_url)
    assert r.exit_code == 0, r.output
    return {"org_key": org_key, "platform_key": plat_key, "emulator": emulator}


def anthropic_answer(emulator, prompt: str = "hi"):  # noqa: ANN001, ANN201 - emulator; a Message
    """An Anthropic answer from the emulator, to hand to `call.record()` (the call itself is
    the platform's)."""
    import anthropic

    with anthropic.Anthropic(api_key=ANTHROPIC_TEST_KEY, base_url=emulator.anthropic_base_url) as sdk:
        return sdk.messages.create(model="claude-haiku-5-5", max_tokens=16,
                                   messages=[{"role": "user", "content": prompt}])


def pg_byok(pg_url: str, monkeypatch: pytest.MonkeyPatch, cli, emulator) -> tuple[bytes, dict]:  # noqa: ANN001
    """A PostgreSQL vault (`$BYOKCTL_DB`, a fixed master key in `$BYOKCTL_MASTER_KEY`) with
    provision_byok's orgs: (the master key's bytes, what provision_byok made)."""
    master = base64.b64encode(b"k" * 32).decode()
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", master)
    monkeypatch.setenv("BYOKCTL_DB", pg_url)
    assert cli("init").exit_code == 0
    return base64.b64decode(master), provision_byok(cli, emulator)


def meta_value(key: str) -> str | None:
    """One value of the vault's meta table, read behind byokctl's back (None if absent)."""
    conn = connect(vault_db())
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def master_key_b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def env_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh master key in $BYOKCTL_MASTER_KEY (no keyring); the key."""
    key = master_key_b64()
    monkeypatch.setenv("BYOKCTL_MASTER_KEY", key)
    return key


def run_proc(*args: str, env: dict[str, str] | None = None, input: str | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run byokctl as a separate process (`python -m byokctl`)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "byokctl", *args], input=input, env=full_env,
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


# -- the loopback provider emulator (byokctl/providers/emulator.py) ----------------------------
ANTHROPIC_TEST_KEY = "sk-ant-api03-emulator-" + "a1B2c3D4e5" * 4
OPENAI_TEST_KEY = "sk-proj-emulator-" + "Z9y8X7w6V5" * 4
EMULATOR_KEYS = {"anthropic": ANTHROPIC_TEST_KEY, "openai": OPENAI_TEST_KEY}


@pytest.fixture
def emulator():
    """The emulator in a background thread on a free 127.0.0.1 port, accepting EMULATOR_KEYS.

    Use `.anthropic_base_url` / `.openai_base_url` (or `.base_url(provider)`), `.inject(...)`
    to make it misbehave, and `.requests` to see what reached it.
    """
    from byokctl.providers.emulator import Config, Emulator

    emu = Emulator(Config(valid_keys={p: {k} for p, k in EMULATOR_KEYS.items()})).start()
    yield emu
    emu.stop()


# -- a throwaway PostgreSQL server (tests/pg_server.py) ----------------------------------------
@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the session; skipped, loudly, only where none can start."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")
    from pg_server import PostgresServer

    try:
        server = PostgresServer()
    except (RuntimeError, OSError) as exc:
        if os.environ.get("BYOKCTL_REQUIRE_PG"):  # CI (.ci/run): the tests must run there
            pytest.fail(f"no PostgreSQL server could start: {exc}")
        pytest.skip(f"NO POSTGRESQL SERVER COULD START, the PostgreSQL tests did not run: {exc}")
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server) -> str:
    """The URL of a new, empty database on the session's server."""
    return pg_server.database()


# -- a throwaway SoftHSM2 token (tests/softhsm.py) ---------------------------------------------
@pytest.fixture(scope="session")
def softhsm_session(tmp_path_factory: pytest.TempPathFactory):
    """One SoftHSM2 for the test process, its token `byokctl-test` made before the module loads:
    SoftHSM2 reads its config and tokens once per process (and cannot be initialised again), so
    the tests share the token and each names its own keys. Skipped, loudly, only where SoftHSM2
    or python-pkcs11 is missing; a failure where BYOKCTL_REQUIRE_KMS is set (CI)."""
    from softhsm import SoftHsm, SoftHsmMissing

    try:
        import pkcs11  # noqa: F401 - only to know whether the source can load at all

        hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"))
        hsm.init_token()
    except (ImportError, SoftHsmMissing, subprocess.CalledProcessError) as exc:
        if os.environ.get("BYOKCTL_REQUIRE_KMS"):  # CI (.ci/run): the tests must run there
            pytest.fail(f"SoftHSM2 cannot be used: {exc}")
        pytest.skip(f"NO SOFTHSM2 TOKEN, the PKCS#11 tests did not run: {exc} "
                    "(pip install -e '.[test]'; apt-get install softhsm2)")
    return hsm


_softhsm_tests = iter(range(1, 1_000_000))


@pytest.fixture
def softhsm(softhsm_session, monkeypatch: pytest.MonkeyPatch):
    """The session's SoftHSM2 token for one test: $SOFTHSM2_CONF and $BYOKCTL_PKCS11_PIN set, and
    key labels of the test's own (`softhsm.label("master")`, `softhsm.reference("master")`)."""
    from softhsm import USER_PIN

    monkeypatch.setenv("SOFTHSM2_CONF", str(softhsm_session.conf))
    monkeypatch.setenv("BYOKCTL_PKCS11_PIN", USER_PIN)
    return softhsm_session.for_test(f"t{next(_softhsm_tests)}-")


@pytest.fixture
def set_now(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - the setter
    """Move byokctl's one clock for in-process commands (`cli`): `set_now(datetime(...))`."""
    from byokctl import clock

    def move(when: datetime) -> None:
        monkeypatch.setattr(clock, "now", lambda: when)

    return move


# -- a throwaway OpenBao dev server (tests/openbao.py) -----------------------------------------
def _start_bao():  # noqa: ANN202 - a BaoServer
    from openbao import BaoServer

    try:
        return BaoServer()
    except (RuntimeError, OSError) as exc:
        if os.environ.get("BYOKCTL_REQUIRE_KMS"):  # CI (.ci/run): the tests must run there
            pytest.fail(f"no OpenBao server could start: {exc}")
        pytest.skip(f"NO OPENBAO SERVER COULD START, the Vault transit tests did not run: {exc}")


@pytest.fixture(scope="session")
def bao_server():
    """One OpenBao dev server (transit mounted) for the session; never sealed or stopped by
    a test (those get `own_bao`). Skipped, loudly, only where `bao` cannot run."""
    server = _start_bao()
    yield server
    server.stop()


@pytest.fixture
def own_bao():
    """A dev server of the test's own, to seal, stop or break (about 0.6 s to start)."""
    server = _start_bao()
    yield server
    server.stop()


@pytest.fixture
def transit(bao_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """$VAULT_ADDR/$VAULT_TOKEN (root) pointed at the session's server and a fresh transit
    key; the reference `vault-transit:transit/KEY`."""
    for var, value in bao_server.env().items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("VAULT_NAMESPACE", raising=False)
    return f"vault-transit:transit/{bao_server.new_key()}"
