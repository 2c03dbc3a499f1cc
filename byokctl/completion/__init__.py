"""Shell completion without loading typer: answers a TAB in a third of a `byokctl` start-up.

The shell scripts in completions/ speak typer's protocol (`_BYOKCTL_COMPLETE=complete_bash` and
`COMP_WORDS`/`COMP_CWORD`, or `_TYPER_COMPLETE_ARGS` for zsh and fish). Answering through typer
means importing it and building every command's parameters, on every TAB. This module gives the
same answers from `tree.py`, the command tree as plain data (generated from the real commands by
`python -m tools.docs`, checked for staleness by the tests), following Click's own
completion steps: parse the words resiliently command by command, find what the incomplete word
is (an option name, an option's value, an argument, a sub-command), and offer what fits.
tests/cli/test_completion.py compares the answers with typer's for every command and many partial
command lines.

`complete(instruction)` returns None for what it does not handle (other shells);
the caller then runs the typer app, which handles those.
"""

from __future__ import annotations

import os
import sys
from typing import Any

SHELLS = ("bash", "zsh", "fish")
Item = tuple[str, str | None]  # a completion: its value, and its description (or None)
Node = dict[str, Any]


def split_words(line: str) -> list[str]:
    """Words as the shell would split them, keeping an unfinished quote or escape as typed so
    far (Click's `split_arg_string`)."""
    import shlex

    lex = shlex.shlex(line, posix=True)
    lex.whitespace_split = True
    lex.commenters = ""
    out: list[str] = []
    try:
        out.extend(lex)
    except ValueError:
        out.append(lex.token)
    return out


class Context:
    """One command's parse: the parameters given on the command line, their values, and the
    words left for a sub-command."""

    def __init__(self, node: Node, args: list[str], parent: Context | None = None) -> None:
        self.node = node
        self.parent = parent
        self.given: dict[str, Any] = {}
        self.rest: list[str] = []
        self._parse(list(args))

    def root(self) -> Context:
        return self if self.parent is None else self.parent.root()

    def db(self) -> str | None:
        """The `--db` given, the command's own (after the subcommand) over the root's."""
        if "db" in self.given:
            return self.given["db"]
        return None if self.parent is None else self.parent.db()

    def _parse(self, rargs: list[str]) -> None:
        """Click's parser in resilient mode: a usage error ends parsing, keeping what was read."""
        params = self.node["params"]
        names = {o: p for p in params if "opts" in p for o in (*p["opts"], *_secondary(p))}
        longs = {o: p for o, p in names.items() if len(o) > 2}
        shorts = {o: p for o, p in names.items() if len(o) == 2}
        largs: list[str] = []
        try:
            while rargs:
                arg = rargs.pop(0)
                if arg == "--":
                    break
                if arg[:1] == "-" and len(arg) > 1:
                    self._option(arg, rargs, largs, longs, shorts)
                elif self.node["interspersed"]:
                    largs.append(arg)
                else:
                    rargs.insert(0, arg)
                    break
            words = largs + rargs
            for param in params:  # each argument takes one word (the tree has no others)
                if param.get("argument") and words:
                    self.given[param["name"]] = words.pop(0)
            largs = words
        except _Stop:
            pass
        self.rest = largs

    def _option(self, arg: str, rargs: list[str], largs: list[str], longs: dict[str, Node],
                shorts: dict[str, Node]) -> None:
        """One word that looks like an option; an unknown one ends parsing, or with
        `ignore_unknown_options` stays a plain word (with a short cluster's unknown letters)."""
        ignore = self.node.get("ignore_unknown_options", False)
        name, eq, explicit = arg.partition("=")
        param = longs.get(name)
        if param is None:
            if arg[:2] == "--":
                if not ignore:
                    raise _Stop  # no such option
                largs.append(arg)
                return
            unknown = ""
            for i, ch in enumerate(arg[1:], start=2):
                param = shorts.get(f"-{ch}")
                if param is None:
                    if not ignore:
                        raise _Stop
                    unknown += ch
                    continue
                if _takes_value(param):
                    if i < len(arg):
                        rargs.insert(0, arg[i:])
                    self._store(param, self._value(rargs))
                    break
                self._store(param, True)
            if unknown:
                largs.append(f"-{unknown}")
            return
        if _takes_value(param):
            if eq:
                rargs.insert(0, explicit)
            self._store(param, self._value(rargs))
        elif eq:
            raise _Stop  # a flag given a value
        else:
            self._store(param, True)

    @staticmethod
    def _value(rargs: list[str]) -> str:
        if not rargs:
            raise _Stop  # an option missing its value
        return rargs.pop(0)

    def _store(self, param: Node, value: Any) -> None:
        if param.get("multiple"):
            self.given.setdefault(param["name"], []).append(value)
        else:
            self.given[param["name"]] = value


def _takes_value(param: Node) -> bool:
    return "opts" in param and not param.get("flag")


