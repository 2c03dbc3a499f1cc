"""Credit arithmetic (SPEC §1 Credits): price of a call, grants, charges and shortfall, admission."""

import pytest

from byokctl.domain.credits import (
    INPUT_TOKEN_OVERHEAD,
    Balance,
    admits,
    charge,
    credits_for,
    grant,
    max_cost_usd,
)


@pytest.mark.parametrize(("cost", "value", "credits"), [
    (0.0, 0.01, 1),  # every successful platform call costs at least one credit
    (0.0001, 0.01, 1),
    (0.01, 0.01, 1),
    (0.010001, 0.01, 2),
    (0.03, 0.01, 3),  # 0.03 / 0.01 is 2.9999999999999996 in floating point
    (0.07, 0.01, 7),
    (1.0, 0.25, 4),
])
def test_credits_for(cost, value, credits):
    assert credits_for(cost, value) == credits


@pytest.mark.parametrize(("before", "amount", "after"), [
    (Balance(10, 0), 5, Balance(15, 0)),
    (Balance(0, 3), 5, Balance(2, 0)),  # the shortfall is paid first
    (Balance(0, 8), 5, Balance(0, 3)),
    (Balance(4, 5), 5, Balance(4, 0)),
])
def test_grant_pays_the_shortfall_first(before, amount, after):
    assert grant(before, amount) == after


@pytest.mark.parametrize(("before", "amount", "after"), [
    (Balance(10, 0), 3, Balance(7, 0)),
    (Balance(10, 0), 10, Balance(0, 0)),
    (Balance(2, 0), 5, Balance(0, 3)),  # never silently dropped
    (Balance(0, 3), 4, Balance(0, 7)),
])
def test_charge_keeps_what_the_balance_cannot_cover(before, amount, after):
    assert charge(before, amount) == after


def test_no_credit_is_made_or_lost():
    """A charge then a grant of the same amount is where it started, whatever the balance."""
    for credits in range(0, 6):
        for shortfall in range(0, 4):
            for n in range(1, 8):
                b = Balance(credits, shortfall)
                c = charge(b, n)
                assert c.credits - c.shortfall == credits - shortfall - n
                g = grant(c, n)
                assert g.credits - g.shortfall == credits - shortfall


@pytest.mark.parametrize(("balance", "held", "calls", "want", "ok"), [
    (1, 0, 0, 50, True),  # alone, one credit buys a call (its overshoot becomes shortfall)
    (0, 0, 0, 1, False),
    (10, 9, 1, 2, False),  # beside others it needs its whole reservation
    (10, 8, 1, 2, True),
    (10, 10, 2, 1, False),
])
def test_admission(balance, held, calls, want, ok):
    assert admits(balance, held, calls, want) is ok


class Prices:
    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return input_tokens * 1.0 + output_tokens * 1000.0


def test_max_cost_counts_every_byte_and_the_whole_max_tokens():
    cost = max_cost_usd(Prices(), prompt="héllo", system="be", max_tokens=3)
    assert cost == (len("héllo".encode()) + 2 + INPUT_TOKEN_OVERHEAD) + 3000.0
    assert max_cost_usd(Prices(), prompt="", system=None, max_tokens=0) == INPUT_TOKEN_OVERHEAD
