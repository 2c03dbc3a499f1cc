"""byokctl's shell-completion scripts for bash, zsh and fish, and `--show-completion` /
`--install-completion` for those shells (other shells still go to typer's own).

The scripts are typer's (its completion protocol, MIT), with two fixes, owned here so that
typer's templates are never changed:
- zsh: typer's script registers itself with `compdef` when it runs. Autoloaded from $fpath
  (where `--install-completion` and completions/ put `_byokctl`) that happens on the first TAB,
  which then completes nothing. Click's own fix: complete at once when autoloaded.
- bash: `local IFS=$'\\n'` is written as an escape, not a line break between the quotes.
They are installed where typer installs its own, with the same shell start-up lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

SCRIPTS = {
    "bash": """\
_byokctl_completion() {
    local IFS=$'\\n'
    COMPREPLY=( $( env COMP_WORDS="${COMP_WORDS[*]}" \\
                   COMP_CWORD=$COMP_CWORD \\
                   _BYOKCTL_COMPLETE=complete_bash $1 ) )
    return 0
}

complete -o default -F _byokctl_completion byokctl""",
    "zsh": """\
#compdef byokctl

_byokctl_completion() {
  eval $(env _TYPER_COMPLETE_ARGS="${words[1,$CURRENT]}" _BYOKCTL_COMPLETE=complete_zsh byokctl)
}

if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  # autoloaded from $fpath by the first TAB: complete now
  _byokctl_completion "$@"
else
  # sourced or eval'ed: register for the next TAB
  compdef _byokctl_completion byokctl
fi""",
    "fish": 'complete --command byokctl --no-files --arguments "(env _BYOKCTL_COMPLETE=complete_fish '
            '_TYPER_COMPLETE_FISH_ACTION=get-args _TYPER_COMPLETE_ARGS=(commandline -cp) byokctl)" '
            '--condition "env _BYOKCTL_COMPLETE=complete_fish _TYPER_COMPLETE_FISH_ACTION=is-args '
            '_TYPER_COMPLETE_ARGS=(commandline -cp) byokctl"',
}
FLAGS = ("--show-completion", "--install-completion")


def detect_shell() -> str | None:
    """The shell byokctl runs under (as typer detects it), or None."""
    import shellingham

    try:
        return str(shellingham.detect_shell()[0]).lower()
    except shellingham.ShellDetectionFailure:
        return None


def install(shell: str) -> Path:
    """Write the script where `shell` loads completions from, and the start-up lines that make
    it load them (typer's places: ~/.bash_completions + ~/.bashrc, ~/.zfunc + ~/.zshrc, fish's
    completions directory)."""
    home = Path.home()
    if shell == "bash":
        path = home / ".bash_completions" / "byokctl.sh"
        _add_lines(home / ".bashrc", [f"source '{path}'"], strip=False)
        content = SCRIPTS[shell]
    elif shell == "zsh":
        path = home / ".zfunc" / "_byokctl"
        rc = home / ".zshrc"
        lines = ["fpath+=~/.zfunc; autoload -Uz compinit; compinit"]
        if "zstyle" not in (rc.read_text() if rc.is_file() else ""):  # the user's own wins
            lines.append("zstyle ':completion:*' menu select")
        _add_lines(rc, lines, strip=True)
        content = SCRIPTS[shell]
    else:
        path = home / ".config" / "fish" / "completions" / "byokctl.fish"
        content = SCRIPTS[shell] + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return path


def _add_lines(rc: Path, lines: list[str], strip: bool) -> None:
    rc.parent.mkdir(parents=True, exist_ok=True)
    text = rc.read_text() if rc.is_file() else ""
    for line in lines:
        if line not in text:
            text += f"\n{line}\n" if strip else f"\n{line}"
    rc.write_text(f"{text.strip()}\n" if strip else text + "\n")


def requested(argv: list[str]) -> str | None:
    """`--show-completion` or `--install-completion` when it is what the root options ask for
    first (before -h/--help/--version, which Click would act on first), else None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in FLAGS:
            return arg
        if arg == "--db":
            i += 2
            continue
        if arg.startswith("--db=") or arg in ("-q", "--quiet"):
            i += 1
            continue
        return None  # a command, --help, --version, or anything Click should judge
    return None


def run(flag: str) -> int | None:
    """Do what `flag` asks for the detected shell; None (for typer to answer) if that shell is
    not bash, zsh or fish."""
    shell = detect_shell()
    if shell not in SCRIPTS:
        return None
    if flag == "--show-completion":
        sys.stdout.write(SCRIPTS[shell] + "\n")
        return 0
    import typer

    path = install(shell)
    typer.secho(f"{shell} completion installed in {path}", fg="green")
    typer.echo("Completion will take effect once you restart the terminal")
    return 0
