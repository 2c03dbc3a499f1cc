"""A model's end of life: retired from the first second of its date (UTC), warned about from
30 days before it."""

from datetime import UTC, datetime, timedelta

import pytest

from byokctl.domain.lifecycle import lifecycle, refusal, warning
from byokctl.errors import ExitCode

EOL = datetime(2026, 11, 30, tzinfo=UTC)


def at(when, successor="claude-sonnet-5-5"):
    return lifecycle("anthropic", "claude-sonnet-4-5-20250929", "2026-11-30", successor, when)


@pytest.mark.parametrize(("when", "status", "warns"), [
    (EOL - timedelta(days=30, seconds=1), "retiring", False),
    (EOL - timedelta(days=30), "retiring", True),
    (EOL - timedelta(seconds=1), "retiring", True),
    (EOL, "retired", True),
    (EOL + timedelta(days=400), "retired", True),
])
def test_status_and_warning_around_the_dates(when, status, warns):
    lc = at(when)
    assert (lc.status, lc.warns) == (status, warns)
    assert (warning(lc, "org acme's model") is not None) == warns
    assert (refusal(lc) is not None) == (status == "retired")


def test_a_model_with_no_date_is_active_and_never_warned_about():
    lc = lifecycle("openai", "o3-2025-04-16", None, None, EOL)
    assert (lc.status, lc.label(), lc.warns) == ("active", "active", False)
    assert warning(lc, "x") is None and refusal(lc) is None


def test_messages_name_the_date_the_days_and_the_successor():
    assert warning(at(EOL - timedelta(days=14, hours=12)), "org acme's model") == (
        "org acme's model anthropic/claude-sonnet-4-5-20250929 retires on 2026-11-30 (in 14 days); "
        "use its successor claude-sonnet-5-5")
    assert "(in under a day)" in warning(at(EOL - timedelta(hours=2)), "m")
    assert "(in 1 day)" in warning(at(EOL - timedelta(days=1, hours=2)), "m")
    error = refusal(at(EOL))
    assert error.code == ExitCode.USAGE
    assert error.message == ("Model anthropic/claude-sonnet-4-5-20250929 was retired on 2026-11-30; "
                             "use its successor claude-sonnet-5-5")
    assert "see `byokctl models list`" in refusal(at(EOL, successor=None)).message
    assert at(EOL).label() == "retired 2026-11-30"
    assert at(EOL - timedelta(days=90)).label() == "retiring 2026-11-30"
