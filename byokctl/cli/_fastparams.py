"""Start-up: coerce plain `str`/`int`/`float`/`bool` parameters without pydantic.

typer 0.29 validates every non-flag parameter through a pydantic `TypeAdapter`, which costs
about 60 ms per process (the pydantic import plus one schema build per parameter) -- more than
the rest of a command like `org list`. byokctl's parameters are plain scalars, so those are
coerced here directly, with Click-style errors; anything else (choices, ranges, paths, files,
lists, custom parsers) still goes through typer's own machinery. If typer's internals change,
`install()` leaves typer alone, and tests/test_cli_registry.py notices (pydantic loads again).
"""

from __future__ import annotations

import math
import types
from typing import Any, Union, get_args, get_origin

_NAMES = {int: "integer", float: "number", str: "text", bool: "boolean"}
_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}
# Text parameters that may hold bytes that are not UTF-8: file system paths, which the OS takes
# as bytes. Any other text ends up in the vault (SQLite) or a provider's JSON, neither of which
# can carry the surrogate escapes Linux decodes such bytes into.
_BYTES_OK = {"db", "file", "keep"}


def _scalar(annotation: Any) -> type | None:
    """`str`, `int`, `float` or `bool`, also inside `X | None`; None for anything else."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        annotation = args[0]
    return annotation if annotation in _NAMES else None


def install() -> bool:
    try:
        from typer import _coercion, core
        from typer._click.exceptions import BadParameter

        base = _coercion.RuntimeParam
        original = core._TyperParameter.get_runtime_param
    except (ImportError, AttributeError):
        return False

    class ScalarParam(base):  # type: ignore[valid-type, misc]
        """A RuntimeParam for one scalar type (`kind`, set by the subclasses below). Plain
        subclasses of typer's dataclass: a dataclass of our own costs ~0.5 ms per process."""

        kind: type = str

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            kind = self.kind
            if type(value) is kind:
                if kind is str and getattr(param, "name", None) not in _BYTES_OK:
                    try:
                        value.encode("utf-8")
                    except UnicodeEncodeError:
                        raise BadParameter("not valid UTF-8 text (check the terminal's locale)",
                                           ctx=ctx, param=param) from None
                return value
            try:
                out = _BOOLS.get(str(value).lower()) if kind is bool else kind(value)
            except (TypeError, ValueError):
                out = None
            if out is None or (kind is float and not math.isfinite(out)):
                raise BadParameter(f"'{value}' is not a valid {_NAMES[kind]}", ctx=ctx, param=param)
            return out

    params = {kind: type(f"{kind.__name__.title()}Param", (ScalarParam,), {"kind": kind})
              for kind in _NAMES}

    def get_runtime_param(self: Any) -> Any:
        if self._runtime_param is None:
            d = self.type_descriptor
            kind = _scalar(d.annotation)
            info = d.parameter_info
            plain = not (d.is_choice or d.is_ranged or d.is_file or d.is_path or d.is_list
                         or d.is_tuple or getattr(info, "parser", None)
                         or getattr(info, "click_type", None))
            if kind is not None and plain:
                self._runtime_param = params[kind](parameter_info=info, annotation=d.annotation)
        return original(self)

    core._TyperParameter.get_runtime_param = get_runtime_param
    return True
