"""The `byokctl` command (and `python -m byokctl`).

A shell's TAB is answered here, before typer is imported, from the generated command tree
(byokctl.completion); everything else runs the typer app in byokctl.cli.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    instruction = os.environ.get("_BYOKCTL_COMPLETE")
    if instruction:
        from byokctl.completion import complete

        code = complete(instruction)
        if code is not None:
            sys.exit(code)
    from byokctl.cli import main as run

    run()


if __name__ == "__main__":
    main()
