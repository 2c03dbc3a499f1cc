"""Generate the man page and the shell-completion scripts from the command tree.

Not a command module and never imported by `byokctl` itself. Regenerate after changing any
command or its help, from the checkout:

    python -m tools.docs            # writes man/byokctl.1, completions/* and the tree
                                          # byokctl/completion/tree.py
    python -m tools.docs --check    # exits 1 naming the files that are stale

tests/cli/test_docs.py and tests/cli/test_completion.py fail while a committed file is stale.
"""

from __future__ import annotations

import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from byokctl import __version__
from byokctl.errors import exit_statuses

PROG = "byokctl"
COMPLETE_VAR = "_BYOKCTL_COMPLETE"
# Laid out as the wheel installs them under share/ (pyproject's data-files): one directory per
# shell, each file under the name its shell looks for.
SHELLS = {"bash": "completions/bash/byokctl", "zsh": "completions/zsh/_byokctl",
          "fish": "completions/fish/byokctl.fish"}
MAN_PAGE = "man/byokctl.1"
TREE = "byokctl/completion/tree.py"
EXAMPLE = re.compile(r"^Example:\s*(.+)$")

def completion_script(shell: str) -> str:
    """The script `byokctl --show-completion` prints under `shell` (byokctl.completion.scripts)."""
    from byokctl.completion.scripts import SCRIPTS

    return SCRIPTS[shell].rstrip("\n") + "\n"


# -- the command tree ---------------------------------------------------------------------------

@dataclass
class Node:
    path: list[str]  # ["byokctl", "org", "create"]
    command: Any  # a click command or group
    ctx: Any  # its click context

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "list_commands")

    @property
    def help(self) -> str:
        return inspect.cleandoc(self.command.help or "")

    def examples(self) -> list[str]:
        return [m.group(1).strip() for line in self.help.splitlines()
                if (m := EXAMPLE.match(line.strip()))]


def walk() -> Iterator[Node]:
    """The root, then every group and command depth-first in `--help` order, lazily loaded
    modules included (ByokGroup.get_command imports them)."""
    from typer import Context
    from typer.main import get_command

    from byokctl.cli import app

    def visit(node: Node) -> Iterator[Node]:
        yield node
        if node.is_group:
            for name in node.command.list_commands(node.ctx):
                sub = node.command.get_command(node.ctx, name)
                if sub is None or sub.hidden:
                    continue
                ctx = Context(sub, info_name=name, parent=node.ctx)
                yield from visit(Node([*node.path, name], sub, ctx))

    root = get_command(app)
    yield from visit(Node([PROG], root, Context(root, info_name=PROG)))


# -- roff ---------------------------------------------------------------------------------------

def roff(text: str) -> str:
    """Text for a roff line: backslashes and hyphens escaped (so commands copy as typed),
    anything beyond ASCII as a named glyph, no line starting with a control character."""
    out = text.replace("\\", "\\e").replace("-", "\\-")
    out = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in out)
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in out.split("\n"))


def paragraphs(help_text: str) -> Iterator[tuple[str, str]]:
    """("text", joined paragraph) | ("verbatim", lines) | ("example", command) from a help
    text, as Click reads it: a paragraph after a `\\b` line keeps its line breaks."""
    for block in re.split(r"\n\s*\n", help_text.strip()):
        lines = block.splitlines()
        verbatim = lines[0].strip() == "\b"
        lines = [line for line in lines if line.strip() != "\b"]
        if not lines:
            continue
        if all(EXAMPLE.match(line.strip()) for line in lines):
            for line in lines:
                yield "example", EXAMPLE.match(line.strip()).group(1).strip()  # type: ignore[union-attr]
        elif verbatim:
            yield "verbatim", "\n".join(lines)
        else:
            yield "text", " ".join(line.strip() for line in lines)


def _render_help(help_text: str, examples: bool = True) -> list[str]:
    out: list[str] = []
    for kind, body in paragraphs(help_text):
        if kind == "text":
            out += [".PP", roff(body)]
        elif kind == "verbatim":
            out += [".PP", ".nf", roff(body), ".fi"]
        elif examples:
            out += [".PP", "Example:", ".RS 4", ".nf", roff(body), ".fi", ".RE"]
    return out


def _examples(help_text: str) -> list[str]:
    return [line for kind, body in paragraphs(help_text) if kind == "example"
            for line in (".PP", "Example:", ".RS 4", ".nf", roff(body), ".fi", ".RE")]


