"""The only place that prints: tables and `--json` to stdout, status, warnings and errors to stderr.

Colour and box-drawing only on a terminal, or with `FORCE_COLOR` set (through rich, which
honours `NO_COLOR`: colour off, layout kept); a stream that is not a terminal gets plain text
written directly, and rich is never imported for it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from byokctl.errors import ByokError

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


_JSON_UNSAFE = re.compile("[" + "".join(chr(c) for c in _JSON_ESCAPES) + "]")
_ENCODER = json.JSONEncoder(indent=2, default=_default, ensure_ascii=False)  # json.dumps's own


def dumps(data: Any) -> str:
    if hasattr(data, "to_json"):  # a NamedTuple record would otherwise be dumped as an array
        data = data.to_json()
    text = _ENCODER.encode(data)
    # Outside strings JSON has none of these characters, so escaping them all keeps it valid.
    # (Searched first: translate is slow, and most documents hold none of them.)
    return text.translate(_JSON_ESCAPES) if _JSON_UNSAFE.search(text) else text


def _lazy(value: Any) -> bool:
    """A lazy container, or a dict holding one as a value (the only places one may be)."""
    from byokctl.lazy import Pairs, Rows

    return isinstance(value, Rows | Pairs) or (
        isinstance(value, dict) and any(isinstance(v, Rows | Pairs) for v in value.values()))


def _indent(text: str, pad: str) -> str:
    # A JSON text has no raw newline inside a string, so its lines are its indentation levels.
    return text.replace("\n", "\n" + pad)


def _chunks(value: Any, pad: str) -> Iterator[str]:
    """`dumps(value)` in pieces, one member of a lazy container (`byokctl.lazy`) at a time,
    byte for byte what `json.dumps(..., indent=2)` writes for the whole value at depth `pad`."""
    from byokctl.lazy import Pairs, Rows

    lazy = Rows | Pairs
    inner = pad + "  "
    if isinstance(value, Rows | Pairs | dict):
        if isinstance(value, Rows):
            members: Iterator[tuple[str, Any]] = (("", v) for v in value)
            opening, closing = "[", "]"
        else:
            members = ((_json_key(k), v) for k, v in (value.items() if isinstance(value, dict)
                                                       else value))
            opening, closing = "{", "}"
        first = True
        for key, v in members:
            yield (opening + "\n" if first else ",\n") + inner + key
            first = False
            if isinstance(v, lazy):
                yield from _chunks(v, inner)
            else:
                yield _indent(dumps(v), inner)
        yield opening + closing if first else "\n" + pad + closing
    else:
        yield _indent(dumps(value), pad)


def _json_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False).translate(_JSON_ESCAPES) + ": "


def _write_json(data: Any) -> None:
    """`dumps(data)` and a newline to stdout, streamed in bounded pieces when `data` is lazy."""
    if hasattr(data, "to_json"):
        data = data.to_json()
    if not _lazy(data):
        sys.stdout.write(printable(dumps(data) + "\n", sys.stdout))
        sys.stdout.flush()
        return
    _drain(itertools.chain(_chunks(data, ""), ["\n"]),
           lambda text: sys.stdout.write(printable(text, sys.stdout)))
    sys.stdout.flush()


def _drain(pieces: Iterable[str], write: Callable[[str], None]) -> None:
    """Spool `pieces` (read from the store as they are made), then `write` them in bounded
    batches: the store's read transaction ends before a slow reader of stdout (`| less`) can
    hold it open, which would keep a concurrent write's old pages in the WAL."""
    with _Spool() as spool:
        for piece in pieces:
            spool.write(piece)
        buf: list[str] = []
        size = 0
        for text in spool.lines():
            buf.append(text)
            size += len(text)
            if size >= _BATCH:
                write("".join(buf))
                buf, size = [], 0
        write("".join(buf))


_BATCH = 1 << 16  # characters written at once when streaming


def emit(as_json: bool, data: Any, human: Callable[[], None] | str) -> None:
    """Print a command's result: `data` as JSON, or the human rendering. A lazy list or object
    in `data` (`byokctl.lazy.Rows`, `Pairs`) is written as it is read: memory stays flat."""
    if as_json:
        _write_json(data)
    elif isinstance(human, str):
        line(human)
    else:
        human()


