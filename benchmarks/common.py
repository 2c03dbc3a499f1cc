"""What the benchmark scripts share: which `byokctl` to run, and running it as installed."""

from __future__ import annotations

import compileall
import importlib.util
import shutil
import sys
from pathlib import Path


def byokctl() -> list[str]:
    """The `byokctl` installed beside this Python, else `python -m byokctl`."""
    exe = shutil.which("byokctl", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "byokctl"]


def compile_bytecode() -> None:
    """Compile byokctl's modules to bytecode, as `pip install` does for an installed package.

    An editable install (a checkout) gets its .pyc files written on first use, unless
    PYTHONDONTWRITEBYTECODE is set or the checkout is read-only: then every process compiles
    every module it imports again, a cost no installed byokctl pays (typer's and the SDKs'
    bytecode was compiled when they were installed), and the start-up numbers would measure
    Python's compiler. Best effort: a read-only tree is measured as it is."""
    spec = importlib.util.find_spec("byokctl")
    for location in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(location, quiet=1)
