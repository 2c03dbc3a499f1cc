"""The byokctl process itself: hardening it at start, and ending it."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


def no_core_dumps() -> None:
    """A byokctl process holds decrypted API keys in memory: never let it leave a core file
    (whatever `ulimit -c` says), nor be dumped or ptrace-attached by other processes of the
    same user (Linux PR_SET_DUMPABLE, as ssh-agent does). Best effort, about a millisecond."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):  # not on this OS
        pass
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE, 0
        except (OSError, AttributeError):
            pass


def exit_status(exc: SystemExit) -> int:
    """The status `sys.exit(value)` asks for, as the interpreter would compute it."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")
    return 1


def hard_exit(code: int) -> NoReturn:
    """End the process now, skipping the interpreter's teardown.

    Unloading every module at exit costs ~10 ms after an ordinary command and ~100 ms after
    `ask` (the SDKs bring some 1,500 modules): more than byokctl's own work. Nothing is lost by
    skipping it: each command commits and closes the vault itself, files are written and closed
    where they are written, and the only buffers left are the standard streams, flushed here.
    A stream that is gone (`byokctl ... | head -1`) is no error: the reader has what it wanted.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with the descriptor closed (`>&-`)
            continue
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, or a closed stream
            stream.flush()
    os._exit(code)