def styled(stream: Any) -> bool:
    """Whether `stream` gets rich's rendering (colour, boxes): a terminal, or `FORCE_COLOR` set
    to anything but the empty string (force-color.org; rich reads it the same way). `NO_COLOR`
    then removes the colour only."""
    return os.environ.get("FORCE_COLOR", "") != "" or stream.isatty()


def _say(text: str, style: str | None = None, *, err: bool = False) -> None:
    """One line of text: styled on a terminal, verbatim otherwise."""
    stream = sys.stderr if err else sys.stdout
    text = printable(neutral(text), stream)
    if not styled(stream):
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
          no_wrap: Sequence[str] = (), drop: Sequence[str] = (), words: Sequence[str] = ()) -> None:
    """A table on a terminal. Piped, plain aligned columns that never wrap, one row per line,
    so ids stay whole for `grep`/`awk`. `rows` may be a generator: piped, it is read once
    and spooled (to a temporary file past 256 KB), so memory stays flat in its length.

    On a terminal, the columns in `no_wrap` (ids, timestamps, hints) are never wrapped or cut;
    those in `words` wrap between words only (`acme key_x1y2`: the id stays whole); the others
    fold to make room. Where even that does not fit the width, the columns in `drop` are left
    out, first named first, and a status line names them."""
    columns = [neutral(c) for c in columns]
    title = neutral(title) if title else title
    if not styled(sys.stdout):  # decided without rich: piped output never loads it
        _plain_table(list(columns), rows, title)
        return
    cells = [["" if v is None else neutral(str(v)) for v in r] for r in rows]
    con = stdout()
    from rich import box
    from rich.table import Table

    natural, least = _widths(columns, cells, set(no_wrap), set(words))
    shown = _fitting(least, list(columns), list(drop), con.width)
    given = _shares(natural, least, shown, con.width)
    t: Table = Table(title=title, box=box.ROUNDED, header_style="bold", pad_edge=False)
    for i in shown:
        c = columns[i]
        t.add_column(c, overflow="fold", no_wrap=c in no_wrap, width=given.get(i))
    for r in cells:
        t.add_row(*(r[i] for i in shown))
    con.print(t)
    if len(shown) < len(columns):
        left_out = ", ".join(c for i, c in enumerate(columns) if i not in shown)
        status(f"Not shown at this width: {left_out} (--json has them).")


_FOLDED = 10  # the narrowest a folding column is counted at: narrower, words break mid-word


def _widths(columns: list[str], cells: list[list[str]], whole: set[str],
            words: set[str]) -> tuple[list[int], list[int]]:
    """Each column's natural width (its widest cell or header) and the narrowest it may be, in
    terminal cells: a `whole` column its natural width, a `words` one its longest word (at
    least `_FOLDED`), any other `_FOLDED` (or less, when all of it is narrower)."""
    from rich.cells import cell_len

    natural, least = [], []
    for i, c in enumerate(columns):
        texts = [c, *(r[i] for r in cells)]
        wide = max(cell_len(line) for text in texts for line in text.splitlines() or [""])
        natural.append(wide)
        if c in whole:
            least.append(wide)
        elif c in words:
            least.append(min(wide, max(_FOLDED, *(cell_len(w) for t in texts for w in t.split()))))
        else:
            least.append(min(wide, _FOLDED))
    return natural, least


def _overhead(count: int) -> int:
    """A ROUNDED box's own width: a rule before, between and after `count` columns, and one
    space each side of a cell but at the table's edges (pad_edge=False)."""
    return 3 * count - 1


