"""typer's shell-completion scripts with two fixes, wherever typer prints or installs them.

- zsh: typer's script registers itself with `compdef` when it runs. Autoloaded from $fpath
  (where `byokctl --install-completion` and completions/ put `_byokctl`) that happens on the
  first TAB, which then completes nothing. Click's own fix: complete at once when autoloaded.
- bash: `local IFS=$'\\n'` is written with a real line break between the quotes.

`install()` rewrites typer's templates in place, so `--install-completion`, `--show-completion`,
`_BYOKCTL_COMPLETE=source_<shell>` and the committed completions/ all carry the fixes. Should
typer's templates change, it leaves them alone and tests/test_completion.py fails.
"""

from __future__ import annotations

ZSH_COMPDEF = "compdef %(complete_func)s %(prog_name)s"
ZSH_AUTOLOAD = """\
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then
  # autoloaded from $fpath by the first TAB: complete now
  %(complete_func)s "$@"
else
  # sourced or eval'ed: register for the next TAB
  compdef %(complete_func)s %(prog_name)s
fi"""
BASH_IFS, BASH_IFS_FIXED = "local IFS=$'\n'", "local IFS=$'\\n'"
FIXES = {"zsh": (ZSH_COMPDEF, ZSH_AUTOLOAD), "bash": (BASH_IFS, BASH_IFS_FIXED)}


def install() -> bool:
    """Apply the fixes to typer's templates (idempotent); False if typer's have changed."""
    try:
        from typer import _completion_classes as classes
        from typer import _completion_shared as shared

        templates = shared._completion_scripts
    except (ImportError, AttributeError):
        return False
    applied = True
    for shell, (old, new) in FIXES.items():
        template = templates.get(shell, "")
        if new in template:
            continue
        if template.count(old) != 1:
            applied = False
            continue
        templates[shell] = template.replace(old, new)
    classes.BashComplete.source_template = templates["bash"]
    classes.ZshComplete.source_template = templates["zsh"]
    return applied
