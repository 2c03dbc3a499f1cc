"""The `byokctl` command: the root app, its sub-command groups, and the one place that turns
errors into messages and exit codes."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from byokctl import __version__
from byokctl.cli import _fastparams, render
from byokctl.cli.common import STATE
from byokctl.errors import ByokError, ExitCode
from byokctl.services import rules

# Each top-level command: the module that registers it, and its one-line help. Modules are
# imported only when their command runs, so `byokctl org list` never loads the key, provider
# or audit code; tests/cli/test_cli_registry.py keeps these lines equal to the real help.
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("vault", "Create a new vault and its master key."),
    "vault": ("vault", "Inspect and maintain the vault's keys."),
    "org": ("org", "Create and configure organizations."),
    "member": ("member", "Add and manage an org's members and their roles."),
    "key": ("key", "Store, test, rotate and remove API keys (secrets never shown)."),
    "plan": ("plan", "Set plans and grant or revoke BYOK grace."),
    "credits": ("credits", "Add to and show an org's credit balance."),
    "platform": ("platform", "Platform-wide settings: the default provider and model."),
    "models": ("models", "The model catalog: aliases, pinned ids and prices."),
    "resolve": ("ask", "Show which provider, model and key a request for ORG would use, and why "
                          "(no call made)."),
    "ask": ("ask", "Send a prompt for ORG through the provider and key the rules resolve, and "
                  "account for it."),
    "usage": ("usage", "Tokens, cost and credits per org, provider, model, member or day."),
    "audit": ("audit", "Read and verify the tamper-evident audit log."),
    "apply": ("apply", "Converge the vault to a provisioning file (TOML or JSON), all or nothing."),
    "export": ("apply", "Print the vault's settings as an `apply` file (TOML, or JSON), without "
                        "secrets."),
    "emulator": ("emulator", "A loopback emulator of the Anthropic and OpenAI APIs."),
    "demo": ("demo", "Walk through the whole flow offline, in a throwaway vault, command by command."),
    "completion": ("completion", "Print the shell-completion script for bash, zsh or fish."),
}


Builder = Callable[[], Any]  # makes one click command from its typer definition


def command_builders(module_name: str) -> dict[str, Builder]:
    """Import one command module; return its top-level commands, each not yet built.

    Typer turns every command of an app into a click command up front (signatures, type hints,
    parameter objects: ~0.7 ms a command); a run needs one. Built here one at a time, and a
    group's sub-commands likewise (`LazyGroup`), `byokctl key list` builds `list` alone."""
    from functools import partial
    from importlib import import_module

    holder = typer.Typer(rich_markup_mode=None)
    import_module(f"byokctl.cli.{module_name}").register(holder)
    out = dict(_builder(info) for info in holder.registered_commands)
    for group in holder.registered_groups:
        out[group.name] = partial(_lazy_group, group)
    return out


def _builder(info: Any) -> tuple[str, Builder]:
    """A typer command (its CommandInfo) by name, and how to build it."""
    from functools import partial

    from typer.main import get_command_from_info, get_command_name

    name = info.name or get_command_name(info.callback.__name__)
    return name, partial(_build, get_command_from_info, info)


# A command's settings, as @app.command() takes them (typer.models.CommandInfo).
_COMMAND_SETTINGS = ("name", "context_settings", "callback", "help", "epilog", "short_help",
                     "options_metavar", "add_help_option", "no_args_is_help", "hidden", "deprecated",
                     "rich_help_panel")


def _build(build: Callable[..., Any], info: Any) -> Any:
    """One command, built as a FastCommand (a new CommandInfo: the module's is left as it is)."""
    from typer.models import CommandInfo

    if info.cls in (None, TyperCommand):  # typer's default, which FastCommand extends
        info = CommandInfo(**{name: getattr(info, name) for name in _COMMAND_SETTINGS}, cls=FastCommand)
    return build(info, pretty_exceptions_short=True, rich_markup_mode=None)


