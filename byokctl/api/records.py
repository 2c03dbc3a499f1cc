"""What the data plane returns that the services do not already define (defined apart from
`vault.py`, so that opening a vault from the CLI pays for no dataclass it never returns)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Recorded:
    """What `Call.record` wrote for a call the platform made: the `ask --json` fields but the
    text (byokctl never sees it), and the latency from admission to record. Never a secret."""

    mode: str
    provider: str
    model: str
    key_id: str
    fallback_reason: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    credits_charged: int
    latency_ms: int

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict."""
        return asdict(self)
