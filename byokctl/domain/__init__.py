"""The rules of the product as pure functions (SPEC §1, §3): plans and the BYOK gate, grace,
budgets, credit arithmetic, roles and the resolution chain. No I/O, no clock, no store.

Here, the words every layer names (plans, the provider setting): one small import for the
commands that only check an argument against them.
"""

PLANS = ("free", "starter", "growth", "scale")
BYOK_PLANS = frozenset({"growth", "scale"})
DEFAULT_GRACE_DAYS = 30

# An org's provider setting (SPEC §1): platform mode or a BYOK provider, and its fallback policy.
PLATFORM = "platform"
FALLBACKS = ("never", "missing-key", "provider-error")
# Why a request runs on platform mode though the org chose BYOK (SPEC §3 steps 2-4).
GATE_LAPSED, NO_KEY, PROVIDER_ERROR = "gate-lapsed", "no-key", "provider-error"

# A stored key's status (SPEC §1 Keys); `domain.keys.status_after` says what moves it.
ACTIVE, INVALID, RATE_LIMITED = "active", "invalid", "rate-limited"
KEY_STATUSES = (ACTIVE, INVALID, RATE_LIMITED)