class FastCommand(TyperCommand):
    """A command whose plain parameters skip pydantic (`_fastparams`), and which takes the root's
    `--db` and `-q/--quiet` too, so they work after the subcommand as well as before it."""

    def __init__(self, *args: Any, params: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, params=_fastparams.fast([*(params or ()), *_root_options()]),
                         **kwargs)
        self.fast_copies = _fastparams.Copies()

    def get_params(self, ctx: Any) -> list[Any]:
        return self.fast_copies.of(super().get_params(ctx))  # the help option too


def _db_after(ctx: typer.Context, value: str | None) -> None:
    """`--db` given after the subcommand: as the root's, and it wins over one given before."""
    if value is None:
        return
    ctx.meta["byokctl.db"] = value  # for completion callbacks, which run no command
    if ctx.resilient_parsing:
        return
    from byokctl.cli.common import refuse_password_on_argv

    refuse_password_on_argv(value, "--db")
    STATE["db"] = value


def _quiet_after(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        render.QUIET = True


def _after_the_subcommand(
    db: Annotated[str | None, typer.Option(
        "--db", metavar="PATH|URL", help="As byokctl --db: the vault file or postgresql:// URL.",
        show_default=False, expose_value=False, callback=_db_after)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Drop status lines on stderr (never data).",
                                        expose_value=False, callback=_quiet_after)] = False,
) -> None:
    """The root's options as every command's own (their values go where the root's go)."""


_ROOT_OPTIONS: list[Any] = []


def _root_options() -> list[Any]:
    """`--db` and `-q/--quiet` as click parameters, built by typer once per process."""
    if not _ROOT_OPTIONS:
        from typer.main import get_command_from_info
        from typer.models import CommandInfo

        holder = get_command_from_info(CommandInfo(callback=_after_the_subcommand),
                                       pretty_exceptions_short=True, rich_markup_mode=None)
        _ROOT_OPTIONS.extend(holder.params)
    return list(_ROOT_OPTIONS)


# A group's settings, as typer.Typer() and add_typer() both take them (typer.models.TyperInfo).
_GROUP_SETTINGS = ("name", "invoke_without_command", "no_args_is_help", "subcommand_metavar", "chain",
                   "result_callback", "context_settings", "callback", "help", "epilog", "short_help",
                   "options_metavar", "add_help_option", "hidden", "deprecated", "rich_help_panel")


def _lazy_group(info: Any) -> LazyGroup:
    """A sub-app as a LazyGroup: its own callback and options now, its commands when used.

    typer builds a group with all its commands; so the group is built from an empty app with
    the sub-app's settings, and the sub-app's commands are added as builders. Nothing of the
    module's own app is changed."""
    from functools import partial

    from typer.main import get_group_from_info
    from typer.models import TyperInfo

    sub = info.typer_instance
    empty = typer.Typer(**{name: getattr(sub.info, name) for name in _GROUP_SETTINGS})
    shell = TyperInfo(empty, **{name: getattr(info, name) for name in _GROUP_SETTINGS},
                      cls=LazyGroup)
    group = get_group_from_info(shell, pretty_exceptions_short=True, suggest_commands=True,
                                rich_markup_mode=None)
    for command in sub.registered_commands:
        group.add_builder(*_builder(command))
    for nested in sub.registered_groups:  # a group within the group: lazy likewise
        group.add_builder(nested.name, partial(_lazy_group, nested))
    return group


def load_module_commands(module_name: str) -> dict[str, Any]:
    """One command module's top-level commands, built."""
    return {name: build() for name, build in command_builders(module_name).items()}


class LazyGroup(TyperGroup):
    """A group that builds each sub-command the first time it is asked for."""

    def __init__(self, *args: Any, params: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, params=_fastparams.fast(params), **kwargs)  # as FastCommand's
        self.fast_copies = _fastparams.Copies()
        self.builders: dict[str, Builder] = {}
        self.names: list[str] = list(self.commands)  # in definition order, built or not

    def add_builder(self, name: str, build: Builder) -> None:
        self.builders[name] = build
        if name not in self.names:
            self.names.append(name)

    def get_params(self, ctx: Any) -> list[Any]:
        # the help option, and the completion options typer adds to the root after building it
        return self.fast_copies.of(super().get_params(ctx))

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.names)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        build = self.builders.pop(cmd_name, None)
        if build is not None:
            self.commands[cmd_name] = build()
        return self.commands.get(cmd_name)


