"""Credit arithmetic (SPEC §1 Credits): what a call costs, what a grant or a charge leaves, and
whether a call may start against what calls in flight have reserved. Whole numbers only."""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol

INPUT_TOKEN_OVERHEAD = 64  # message framing the provider counts beyond the prompt's own text


class Priced(Protocol):
    def cost_usd(self, input_tokens: int, output_tokens: int) -> float: ...


class Balance(NamedTuple):
    credits: int
    shortfall: int  # credits charged that the balance could not cover


def credits_for(cost_usd: float, credit_value: float) -> int:
    """A platform call costs max(1, ceil(cost / credit value)) credits (SPEC §1)."""
    # round() first: 0.03 / 0.01 is 2.9999999999999996 in floating point, and must be 3.
    return max(1, math.ceil(round(cost_usd / credit_value, 9)))


def grant(before: Balance, amount: int) -> Balance:
    """`amount` credits added: the shortfall is paid from them first."""
    repaid = min(amount, before.shortfall)
    return Balance(before.credits + amount - repaid, before.shortfall - repaid)


def charge(before: Balance, amount: int) -> Balance:
    """`amount` credits charged: what the balance cannot cover becomes shortfall, never dropped."""
    paid = min(amount, before.credits)
    return Balance(before.credits - paid, before.shortfall + amount - paid)


def max_cost_usd(model: Priced, *, prompt: str, system: str | None, max_tokens: int) -> float:
    """The most a call can cost at `model`'s prices: every byte of text one input token (no
    tokenizer makes a token of less than a byte) and the whole `max_tokens` of output."""
    text_bytes = len(prompt.encode()) + len((system or "").encode())
    return model.cost_usd(text_bytes + INPUT_TOKEN_OVERHEAD, max_tokens)


def admits(balance: int, held: int, calls: int, want: int) -> bool:
    """May a platform call needing `want` credits start while `calls` others hold `held`? A call
    alone needs one credit (a positive balance always buys one call, SPEC §3.5; its overshoot
    becomes shortfall); beside others it needs its whole reservation."""
    left = balance - held
    return not (left < 1 or (calls and left < want))
