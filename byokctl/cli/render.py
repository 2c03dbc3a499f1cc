"""The only place that prints: tables and `--json` to stdout, status, warnings and errors to stderr.

Colour and box-drawing only on a terminal (through rich, which honours `NO_COLOR`); a stream
that is not a terminal gets plain text written directly, and rich is never imported for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

QUIET = False  # set by `--quiet`: status lines are dropped, data and errors are not
SCRUB: tuple[str, ...] = ()  # keys the command line legitimately holds: never in an error


@cache
def stdout() -> Console:
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


@cache
def stderr() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _default(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def printable(text: str, stream: Any) -> str:
    """`text` as `stream` can encode it: a character it cannot (a path's undecodable byte, kept
    by Python as a surrogate escape; `…` in a Latin-1 locale) is written as a backslash escape
    instead of failing the command after its work is done."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
        return text
    except UnicodeEncodeError:
        return text.encode(encoding, "backslashreplace").decode(encoding)
    except LookupError:
        return text


# Characters a terminal acts on instead of showing: C0 (ESC starts CSI/OSC sequences, CR
# overwrites a line) but tab and newline, DEL, C1 (0x9b is CSI on its own), and the bidi and
# line-separator controls that reorder or split what is shown. Each is printed as its escape.
_UNSAFE = [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0), 0x200E, 0x200F,
           *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029]
_NEUTRAL = {c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in _UNSAFE}
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _UNSAFE if c >= 0x7F}  # json escapes C0 itself


def neutral(text: str) -> str:
    """`text` with every character a terminal would act on shown as its escape (`\\x1b`)."""
    return text.translate(_NEUTRAL)


def dumps(data: Any) -> str:
    if hasattr(data, "to_json"):  # a NamedTuple record would otherwise be dumped as an array
        data = data.to_json()
    # Outside strings JSON has none of these characters, so escaping them all keeps it valid.
    return json.dumps(data, indent=2, default=_default, ensure_ascii=False).translate(_JSON_ESCAPES)


def emit(as_json: bool, data: Any, human: Callable[[], None] | str) -> None:
    """Print a command's result: `data` as JSON, or the human rendering."""
    if as_json:
        sys.stdout.write(printable(dumps(data) + "\n", sys.stdout))
        sys.stdout.flush()
    elif isinstance(human, str):
        line(human)
    else:
        human()


def _say(text: str, style: str | None = None, *, err: bool = False) -> None:
    """One line of text: styled on a terminal, verbatim otherwise."""
    stream = sys.stderr if err else sys.stdout
    text = printable(neutral(text), stream)
    if not stream.isatty():
        stream.write(text + "\n")
        stream.flush()
        return
    (stderr() if err else stdout()).print(text, style=style, markup=False, emoji=False)


def flush_stdout() -> None:
    """Make sure what was printed reached stdout: raises OSError if it is full or gone."""
    if sys.stdout is None:
        raise OSError("stdout is closed")
    sys.stdout.flush()


def line(text: str = "", style: str | None = None) -> None:
    _say(text, style)


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None,
          no_wrap: Sequence[str] = ()) -> None:
    """A table on a terminal. Piped, plain aligned columns that never wrap, one row per line,
    so ids stay whole for `grep`/`awk`. Columns named in `no_wrap` are kept on one line on a
    terminal too (others wrap to make room)."""
    cells = [["" if v is None else neutral(str(v)) for v in r] for r in rows]
    columns = [neutral(c) for c in columns]
    title = neutral(title) if title else title
    if not sys.stdout.isatty():  # decided without rich: piped output never loads it
        _plain_table(list(columns), cells, title)
        return
    con = stdout()
    from rich import box
    from rich.table import Table

    t: Table = Table(title=title, box=box.ROUNDED, header_style="bold", pad_edge=False)
    for c in columns:
        t.add_column(c, overflow="fold", no_wrap=c in no_wrap)
    for r in cells:
        t.add_row(*r)
    con.print(t)


def _plain_table(columns: list[str], cells: list[list[str]], title: str | None) -> None:
    lines = [columns, *([" ".join(c.split()) for c in r] for r in cells)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(columns))]
    out = [title] if title else []
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in lines]
    sys.stdout.write(printable("\n".join(out) + "\n", sys.stdout))
    sys.stdout.flush()


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """`label: value` lines for one object."""
    items = [(k, "—" if v is None else str(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    for k, v in items:
        _say(f"{k + ':':<{width + 1}} {v}")


def status(text: str) -> None:
    if not QUIET:
        _say(text, err=True)


def warn(text: str) -> None:
    _say(f"warning: {text}", "yellow", err=True)


def banner(text: str) -> None:
    _say(text, "bold yellow")


def error(message: str, code_label: str, as_json: bool) -> None:
    if SCRUB:
        from byokctl.providers.redact import redact

        message = redact(message, *SCRUB)
    if as_json:
        sys.stderr.write(json.dumps({"error": {"code": code_label, "message": message}}) + "\n")
        sys.stderr.flush()
    else:
        _say(f"error: {message}", "red", err=True)


def when(ts: str | None) -> str:
    """A stored timestamp, shortened for people (`2026-11-23 14:05`)."""
    return "—" if not ts else ts[:16].replace("T", " ")


@contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, only on a terminal, gone when done; yields `update(done, total)`
    for a service's progress callback (services never import rich)."""
    if QUIET or not sys.stderr.isatty():
        yield lambda done, total: None
        return
    con = stderr()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=con, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def raw(text: str) -> None:
    """Text exactly as given on stdout (a file's content, e.g. `export`; a provider's answer):
    no markup, no emoji codes, no wrapping. To a terminal, control characters are neutralised;
    to a pipe or file the text stays byte for byte what it was."""
    if sys.stdout.isatty():
        text = neutral(text)
    sys.stdout.write(printable(text, sys.stdout))
    sys.stdout.flush()
