"""A model's life: active, retiring (an end-of-life date is announced) or retired (past it),
and the 30-day warning before the provider turns it off.

The catalog's `deprecated` date is the provider's retirement date: from its first second (UTC)
the model no longer answers, so it may no longer be chosen.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from byokctl.errors import UsageError

ACTIVE, RETIRING, RETIRED = "active", "retiring", "retired"
WARN_DAYS = 30  # warn this many days (or fewer) before a model's end of life


class Lifecycle(NamedTuple):
    provider: str
    model: str  # the pinned id
    status: str  # active | retiring | retired
    end_of_life: str | None  # YYYY-MM-DD, when announced
    successor: str | None  # the pinned id to move to, when the catalog names one
    days_left: int | None  # whole days until the end of life (0 on its eve, negative after)
    warns: bool = False  # retired, or retiring within WARN_DAYS: worth a warning where it is used

    def label(self) -> str:
        """`active`, `retiring 2026-11-30` or `retired 2026-11-30`, as `models list` shows it."""
        return self.status if self.end_of_life is None else f"{self.status} {self.end_of_life}"

    def to_json(self) -> dict:
        return {"status": self.status, "end_of_life": self.end_of_life, "successor": self.successor}


def _end(end_of_life: str) -> datetime:
    return datetime.strptime(end_of_life, "%Y-%m-%d").replace(tzinfo=UTC)


def lifecycle(provider: str, model: str, end_of_life: str | None, successor: str | None,
              now: datetime) -> Lifecycle:
    """Where `provider`/`model` stands at `now`."""
    if end_of_life is None:
        return Lifecycle(provider, model, ACTIVE, None, successor, None)
    left = _end(end_of_life) - now
    status = RETIRED if left <= timedelta(0) else RETIRING
    return Lifecycle(provider, model, status, end_of_life, successor, left.days,
                     left <= timedelta(days=WARN_DAYS))


def _instead(lc: Lifecycle) -> str:
    if lc.successor:
        return f"use its successor {lc.successor}"
    return "choose another model (see `byokctl models list`)"


def refusal(lc: Lifecycle) -> UsageError | None:
    """Why `lc`'s model may not be chosen (it is retired); None if it may."""
    if lc.status != RETIRED:
        return None
    return UsageError(f"Model {lc.provider}/{lc.model} was retired on {lc.end_of_life}",
                      _instead(lc), model=lc.model, successor=lc.successor)


def warning(lc: Lifecycle, where: str) -> str | None:
    """The warning for `where` (e.g. "org acme's model") using `lc`'s model, or None."""
    if not lc.warns:
        return None
    if lc.status == RETIRED:
        return (f"{where} {lc.provider}/{lc.model} was retired on {lc.end_of_life}: the provider "
                f"no longer serves it; {_instead(lc)}")
    n = lc.days_left
    days = "in under a day" if n == 0 else f"in {n} day{'s' if n != 1 else ''}"
    return (f"{where} {lc.provider}/{lc.model} retires on {lc.end_of_life} ({days}); "
            f"{_instead(lc)}")
