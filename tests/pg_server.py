"""A throwaway PostgreSQL server for the tests, from the Debian packages on this machine.

`initdb` in a temp dir (as the `postgres` user when running as root: the server refuses to run
as root), Unix socket only (no TCP port to collide with), fsync off. One server per test
session; `database()` creates an empty database per test (about 40 ms).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

_counter = itertools.count(1)


def _bindir() -> Path | None:
    """Where initdb and pg_ctl are: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    if found := shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return versions[-1].parent if versions else None


class PostgresServer:
    """A server of our own in a temp dir; `stop()` removes it."""

    def __init__(self) -> None:
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) on this machine: "
                               "install Debian's `postgresql` package (.ci/run does)")
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="byokctl-pg-"))
        self.root.chmod(0o755)
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.user = "postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # the server will not run as root
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and no `postgres` user to run the server as: "
                                   "install Debian's `postgresql` package (.ci/run does)") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self._as = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync",
                  "-E", "UTF8", "--locale=C.UTF-8")
        options = (f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-w", "-l",
                  str(self.root / "server.log"), "start")
        # Stopped at the latest when this interpreter exits, whoever forgot to (a test run cut
        # short by -x, a script whose output pipe closed): no server outlives its process.
        atexit.register(self.stop)

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bindir / tool), *args], capture_output=True,
                              text=True, timeout=60)
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for `dbname` over the server's Unix socket."""
        from urllib.parse import quote

        return f"postgresql://{self.user}@/{dbname}?host={quote(str(self.socket_dir), safe='')}"

    def database(self, template: str | None = None) -> str:
        """A new database, empty or a copy of the database at URL `template` (which must have
        no open connection); its URL."""
        import psycopg
        from psycopg import conninfo

        name = f"t{os.getpid()}_{next(_counter)}"
        copy = ""
        if template is not None:
            copy = f' TEMPLATE "{conninfo.conninfo_to_dict(template)["dbname"]}"'
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
