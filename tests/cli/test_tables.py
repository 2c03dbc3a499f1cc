"""Tables people can read (issue 15, item 8): on a terminal, ids, timestamps and hints are
never wrapped or cut, at 80 columns too (other columns fold, or are left out, and a status line
names them); NO_COLOR turns colour off and nothing else; FORCE_COLOR styles output off a TTY."""

from __future__ import annotations

import re

import conftest
import pytest
from conftest import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, run_proc

LONG_MEMBER = "alice.longname@acme-corporation.example.com"
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")
# an SGR sequence setting a foreground/background colour (bold alone is not colour)
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|4[0-8]|9[0-7]|10[0-7])(?:;[0-9]+)*m")
SGR = re.compile(r"\x1b\[[0-9;]*m")


def under_pty(args: list[str], env: dict[str, str]) -> str:
    """byokctl's output (stdout and stderr) on a pseudo-terminal, as a person sees it."""
    return SGR.sub("", conftest.under_pty(args, env)).replace("\r\n", "\n")


@pytest.fixture
def two_keys(cli, acme) -> list[dict]:
    import json

    assert cli("member", "add", "acme", LONG_MEMBER, "--role", "admin").exit_code == 0
    out = []
    for args, secret in ((["--provider", "anthropic"], ANTHROPIC_TEST_KEY),
                         (["--provider", "openai", "--member", LONG_MEMBER], OPENAI_TEST_KEY)):
        r = cli("key", "add", "acme", *args, "--from-stdin", "--json", input=secret)
        assert r.exit_code == 0, r.output
        out.append(json.loads(r.stdout))
    return out


def _cells(text: str) -> int:
    from rich.cells import cell_len

    return max(cell_len(line) for line in text.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("width", [80, 100])
def test_key_list_keeps_ids_hints_and_timestamps_whole(two_keys, width):

    out = under_pty(["key", "list"], {"COLUMNS": str(width), "TERM": "xterm-256color",
                                      "NO_COLOR": "1"})
    table = out.split("Not shown")[0]
    assert _cells(table) <= width, out
    rows = [line for line in table.splitlines() if "key_" in line]
    for key in two_keys:  # each on one line, whole: its id, its hint, its created time
        [row] = [line for line in rows if key["id"] in line]
        assert key["hint"] in row and STAMP.search(row), out
    assert "Not shown at this width: fingerprint" in out  # said, not silently cut
    assert "(--json has them)" in out


@pytest.mark.slow
def test_a_wide_terminal_shows_every_column_and_no_note(two_keys):
    out = under_pty(["key", "list"], {"COLUMNS": "220", "TERM": "xterm-256color"})
    for key in two_keys:
        [row] = [line for line in out.splitlines() if key["id"] in line]
        assert key["fingerprint"] in row
    assert LONG_MEMBER in out and "Not shown" not in out


@pytest.mark.slow
def test_quiet_drops_the_note_not_the_table(two_keys):
    out = under_pty(["key", "list", "-q"], {"COLUMNS": "80", "TERM": "xterm-256color"})
    assert all(k["id"] in out for k in two_keys) and "Not shown" not in out


def test_the_fitting_rule_drops_in_the_order_given():
    from byokctl.cli.render import _fitting, _shares, _widths

    columns = ["id", "note", "created", "rotated", "target"]
    cells = [["key_0123456789", "x" * 60, "2026-12-01 10:00", "2026-12-02 11:00", "acme key_abcdefghijk"]]
    natural, least = _widths(columns, cells, {"id", "created", "rotated"}, {"target"})
    assert natural == [14, 60, 16, 16, 20]
    assert least == [14, 10, 16, 16, 15]  # note folds to 10; target's longest word is 15
    assert _fitting(least, columns, ["rotated", "created"], 200) == [0, 1, 2, 3, 4]
    # 71 and the rules (14): 85; without rotated, 55 + 11 = 66; without created too, 50
    assert _fitting(least, columns, ["rotated", "created"], 84) == [0, 1, 2, 4]
    assert _fitting(least, columns, ["rotated", "created"], 65) == [0, 1, 4]
    # 84 - 11 (the rules) - 55 (least widths) = 18 to share: note lacks 50, target 5
    assert _shares(natural, least, [0, 1, 2, 4], 84) == {0: 14, 1: 10 + 18 * 50 // 55,
                                                         2: 16, 4: 15 + 18 * 5 // 55}
    assert _shares(natural, least, [0, 1, 2, 3, 4], 200) == {}  # fits: rich lays it out


@pytest.mark.slow
def test_force_color_styles_output_that_is_not_a_terminal(cli, vault):
    cli("org", "create", "acme", "--plan", "starter")
    cli("plan", "grant-grace", "acme", "--days", "3")
    plain = run_proc("org", "show", "acme")
    assert plain.returncode == 0 and "\x1b" not in plain.stdout
    forced = run_proc("org", "show", "acme", env={"FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert "grace grant active" in forced.stdout and COLOUR.search(forced.stdout)
    table = run_proc("org", "list", env={"FORCE_COLOR": "1"})
    assert "╭" in table.stdout  # rich's table, as on a terminal
    both = run_proc("org", "list", env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert "╭" in both.stdout and not COLOUR.search(both.stdout)  # NO_COLOR: colour only
    empty = run_proc("org", "list", env={"FORCE_COLOR": ""})  # set but empty: not forced
    assert "\x1b" not in empty.stdout and "╭" not in empty.stdout


@pytest.mark.slow
def test_no_color_keeps_the_table_layout_on_a_terminal(cli, vault):
    cli("org", "create", "acme")
    out = under_pty(["org", "list"], {"COLUMNS": "80", "TERM": "xterm-256color", "NO_COLOR": "1"})
    assert "╭" in out and "acme" in out


@pytest.mark.slow
def test_audit_log_keeps_key_ids_and_times_whole_at_80_columns(two_keys):
    out = under_pty(["audit", "log"], {"COLUMNS": "80", "TERM": "xterm-256color"})
    table = out.split("Not shown")[0]
    assert _cells(table) <= 80, out
    for key in two_keys:  # `org / target` wraps between words only: `acme key_…` stays whole
        assert any(key["id"] in line and STAMP.search(line) for line in table.splitlines()), out