def _params(node: Node) -> list[str]:
    out: list[str] = []
    for param in node.command.get_params(node.ctx):
        if getattr(param, "name", None) == "help":
            continue
        if len(node.path) > 1 and param.name in AFTER_THE_COMMAND:
            continue  # the root's, listed once under OPTIONS
        record = param.get_help_record(node.ctx)
        if record:
            names, text = record
            out += [".TP", f"\\fB{roff(names)}\\fR", roff(" ".join(text.split()) or "")]
    return out


# The root's options every command takes too (byokctl.cli.FastCommand): shown once, for the root.
AFTER_THE_COMMAND = ("db", "quiet")


def _usage(node: Node) -> str:
    pieces = node.command.collect_usage_pieces(node.ctx)
    return f".B {roff(node.name)}\n" + roff(" ".join(pieces))


def _summary(node: Node) -> str:
    """The first paragraph of a command's help: its one-line summary."""
    return next(paragraphs(node.help), ("text", ""))[1]


def _name_line(root: Node) -> str:
    """`Administer a ... vault.` as the NAME section wants it: `administer a ... vault`."""
    summary = _summary(root).rstrip(".")
    return summary[:1].lower() + summary[1:]


ENVIRONMENT = [
    ("BYOKCTL_MASTER_KEY", "The master key, base64 of 32 bytes, for CI and scripts. When set it "
     "is used before the OS keyring or a key file, and `init` creates a vault for it."),
    ("BYOKCTL_DB", "The vault file (as --db, which takes precedence)."),
    ("BYOKCTL_HOME", "The data directory; the vault is $BYOKCTL_HOME/vault.db unless --db or "
     "$BYOKCTL_DB say otherwise."),
    ("BYOKCTL_ACTOR", "The operator's name recorded in the audit log (default: the OS user "
     "name). A member acting with --as is recorded by email."),
    ("NO_COLOR", "When set (to anything), tables and messages are printed without colour; "
     "nothing else changes (tables keep their borders on a terminal)."),
    ("FORCE_COLOR", "When set to anything but the empty string, output that is not a terminal "
     "is styled as on one: colour (unless NO_COLOR) and bordered tables."),
    ("COLUMNS", "The terminal's width for tables. Ids, timestamps and hints are never wrapped or "
     "cut; other columns fold, or are left out (a line on stderr names them)."),
    ("BYOKCTL_DEBUG", "When set, an internal error (exit 1) also prints the exception's text. "
     "Never set it where the output is shared: the text may contain data from the vault."),
]

FILES = [
    ("~/.local/share/byokctl/vault.db", "The default vault on Linux (in the platform's user "
     "data directory elsewhere; $XDG_DATA_HOME is honoured): one SQLite file, mode 0600 in a "
     "0700 directory, with its vault.db-wal and vault.db-shm companions. The secrets in it are "
     "encrypted; it never holds the master key."),
    ("$BYOKCTL_HOME/vault.db", "The vault when $BYOKCTL_HOME is set."),
    ("PATH of init --master-key-file", "The master key file (mode 0600), for headless servers "
     "without a keyring. `vault rotate-master` stages the new key in PATH.next first."),
]

DESCRIPTION = [
    "byokctl is the administration plane of a bring-your-own-AI-key (BYOK) platform: "
    "organizations with plans, credits and budgets, their members and roles, the API keys they "
    "bring (Anthropic, OpenAI) or the platform's own, which provider and key each request "
    "resolves to, usage, and a tamper-evident audit log, all in a local encrypted vault.",
    "Secrets are read from a hidden prompt, from stdin or from an environment variable, never "
    "from the command line, and are never printed. The master key lives outside the vault: in "
    "$BYOKCTL_MASTER_KEY, the OS keyring (the default) or a key file. Commands that need no "
    "secret (listing orgs, keys, usage, the audit log) work without it.",
    "--db, --quiet and --json may be given before the command or after it. --quiet drops "
    "status lines on stderr (progress, summaries, the emulator's request log), never a "
    "command's data or its warnings and errors. "
    "Every command takes --json and then prints one JSON document on stdout. Messages and "
    "errors go to stderr; an error is one sentence that names the fix (with --json: "
    '{"error": {"code": ..., "message": ...}}) and sets the exit status below.',
]

