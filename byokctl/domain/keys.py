"""What a provider's answer makes of a stored key's status (SPEC §1 Keys, §3 step 4)."""

from __future__ import annotations

from byokctl.domain import ACTIVE, INVALID, RATE_LIMITED
from byokctl.errors import ByokError, KeyRejected, RateLimited


def status_after(error: ByokError | None) -> str | None:
    """The key's status after a call or test that ended in `error` (None: it was answered).
    A rejection (401/403) marks the key invalid until it is rotated or passes a test, a 429 or
    exhausted quota rate-limited; any other failure leaves it as it was (None), since the
    provider never judged the key."""
    if error is None:
        return ACTIVE
    if isinstance(error, KeyRejected):
        return INVALID
    if isinstance(error, RateLimited):
        return RATE_LIMITED
    return None

