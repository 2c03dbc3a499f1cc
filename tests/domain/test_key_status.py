"""What a provider's answer does to a stored key's status (SPEC §3 step 4)."""

import pytest

from byokctl.domain import ACTIVE, INVALID, RATE_LIMITED
from byokctl.domain.keys import status_after
from byokctl.errors import Insufficient, KeyRejected, NotFound, ProviderDown, RateLimited, UsageError


@pytest.mark.parametrize(("error", "status"), [
    (None, ACTIVE),  # answered: the key works
    (KeyRejected("401"), INVALID),
    (RateLimited("429"), RATE_LIMITED),
    (ProviderDown("503"), None),  # the provider never judged the key: unchanged
    (NotFound("404 model"), None),
    (UsageError("400"), None),
    (Insufficient("no credits"), None),
])
def test_status_after(error, status):
    assert status_after(error) == status