COMPLETION = [
    ("bash", "Write the script where bash-completion finds it (or source it from ~/.bashrc):",
     "mkdir -p ~/.local/share/bash-completion/completions\n"
     "byokctl completion bash > ~/.local/share/bash-completion/completions/byokctl"),
    ("zsh", "Write the script to a directory in $fpath, set before compinit in ~/.zshrc:",
     "mkdir -p ~/.zfunc && byokctl completion zsh > ~/.zfunc/_byokctl\n"
     "# ~/.zshrc: fpath=(~/.zfunc $fpath); autoload -Uz compinit && compinit"),
    ("fish", "Write the script to fish's completions directory:",
     "byokctl completion fish > ~/.config/fish/completions/byokctl.fish"),
]


def man_page() -> str:
    nodes = list(walk())
    root = nodes[0]
    out = [
        f'.\\" Generated by `python -m tools.docs` from byokctl {__version__}; do not edit.',
        f'.TH BYOKCTL 1 "" "byokctl {__version__}" "User Commands"',
        ".nh",  # command lines and option names must not be hyphenated
        ".ad l",
        ".SH NAME",
        f"byokctl \\- {roff(_name_line(root))}",
        ".SH SYNOPSIS",
        f".B {PROG}",
        roff("[--db PATH] [--quiet] [--json] COMMAND [ARGS]... [--db PATH] [--quiet] [--json]"),
        ".br",
        f".B {PROG}",
        roff("COMMAND --help"),
        ".SH DESCRIPTION",
    ]
    for text in DESCRIPTION:
        out += [".PP", roff(text)]
    out += [".SH OPTIONS", *_params(root), ".TP", "\\fB\\-h, \\-\\-help\\fR",
            "Show help for byokctl or any command, e.g. " + roff("byokctl org create --help.")]
    out += [".SH COMMANDS"]
    for node in nodes[1:]:
        if len(node.path) == 2:
            out += [f".SS {roff(node.path[1])}"]
            if node.is_group:
                out += _render_help(node.help)
        if node.is_group:
            continue
        out += [".PP", _usage(node), ".RS 4", *_render_help(node.help, examples=False),
                *_params(node), *_examples(node.help), ".RE"]
    out += [".SH EXIT STATUS"]
    for code, label, meaning in exit_statuses():
        out += [".TP", f"\\fB{code}\\fR {roff(label)}", roff(meaning or "Success.")]
    out += [".SH ENVIRONMENT"]
    for name, text in ENVIRONMENT:
        out += [".TP", f"\\fB{roff(name)}\\fR", roff(text)]
    out += [".SH FILES"]
    for name, text in FILES:
        out += [".TP", f"\\fI{roff(name)}\\fR", roff(text)]
    out += [".SH SHELL COMPLETION", ".PP",
            roff("Commands, options, org slugs and key ids complete on TAB; slugs and ids are "
                 "read from the vault (as --db, $BYOKCTL_DB or $BYOKCTL_HOME select it) "
                 "without the master key. A wheel installs the scripts where the shells look under its "
                 "prefix (share/bash-completion/completions, share/zsh/site-functions, "
                 "share/fish/vendor_completions.d); `byokctl completion SHELL` prints them:")]
    for shell, how, commands in COMPLETION:
        out += [".TP", f"\\fB{shell}\\fR", roff(how), ".nf", roff(commands), ".fi"]
    out += [".SH EXAMPLES"]
    for node in nodes:
        for example in node.examples():
            out += [".PP", roff(_summary(node)), ".RS 4", ".nf", roff(example), ".fi", ".RE"]
    out += [".SH SEE ALSO", ".PP", roff(f"byokctl COMMAND --help; the README of byokctl {__version__}.")]
    return "\n".join(out) + "\n"


# -- the completion tree ------------------------------------------------------------------------