class ByokGroup(LazyGroup):
    """The root group: loads command modules on demand, and runs the command non-standalone so
    every failure passes through `_fail`."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in COMMANDS and cmd_name not in self.builders:
            for name, build in command_builders(COMMANDS[cmd_name][0]).items():
                self.add_builder(name, build)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """List commands from the registry: `byokctl --help` imports no command module."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, short) for name, (_, short) in COMMANDS.items()])

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in argv
        # Refuse an API key on the command line before Click parses it: Click's own errors
        # ("Got unexpected extra argument (sk-ant-…)") would print it back. Only `emulator
        # serve --valid-key` takes (made-up test) keys, by design; no error ever repeats them.
        allowed = _test_key_args(argv)
        # A `--key KEY=429` value is scrubbed as given and as the key alone.
        render.SCRUB = tuple(s for i in allowed for a in (argv[i], argv[i].rpartition("=")[0])
                             for s in rules.secrets_in(a))
        if rules.secret_in_argv(argv, allowed):
            render.error(rules.SECRET_ON_ARGV[0], ExitCode.USAGE.label, as_json, rules.SECRET_ON_ARGV[1])
            code = int(ExitCode.USAGE)
            if standalone_mode:
                sys.exit(code)
            return code
        from byokctl.completion.scripts import requested

        if (flag := requested(argv)) is not None:  # byokctl's own scripts for bash, zsh and fish
            from byokctl.completion.scripts import run

            code = run(flag)
            if code is not None:
                if standalone_mode:
                    sys.exit(code)
                return code
        try:
            rv = super().main(args=argv, prog_name=prog_name or "byokctl",
                              complete_var=complete_var, standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
            if code == 130:
                render.error("Interrupted.", "interrupted", as_json)
        except ByokError as exc:
            render.failure(exc, as_json)
            code = int(exc.code)
        except typer.Abort:
            render.error("Aborted.", "interrupted", as_json)
            code = 130
        except KeyboardInterrupt:
            render.error("Interrupted.", "interrupted", as_json)
            code = 130
        except OSError as exc:
            code = _storage_failure(exc, as_json) or _path_error(exc, as_json)
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            code = _fail(exc, as_json)
        if standalone_mode:
            sys.exit(code)
        return code


_TEST_KEY_OPTIONS = ("--valid-key", "--key")  # `emulator serve`'s: keys it accepts or fails


def _test_key_args(argv: list[str]) -> frozenset[int]:
    """The indices of `emulator serve`'s --valid-key and --key values: the one place a key may be
    on argv (made-up keys for the emulator to answer)."""
    words, i = [], 0
    while i < len(argv) and len(words) < 2:  # the command path, past the root's options
        if argv[i] == "--db":
            i += 2
            continue
        if not argv[i].startswith("-"):
            words.append(argv[i])
        i += 1
    if words != ["emulator", "serve"]:
        return frozenset()
    return frozenset(j + 1 if a in _TEST_KEY_OPTIONS else j for j, a in enumerate(argv[i:], i)
                     if a in _TEST_KEY_OPTIONS or a.startswith(tuple(o + "=" for o in _TEST_KEY_OPTIONS)))


# A path the user gave (--db, $BYOKCTL_DB, --master-key-file, --keep...) that the OS refuses.
_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES,
                errno.EPERM, errno.EROFS, errno.ELOOP, errno.EEXIST}


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _storage_failure(exc: BaseException, as_json: bool) -> int:
    """A full disk or a read-only file or directory: say so (exit 12), never "internal error"
    nor "restore it from a backup", since the file is intact. 0 if `exc` is no such failure."""
    from byokctl.store import is_storage, storage_error, target

    vault = target(STATE["db"])  # a file, or a PostgreSQL database (a URL: no disk of ours)
    guess = True
    if isinstance(exc, OSError) and not getattr(exc, "sqlite_errorname", None):
        if exc.errno not in _STORAGE_ERRNOS:
            return 0
        # A write that names no file (stdout at /dev/full, say) is blamed on the vault's
        # storage only if that storage is in fact full or read-only.
        if exc.filename:
            where, guess = exc.filename, True
        else:
            where, guess = (None if isinstance(vault, str) else vault), False
    elif is_storage(exc) and not isinstance(vault, str):
        where = vault
    else:
        return 0
    from pathlib import Path

    trouble = None if where is None else storage_error(Path(where), exc, guess)
    if trouble is None and not guess:  # then it was the output itself
        from byokctl.errors import Conflict

        trouble = Conflict(f"The output could not be written ({exc.strerror})", "send it somewhere "
                           "with room (a file on another disk, a pipe) and run the command again")
    if trouble is None:
        return 0
    render.failure(trouble, as_json)
    return int(trouble.code)


