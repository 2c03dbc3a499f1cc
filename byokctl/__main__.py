"""The `byokctl` command (and `python -m byokctl`).

A shell's TAB is answered here, before typer is imported, from the generated command tree
(byokctl.completion); everything else runs the typer app in byokctl.cli. Either way the process
then ends without the interpreter's teardown (`hard_exit`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import NoReturn


def main() -> NoReturn:
    instruction = os.environ.get("_BYOKCTL_COMPLETE")
    if instruction:
        from byokctl.completion import complete

        code = complete(instruction)
        if code is not None:
            hard_exit(code)
    from byokctl.cli import main as run

    try:
        run()
        code = 0
    except SystemExit as exc:
        code = exit_status(exc)
    hard_exit(code)


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
        with contextlib.suppress(OSError, ValueError):  # a closed pipe, or a closed stream
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