def completion_tree() -> dict[str, Any]:
    """What shell completion needs of every command, as plain data: its parameters (how the
    parser treats them and what completes their values) and its sub-commands. Built through the
    same contexts Click's completion resolves (`make_context(..., resilient_parsing=True)`), so
    inherited settings such as `-h` come out as they do at a TAB."""
    from typer.main import get_command

    from byokctl.cli import app, complete
    from byokctl.completion import values

    sources = {getattr(complete, name): name for name in values.SOURCES}

    def source(param: Any) -> str | None:
        custom = param._custom_shell_complete
        desc = param.type_descriptor
        if desc.is_choice or desc.is_file:
            raise ValueError(f"{param.name}: choice and file parameters are not in "
                             "byokctl.completion yet; teach it before using them")
        if custom is None:
            return None
        named = [sources[fn] for fn in _wrapped(custom) if fn in sources]
        if len(named) != 1:
            raise ValueError(f"{param.name}: completes with a callback byokctl.completion "
                             "does not know; add it to byokctl.completion.values.SOURCES")
        return named[0]

    def describe(param: Any) -> dict[str, Any]:
        """A parameter with only what differs from the usual: an option taking one value."""
        if param.nargs != 1:
            raise ValueError(f"{param.name}: nargs={param.nargs} is not supported by "
                             "byokctl.completion")
        out: dict[str, Any] = {"name": param.name}
        if param.param_type_name == "option":
            out["opts"] = list(param.opts)
            if param.name == "help":  # Click builds these from a set: fix their order
                out["opts"].sort(key=lambda o: (len(o), o))
            flags = {"secondary_opts": list(param.secondary_opts),
                     "flag": bool(param.is_flag or param.count), "multiple": param.multiple,
                     "hidden": bool(param.hidden), "help": param.help}
            out.update((k, v) for k, v in flags.items() if v)
        else:
            out["argument"] = True
        if (values := source(param)) is not None:
            out["values"] = values
        return out

    def node(command: Any, ctx: Any) -> dict[str, Any]:
        if ctx.token_normalize_func is not None:
            raise ValueError(f"{ctx.command_path}: token_normalize_func is not followed by "
                             "byokctl.completion")
        out: dict[str, Any] = {"interspersed": ctx.allow_interspersed_args}
        if ctx.ignore_unknown_options:
            out["ignore_unknown_options"] = True
        out["params"] = [describe(p) for p in command.get_params(ctx)]
        if hasattr(command, "list_commands"):
            subs = []
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                sub_ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
                subs.append([name, sub.get_short_help_str(), bool(sub.hidden), node(sub, sub_ctx)])
            out["commands"] = subs
        return out

    root = get_command(app)
    return node(root, root.make_context(PROG, [], resilient_parsing=True))


def _wrapped(fn: Any, depth: int = 3) -> Iterator[Any]:
    """The functions typer's wrappers close over (typer keeps no `__wrapped__`)."""
    for cell in getattr(fn, "__closure__", None) or ():
        inner = cell.cell_contents
        if callable(inner):
            yield inner
            if depth > 1:
                yield from _wrapped(inner, depth - 1)


SUBTREES = ("params", "commands")


def tree_module() -> str:
    """`completion_tree()` as a Python module, a parameter per line."""
    def emit(node: dict[str, Any], indent: str) -> list[str]:
        settings = ", ".join(f"{k!r}: {v!r}" for k, v in node.items() if k not in SUBTREES)
        lines = [f"{{{settings},", f"{indent} 'params': ["]
        lines += [f"{indent}     {param!r}," for param in node["params"]]
        if "commands" not in node:
            return [*lines, f"{indent} ]}}"]
        lines += [f"{indent} ],", f"{indent} 'commands': ["]
        for name, short, hidden, sub in node["commands"]:
            sub_lines = emit(sub, indent + "      ")
            lines += [f"{indent}     ({name!r}, {short!r}, {hidden!r},",
                      f"{indent}      {sub_lines[0]}", *sub_lines[1:]]
            lines[-1] += "),"
        return [*lines, f"{indent} ]}}"]

    body = "\n".join(emit(completion_tree(), " " * len("TREE = ")))
    return ('"""The command tree as shell completion sees it: generated from the commands by\n'
            '`python -m tools.docs`; do not edit."""\n'
            "# ruff: noqa: E501\n\n"
            f"TREE = {body}\n")


# -- writing and checking -----------------------------------------------------------------------

def outputs() -> dict[str, str]:
    """Each generated file, by its path relative to the checkout."""
    files = {MAN_PAGE: man_page(), TREE: tree_module()}
    for shell, path in SHELLS.items():
        files[path] = completion_script(shell)
    return files


def checkout() -> Path:
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "byokctl").is_dir():
            return candidate
    raise SystemExit("error: run this inside the byokctl checkout (no pyproject.toml found)")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--check"]):
        sys.stderr.write("usage: python -m tools.docs [--check]\n")
        return 2
    root = checkout()
    stale = []
    for rel, text in outputs().items():
        path = root / rel
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(rel)
        if not args:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args:
        for rel in stale:
            sys.stderr.write(f"stale: {rel}; regenerate with `python -m tools.docs`\n")
        return 1 if stale else 0
    for rel in stale:
        sys.stderr.write(f"wrote {rel}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
