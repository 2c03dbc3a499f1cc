"""The `byokctl` command (and `python -m byokctl`).

A shell's TAB is answered here, before typer is imported, from the generated command tree
(byokctl.completion); everything else runs the typer app in byokctl.cli. Either way the process
then ends through the interpreter's normal exit (`finish`).
"""

from __future__ import annotations

import os
from typing import NoReturn

from byokctl.process import exit_status, finish, no_core_dumps


def main() -> NoReturn:
    no_core_dumps()
    instruction = os.environ.get("_BYOKCTL_COMPLETE")
    if instruction:
        from byokctl.completion import complete

        code = complete(instruction)
        if code is not None:
            finish(code)
    from byokctl.cli import app

    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exit_status(exc)
    finish(code)


if __name__ == "__main__":
    main()
