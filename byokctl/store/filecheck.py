"""The SQLite file's own check for `vault check`: `PRAGMA quick_check`, which reads every page
(usage records included), in a thread on its own read-only connection. SQLite releases the
GIL, so on more than one core it runs while the caller walks the tables, at no extra time."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

from byokctl.store import BUSY_TIMEOUT_MS


class FileCheck:
    """`PRAGMA quick_check` of the whole file in a thread, on its own read-only connection."""

    def __init__(self, path: Path, immutable: bool = False) -> None:
        self.path, self.immutable = path, immutable
        self.messages: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="quick_check", daemon=True)
        self.conn = self._connect()  # here, so that `cancel` always has it to interrupt

    def _connect(self) -> sqlite3.Connection:
        mode = "?mode=ro&immutable=1" if self.immutable else "?mode=ro"
        return sqlite3.connect(Path(self.path).resolve().as_uri() + mode, uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)

    def _run(self) -> None:
        try:
            self.messages = [r[0] for r in self.conn.execute("PRAGMA quick_check")]
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            self.conn.close()

    def start(self) -> None:
        """Begin the check in its thread."""
        self.thread.start()

    def cancel(self) -> None:
        """Interrupt the check (Ctrl-C, or the walk failed): do not wait for the whole file."""
        with contextlib.suppress(Exception):  # already finished and closed: nothing to stop
            self.conn.interrupt()

    def join(self) -> None:
        """Wait for the check to end."""
        self.thread.join()

    def damage(self) -> list[str]:
        """What the check found wrong with the file ([] if nothing); after `join`. Any other
        failure of the thread (an interrupt) is raised here, in the caller's thread."""
        if isinstance(self.error, sqlite3.DatabaseError):
            # SQLite sometimes raises on damage instead of listing it: a finding all the same
            # (only called after the walk succeeded, so this is not our own interrupt)
            return [str(self.error)]
        if self.error is not None:
            raise self.error
        return [msg for msg in self.messages if msg != "ok"]
