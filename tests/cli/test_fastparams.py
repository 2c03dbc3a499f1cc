"""byokctl's plain parameters skip typer's pydantic coercion (byokctl/cli/_fastparams.py) through
typer's public classes: each is a copy, built with the public constructor of a subclass of
typer's TyperOption or TyperArgument, of the parameter typer built. These tests say when a
typer release stops allowing that (the copies are no longer made, or no longer equal), and
that the copies behave as typer's own parameters do."""

import math

import pytest
import typer
from typer import Context
from typer.core import TyperArgument, TyperOption
from typer.main import get_command

from byokctl.cli import COMMANDS, _fastparams, _root_options, app, load_module_commands


def _walk(command, path=()):
    """Every command and group under `command`, built, with its path."""
    yield path, command
    if hasattr(command, "list_commands"):
        for name in command.list_commands(None):
            yield from _walk(command.get_command(None, name), (*path, name))


def _byokctl_commands():
    root = get_command(app)
    yield from _walk(root)


def test_every_plain_parameter_of_byokctl_is_a_fast_copy():
    """If typer changes how it builds parameters so that a copy is no longer exact, byokctl falls
    back to typer's own (pydantic) parameters and this test names them."""
    typers, fast = [], 0
    for path, command in _byokctl_commands():
        ctx = Context(command, info_name=path[-1] if path else "byokctl")
        for param in command.get_params(ctx):  # with the help option and the completion options
            if isinstance(param, (_fastparams.FastOption, _fastparams.FastArgument)):
                fast += 1
            elif _fastparams._plain(param) is not None and not param.secondary_opts:
                typers.append(f"{' '.join(path)} {param.name}")
    assert typers == []
    assert fast > 100


def test_copies_ask_the_same_object_each_time():
    """click orders eager options (--help, --version) by identity: the copy of a command's help
    option must be one object however often the command is asked for its parameters."""
    root = get_command(app)
    ctx = Context(root, info_name="byokctl")
    first, second = root.get_params(ctx), root.get_params(ctx)
    assert [id(p) for p in first] == [id(p) for p in second]
    assert any(p.name == "help" and isinstance(p, _fastparams.FastOption) for p in first)


@pytest.mark.parametrize("module", sorted({m for m, _ in COMMANDS.values()}))
def test_help_is_the_same_as_with_typers_own_parameters(module):
    """Every command's --help, built by byokctl (fast copies) and by typer itself (plain
    TyperCommand, TyperOption...), is the same text: the copies carry everything typer put in."""
    from importlib import import_module

    holder = typer.Typer(rich_markup_mode=None, add_completion=False)
    import_module(f"byokctl.cli.{module}").register(holder)
    theirs = get_command(holder)
    ours = load_module_commands(module)
    if not isinstance(theirs, typer.core.TyperGroup):  # a module with one command
        theirs = typer.core.TyperGroup(name="x", commands={theirs.name: theirs})
    compared = 0
    for name, command in ours.items():
        for path, mine in _walk(command, (name,)):
            other = theirs
            for part in path:
                other = other.get_command(None, part)
            assert type(other).get_params is not type(mine).get_params or other is mine
            if not hasattr(other, "list_commands"):  # a FastCommand takes the root's options too
                other.params.extend(_root_options())
            a = mine.get_help(Context(mine, info_name=path[-1]))
            b = other.get_help(Context(other, info_name=path[-1]))
            assert a == b, " ".join(path)
            compared += 1
    assert compared >= 1


def _pair(annotation):
    """A parameter typer built for `annotation` (as an option and as an argument), and its fast
    copy."""
    extra = typer.Typer()

    @extra.command()
    def run(value: annotation, opt: annotation = None) -> None:  # type: ignore[valid-type]
        pass

    @extra.command()
    def other() -> None:
        pass

    command = get_command(extra).commands["run"]
    pairs = []
    for param in command.params:
        copy = _fastparams._copy(param)
        if param.secondary_opts:  # an on/off flag (bool options): always a bool, left to typer
            assert copy is param
            continue
        assert copy is not param and type(copy).__mro__[1] is type(param)
        pairs.append((param, copy))
    return Context(command), pairs