def _path_error(exc: OSError, as_json: bool) -> int:
    if exc.filename is None or exc.errno not in _PATH_ERRNOS:
        return _fail(exc, as_json)
    render.error(f"Cannot use {exc.filename} ({exc.strerror})", ExitCode.USAGE.label, as_json,
                 "check the path you gave (--db, $BYOKCTL_DB or the command's own path option) and try again")
    return int(ExitCode.USAGE)


def _fail(exc: Exception, as_json: bool) -> int:
    # Click's own errors (usage errors, bad parameters): typer re-exports only BadParameter
    # among them, so they are known by the interface they share, a message and an exit code.
    if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
        ctx = getattr(exc, "ctx", None)
        label = ExitCode.USAGE.label if exc.exit_code == 2 else "internal"
        render.error(exc.format_message().rstrip("."), label, as_json,
                     None if ctx is None else f"see `{ctx.command_path} --help`")
        return exc.exit_code
    if isinstance(exc, BrokenPipeError):
        return 0
    from byokctl.store import busy_error, disconnect_error, is_busy, is_disconnect, target

    if is_busy(exc):  # another process held the vault's lock past the busy timeout
        busy = busy_error(target(STATE["db"]))
        render.failure(busy, as_json)
        return int(busy.code)
    if is_disconnect(exc):  # a database vault's server went away mid-command
        lost = disconnect_error(target(STATE["db"]))
        render.failure(lost, as_json)
        return int(lost.code)
    if code := _storage_failure(exc, as_json):
        return code
    if getattr(exc, "sqlite_errorname", None) in ("SQLITE_CORRUPT", "SQLITE_NOTADB"):
        # Damage found past the checks made on opening (a page of one table, say).
        render.error("The vault file is damaged (database disk image is malformed)", ExitCode.INTEGRITY.label,
                     as_json, "restore it from a backup and run `byokctl vault check` on it")
        return int(ExitCode.INTEGRITY)
    # A bug. Never print the exception's text or a traceback: either could carry a secret.
    detail = f" ({type(exc).__name__})"
    if os.environ.get("BYOKCTL_DEBUG"):  # the text too, with anything key-like masked
        from byokctl.providers.redact import redact

        detail = f" ({type(exc).__name__}: {redact(str(exc))})"
    render.error(f"byokctl hit an internal error{detail}", ExitCode.INTERNAL.label, as_json,
                 "please report it with the command you ran")
    return int(ExitCode.INTERNAL)


app = typer.Typer(
    cls=ByokGroup,
    name="byokctl",
    rich_markup_mode=None,
    help="Administer a bring-your-own-AI-key platform from a local encrypted vault.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=True,
)


def _version(ctx: typer.Context, value: bool) -> None:
    if value and not ctx.resilient_parsing:  # not while completing a TAB
        sys.stdout.write(f"byokctl {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def root(
    db: Annotated[str | None, typer.Option(
        "--db", metavar="PATH|URL", help="Vault file, or a postgresql:// URL (default: $BYOKCTL_DB, "
        "$BYOKCTL_HOME/vault.db, or the user data dir). Here or after the command, as -q and "
        "--json.", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="Drop status lines on stderr (never data).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON document on stdout (as the "
                                        "command's own --json).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Administer a bring-your-own-AI-key platform from a local encrypted vault.

    Example: byokctl init && byokctl org create acme --plan growth
    """
    from byokctl.cli.common import refuse_password_on_argv

    refuse_password_on_argv(db, "--db")
    STATE["db"] = db
    STATE["json"] = json_
    render.QUIET = quiet