def _secondary(param: Node) -> list[str]:
    return param.get("secondary_opts", [])


class _Stop(Exception):
    """A usage error: resilient parsing stops there."""


def resolve(tree: Node, args: list[str]) -> Context:
    """The context of the innermost command the complete words name."""
    ctx = Context(tree, args)
    rest = ctx.rest
    while rest and "commands" in ctx.node:
        sub = next((n for name, _, _, n in ctx.node["commands"] if name == rest[0]), None)
        if sub is None:
            break
        ctx = Context(sub, rest[1:], parent=ctx)
        rest = ctx.rest
    return ctx


def completions(tree: Node, args: list[str], incomplete: str) -> list[Item]:
    """What completes `incomplete` after the complete words `args` (Click's `get_completions`)."""
    ctx = resolve(tree, args)
    args = list(args)
    if incomplete == "=":
        incomplete = ""
    elif "=" in incomplete and incomplete[:1] == "-":
        name, _, incomplete = incomplete.partition("=")
        args.append(name)
    if "--" not in args and incomplete[:1] == "-":
        return _command_items(ctx, incomplete)
    params = ctx.node["params"]
    last = args[-1] if args else ""
    for param in params:
        if _takes_value(param) and last[:1] == "-" and last in param["opts"]:
            return _value_items(ctx, param, incomplete)
    for param in params:
        if param.get("argument") and param["name"] not in ctx.given:
            return _value_items(ctx, param, incomplete)
    return _command_items(ctx, incomplete)


def _command_items(ctx: Context, incomplete: str) -> list[Item]:
    items: list[Item] = [(name, short) for name, short, hidden, _ in ctx.node.get("commands", ())
                         if name.startswith(incomplete) and not hidden]
    if incomplete and not incomplete[0].isalnum():
        for param in ctx.node["params"]:
            if ("opts" not in param or param.get("hidden")
                    or (not param.get("multiple") and param["name"] in ctx.given)):
                continue
            items += [(opt, param.get("help")) for opt in (*param["opts"], *_secondary(param))
                      if opt.startswith(incomplete)]
    return items


def _value_items(ctx: Context, param: Node, incomplete: str) -> list[Item]:
    if "values" not in param:
        return []
    from byokctl.completion.values import SOURCES

    db = ctx.db()
    return [(value, help_) for value, help_ in SOURCES[param["values"]](db, incomplete)
            if value.startswith(incomplete)]


# -- the shells' side of the protocol (typer's formats) -----------------------------------------

def _zsh_escape(text: str) -> str:
    return (text.replace('"', '""').replace("'", "''").replace("$", "\\$").replace("`", "\\`")
            .replace(":", r"\\:"))


def _plain(text: str) -> str:
    return " ".join(text.split())


def answer(shell: str, environ: Any) -> tuple[str | None, int]:
    """The text to print for one TAB (None: print nothing) and the exit status."""
    from byokctl.completion.tree import TREE

    if shell == "bash":
        words = split_words(environ.get("COMP_WORDS", ""))
        cword = int(environ.get("COMP_CWORD", "0"))
        args, incomplete = words[1:cword], (words[cword] if cword < len(words) else "")
    else:
        line = environ.get("_TYPER_COMPLETE_ARGS", "")
        args = split_words(line)[1:]
        incomplete = ""
        if args and not line.endswith(" "):
            incomplete = args.pop()
    items = completions(TREE, args, incomplete)
    if shell == "bash":
        return "\n".join(value for value, _ in items), 0
    if shell == "zsh":
        if not items:
            return "_files", 0
        specs = "\n".join(f'"{_zsh_escape(v)}":"{_plain(_zsh_escape(h))}"' if h
                          else f'"{_zsh_escape(v)}"' for v, h in items)
        return f"_arguments '*: :(({specs}))'", 0
    action = environ.get("_TYPER_COMPLETE_FISH_ACTION", "")
    if action == "is-args":
        return None, 0 if items else 1
    if action == "get-args" and items:
        return "\n".join(f"{v}\t{_plain(h)}" if h else v for v, h in items), 0
    return "", 0


def complete(instruction: str, environ: Any = os.environ) -> int | None:
    """Answer `complete_<shell>` for bash, zsh and fish: print the completions, return the exit
    status; `source_<shell>` prints that shell's script. None for any other instruction."""
    verb, _, shell = instruction.partition("_")
    if verb == "source" and shell in SHELLS:  # the script itself, as typer would print it
        from byokctl.completion.scripts import SCRIPTS

        sys.stdout.write(SCRIPTS[shell] + "\n")
        return 0
    if verb != "complete" or shell not in SHELLS:
        return None
    try:
        text, code = answer(shell, environ)
    except Exception:  # noqa: BLE001 - never print an error into the user's prompt
        return 0
    if text is not None:
        sys.stdout.write(text + "\n")
    return code
