"""Start-up: byokctl's own plain `str`/`int`/`float` parameters coerced without pydantic.

typer 0.29 validates every non-flag parameter through a pydantic `TypeAdapter`, which costs
about 60-90 ms per process (the pydantic import plus one schema build per parameter) -- more
than the rest of a command like `org list`. So each command class of byokctl's (`FastCommand`,
`LazyGroup`) is given, in place of each of its plain-scalar parameters, a copy built with the
public constructor of `FastOption` or `FastArgument`: subclasses of typer's own `TyperOption`
and `TyperArgument` whose `get_runtime_param()` returns byokctl's scalar coercer. Nothing of
typer's is assigned, wrapped or replaced, so another Typer app in the same process is untouched
(tests/attacks/test_attack_dependency_patching.py).

A copy is kept only when it is, attribute for attribute, the parameter typer built (`vars()`
equal, callables present alike); otherwise typer's own parameter stays, and runs typer's own
coercion. Choices, ranges, paths, files, lists, custom parsers, flags: typer's own machinery.
Should a typer release build its parameters differently, or stop asking `get_runtime_param()`,
byokctl stays correct and only slower, and tests/cli/test_fastparams.py says so.
"""

from __future__ import annotations

import math
import re
import types
from collections.abc import Iterable
from typing import Any, Union, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperOption
from typer.main import get_param_completion

_NAMES = {int: "integer", float: "number", str: "text", bool: "boolean"}
_BOOLS = {"1": True, "true": True, "t": True, "yes": True, "y": True, "on": True, "0": False,
          "false": False, "f": False, "no": False, "n": False, "off": False, "": False}  # pydantic's
# Text parameters that may hold bytes that are not UTF-8: file system paths, which the OS takes
# as bytes. Any other text ends up in the vault (SQLite) or a provider's JSON, neither of which
# can carry the surrogate escapes Linux decodes such bytes into.
_BYTES_OK = {"db", "file", "keep"}
_WHOLE = re.compile(r"\s*([+-]?[0-9_]+)\.0+\s*")


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
        out: Any = None
        if kind is bool:
            out = _BOOLS.get(str(value).strip().lower())
        elif not isinstance(value, str) or value.isascii():  # int() reads any script's digits
            if kind is int and isinstance(value, str) and (whole := _WHOLE.fullmatch(value)):
                value = whole[1]  # "3.0" is 3, as typer's own coercion has it
            try:
                out = kind(value)
            except (TypeError, ValueError):
                out = None
        if out is None or (kind is float and not math.isfinite(out)):
            raise typer.BadParameter(f"'{value}' is not a valid {_NAMES[kind]}", ctx=ctx, param=param)
        return out


_COERCERS = {kind: Scalar(kind) for kind in _NAMES}


class FastOption(TyperOption):
    """A plain-scalar option of byokctl's, coerced by `Scalar` (see the module's docstring)."""

    def get_runtime_param(self) -> Any:
        return _COERCERS[_plain(self)]


class FastArgument(TyperArgument):
    """A plain-scalar argument of byokctl's, coerced by `Scalar` (see the module's docstring)."""

    def get_runtime_param(self) -> Any:
        return _COERCERS[_plain(self)]


def _plain(param: Any) -> type | None:
    """The scalar kind of a typer parameter that typer would coerce with a pydantic adapter and
    byokctl can coerce itself; None for anything else."""
    d = getattr(param, "type_descriptor", None)
    if d is None:
        return None  # not a typer parameter
    info = d.parameter_info
    if (d.is_choice or d.is_ranged or d.is_file or d.is_path or d.is_list or d.is_tuple
            or getattr(info, "parser", None) is not None or param.multiple or param.nargs != 1):
        return None
    return _scalar(d.annotation)


def _same(copy: Any, original: Any) -> bool:
    """Whether `copy` holds exactly what `original` holds: the same attributes, equal values,
    and a callable wherever the original has one (typer wraps completion callbacks anew)."""
    a, b = vars(copy), vars(original)
    if a.keys() != b.keys():
        return False
    for name, value in b.items():
        other = a[name]
        if callable(value) and not isinstance(value, type):
            if not callable(other):
                return False
        elif other != value:
            return False
    return True


def _copy(param: Any) -> Any:
    """`param` rebuilt as a FastOption or FastArgument, or `param` itself when it is not a
    plain scalar or cannot be rebuilt exactly."""
    if (_plain(param) is None or type(param) not in (TyperOption, TyperArgument)
            or param.secondary_opts):  # an on/off flag pair: always a bool, never coerced
        return param
    info = param.type_descriptor.parameter_info
    common = dict(
        param_decls=[param.name, *param.opts] if isinstance(param, TyperOption) else [param.name],
        type_descriptor=param.type_descriptor, required=param.required, default=param.default,
        callback=param.callback, metavar=param.metavar, expose_value=param.expose_value,
        is_eager=param.is_eager, envvar=param.envvar, shell_complete=info.shell_complete,
        autocompletion=get_param_completion(info.autocompletion), show_default=param.show_default,
        show_choices=param.show_choices, show_envvar=param.show_envvar, help=param.help,
        hidden=param.hidden, min=param.min, max=param.max, rich_help_panel=param.rich_help_panel)
    try:
        if isinstance(param, TyperOption):
            copy: Any = FastOption(
                **common, prompt=param.prompt, confirmation_prompt=param.confirmation_prompt,
                prompt_required=param.prompt_required, hide_input=param.hide_input,
                is_flag=param.is_flag, multiple=param.multiple, count=param.count,
                allow_from_autoenv=param.allow_from_autoenv)
        else:
            copy = FastArgument(**common)
    except TypeError:  # a typer whose constructors take other arguments
        return param
    return copy if _same(copy, param) else param


def fast(params: Iterable[Any] | None) -> list[Any]:
    """`params` (a command's, as typer built them) with each plain scalar rebuilt to skip
    pydantic; the others as they are."""
    return [_copy(param) for param in params or ()]


class Copies:
    """One command's fast copies of the parameters it was given after it was built (its help
    option, the root's completion options), made once: click tells eager options apart by
    identity, so each must be the same object every time it is asked for."""

    def __init__(self) -> None:
        self.made: dict[int, tuple[Any, Any]] = {}  # id(original) -> (original, copy)

    def of(self, params: Iterable[Any]) -> list[Any]:
        """`params` with each plain scalar replaced by its one fast copy."""
        out = []
        for param in params:
            pair = self.made.get(id(param))
            if pair is None or pair[0] is not param:
                pair = self.made[id(param)] = (param, _copy(param))
            out.append(pair[1])
        return out