def _result(param, value, ctx):
    try:
        return "ok", param.get_runtime_param().coerce(value, param, ctx)
    except typer.BadParameter:
        return ("error",)


NUMBERS = ["3", "-7", "+2", " 4 ", "\t5\n", "00012", "1_000", "_1", "1__0", "x", "", "  ", "2.5",
           "3.0", "3.00", "+3.0", "3.", ".5", "5.", "1e3", "1E2", "0x10", "0b1", "1_0.5", "-0"]
# Digits of other scripts: Python's int() and float() read them, typer's coercion does not.
OTHER_DIGITS = ["١٢", "९", "１２"]


@pytest.mark.parametrize("annotation", [int, float, int | None, float | None], ids=str)
def test_numbers_coerce_as_typer_coerces_them(annotation):
    ctx, pairs = _pair(annotation)
    for theirs, ours in pairs:
        for value in NUMBERS + OTHER_DIGITS + [None]:
            assert _result(ours, value, ctx) == _result(theirs, value, ctx), (theirs.name, value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "Infinity"])
def test_a_float_is_finite_unlike_typers_own(value):
    """The one deliberate difference for numbers: typer takes nan and inf, which no amount,
    price or budget can be."""
    ctx, pairs = _pair(float)
    for theirs, ours in pairs:
        kind, number = _result(theirs, value, ctx)
        assert kind == "ok" and not math.isfinite(number)
        assert _result(ours, value, ctx) == ("error",)


def test_text_coerces_as_typer_coerces_it_but_refuses_undecodable_bytes():
    ctx, pairs = _pair(str)
    for theirs, ours in pairs:
        for value in ["acme", " spaced ", "", "ünïcode", "a\nb", None]:
            assert _result(ours, value, ctx) == _result(theirs, value, ctx), value
        # bytes that are not UTF-8 arrive as surrogate escapes: typer passes them on, to end in
        # the vault or a provider's JSON, neither of which can carry them
        assert _result(theirs, "caf\udce9", ctx)[0] == "ok"
        assert _result(ours, "caf\udce9", ctx) == ("error",)


def test_bools_from_text_coerce_as_typer_coerces_them():
    """A flag's value arrives as a bool; text comes only from an environment variable."""
    ctx, pairs = _pair(bool)
    assert [theirs.name for theirs, _ in pairs] == ["value"]  # an argument of type bool
    for theirs, ours in pairs:
        for value in ["1", "0", "true", "False", " yes ", "n", "on", "OFF", "t", "", "maybe", "2",
                      None, True, False]:
            assert _result(ours, value, ctx) == _result(theirs, value, ctx), value


def test_a_parameter_that_cannot_be_copied_exactly_stays_typers():
    """Whatever a copy would not carry (here an attribute typer's constructor never sets), the
    parameter is left as typer built it, and runs typer's own coercion."""
    ctx, pairs = _pair(int)
    theirs, _ = pairs[0]
    theirs.something_new = 1
    assert _fastparams._copy(theirs) is theirs


def test_choices_paths_and_lists_stay_typers():
    from enum import StrEnum
    from pathlib import Path

    class Colour(StrEnum):
        red = "red"

    extra = typer.Typer()

    @extra.command()
    def run(c: Colour = Colour.red, p: Path = Path("."), xs: list[str] = [],  # noqa: B006
            n: int = typer.Option(1, min=0)) -> None:
        pass

    @extra.command()
    def other() -> None:
        pass

    command = get_command(extra).commands["run"]
    assert all(_fastparams._copy(p) is p for p in command.params)
    assert all(type(p) in (TyperOption, TyperArgument) for p in command.params)