def _shares(natural: list[int], least: list[int], shown: list[int], width: int) -> dict[int, int]:
    """Column widths for a table too wide for `width`: each shown column its least width, and
    the room left shared by the columns that can use it, in proportion to what they lack.
    Empty when the table fits as it is (rich lays it out) or cannot fit at all."""
    free = width - _overhead(len(shown)) - sum(least[i] for i in shown)
    lacking = {i: natural[i] - least[i] for i in shown if natural[i] > least[i]}
    if sum(natural[i] for i in shown) + _overhead(len(shown)) <= width or free < 0:
        return {}
    total = sum(lacking.values())
    return {i: least[i] + (lacking.get(i, 0) * free // total if total else 0) for i in shown}


def _fitting(least: list[int], columns: list[str], drop: list[str], width: int) -> list[int]:
    """The indices of the columns to show within `width`, each at its `least` width: all of
    them if they fit, else without the `drop` ones, one at a time, first named first."""
    shown = list(range(len(columns)))
    for name in [None, *drop]:
        if name is not None:
            if name not in columns or columns.index(name) not in shown:
                continue
            shown.remove(columns.index(name))
        if sum(least[i] for i in shown) + _overhead(len(shown)) <= width:
            break
    return shown


_SPOOL_BYTES = 1 << 18  # characters of a piped table or streamed document kept in memory
_SEP = "\x1f"  # between a spooled row's cells: neutral() escapes it, so no cell holds one


class _Spool:
    """Text kept in memory up to _SPOOL_BYTES, then in a temporary file (private, unlinked;
    tempfile is imported only then: a short table costs no start-up time)."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._size = 0
        self._file: Any = None

    def write(self, text: str) -> None:
        if self._file is not None:
            self._file.write(text)
            return
        self._lines.append(text)
        self._size += len(text)
        if self._size > _SPOOL_BYTES:
            import tempfile

            self._file = tempfile.TemporaryFile(  # noqa: SIM115 - closed by __exit__
                "w+", encoding="utf-8", errors="surrogatepass", newline="\n")
            self._file.writelines(self._lines)
            self._lines = []

    def lines(self) -> Iterator[str]:
        if self._file is None:
            return iter(self._lines)
        self._file.seek(0)
        return iter(self._file)

    def __enter__(self) -> _Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()


def _plain_table(columns: list[str], rows: Iterable[Sequence[Any]], title: str | None) -> None:
    """Columns as wide as their widest cell: a first pass spools the cells and measures them,
    a second writes them padded."""
    widths = [len(c) for c in columns]
    with _Spool() as spool:
        for r in rows:
            cells = [" ".join(neutral(str(v)).split()) if v is not None else "" for v in r]
            for i, c in enumerate(cells):
                if len(c) > widths[i]:
                    widths[i] = len(c)
            spool.write(_SEP.join(cells) + "\n")

        def padded(cells: Sequence[str]) -> str:
            return "  ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True)).rstrip()

        out = [title] if title else []
        out.append(padded(columns))
        size = 0
        for text in spool.lines():
            out.append(padded(text[:-1].split(_SEP)))
            size += len(out[-1])
            if size >= _BATCH:
                sys.stdout.write(printable("\n".join(out) + "\n", sys.stdout))
                out, size = [], 0
        if out:
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


def error(what: str, code_label: str, as_json: bool, fix: str | None = None,
          details: dict[str, object] | None = None) -> None:
    """An error on stderr: "error: what; fix", or with --json one object with the parts apart."""
    if SCRUB:
        from byokctl.providers.redact import redact

        what, fix = redact(what, *SCRUB), fix and redact(fix, *SCRUB)
        details = details and {k: redact(v, *SCRUB) if isinstance(v, str) else v
                               for k, v in details.items()}
    message = f"{what}; {fix}" if fix else what
    if as_json:
        body: dict[str, object] = {"code": code_label, "message": message}
        if fix:
            body["fix"] = fix
        if details:
            body["details"] = details
        sys.stderr.write(json.dumps({"error": body}) + "\n")
        sys.stderr.flush()
    else:
        _say(f"error: {message}", "red", err=True)


def failure(exc: ByokError, as_json: bool) -> None:
    """A `ByokError` as `error` shows it; what it lists (`listing`) follows, one item a line
    (with --json its details carry the same items)."""
    error(exc.what, exc.code.label, as_json, exc.fix, exc.details)
    if exc.listing and not as_json:
        from byokctl.providers.redact import redact

        for item in exc.listing:
            _say(f"  {redact(item, *SCRUB) if SCRUB else item}", err=True)


def when(ts: str | None) -> str:
    """A stored timestamp, shortened for people (`2026-11-23 14:05`)."""
    return "—" if not ts else ts[:16].replace("T", " ")


@contextmanager
def progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, only on a terminal, gone when done; yields `update(done, total)`
    for a service's progress callback (services never import rich)."""
    if QUIET or not sys.stderr.isatty():  # a bar is animation: never forced into a file
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


def raw_chunks(pieces: Iterable[str]) -> None:
    """`raw` for text produced in pieces (a file built as it is read from the store): spooled,
    then written in bounded batches, so memory stays flat in its length."""
    _drain(pieces, raw)
