"""Start-up: byokctl's own plain `str`/`int`/`float`/`bool` parameters coerced without pydantic.

typer 0.29 validates every non-flag parameter through a pydantic `TypeAdapter`, which costs
about 60 ms per process (the pydantic import plus one schema build per parameter) -- more than
the rest of a command like `org list` -- and offers no public way to coerce a parameter
otherwise. byokctl's parameters are plain scalars, so `adopt()` gives each of byokctl's own
parameter objects, once built, its coercer (the one private name left: the instance's
`_runtime_param`, which typer fills lazily). Nothing of typer's modules or classes is changed,
so another Typer app in the same process is untouched (tests/attacks/test_attack_dependency_patching.py).
Anything else (choices, ranges, paths, files, lists, custom parsers) still goes through typer's
own machinery; should typer's internals change, `adopt()` leaves the parameters alone and
tests/cli/test_cli_registry.py notices (pydantic loads again).
"""

from __future__ import annotations

import math
import types
from collections.abc import Iterable
from typing import Any, Union, get_args, get_origin

import typer

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


class Scalar:
    """Coerces one parameter's value to `kind`, with Click-style errors (typer's coercion
    contract: `coerce(value, param, ctx)`, None staying None)."""

    __slots__ = ("kind",)

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = self.kind
        if value is None:
            return None
        if type(value) is kind:
            if kind is str and getattr(param, "name", None) not in _BYTES_OK:
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError:
                    raise typer.BadParameter("not valid UTF-8 text (check the terminal's locale)",
                                             ctx=ctx, param=param) from None
            return value
        try:
            out = _BOOLS.get(str(value).lower()) if kind is bool else kind(value)
        except (TypeError, ValueError):
            out = None
        if out is None or (kind is float and not math.isfinite(out)):
            raise typer.BadParameter(f"'{value}' is not a valid {_NAMES[kind]}", ctx=ctx, param=param)
        return out


_COERCERS = {kind: Scalar(kind) for kind in _NAMES}


def adopt(params: Iterable[Any]) -> None:
    """Give each plain-scalar parameter among `params` (byokctl's own, just built) its coercer."""
    for param in params:
        d = getattr(param, "type_descriptor", None)
        if d is None or getattr(param, "_runtime_param", False) is not None:
            continue  # not a typer parameter, or typer no longer works this way
        kind = _scalar(d.annotation)
        info = d.parameter_info
        plain = not (d.is_choice or d.is_ranged or d.is_file or d.is_path or d.is_list
                     or d.is_tuple or getattr(info, "parser", None)
                     or getattr(info, "click_type", None) or param.multiple or param.nargs != 1)
        if kind is not None and plain:
            param._runtime_param = _COERCERS[kind]
