"""byokctl: administration CLI for bring-your-own-AI-key platforms, with a local encrypted vault,
and the Python API a platform's servers call at request time (docs/python-api.md).

    from byokctl import Vault, NoKey

    with Vault.open("/srv/byok/vault.db") as vault:
        answer = vault.ask("acme", "Summarise BYOK in one line")

Importing `byokctl` loads nothing heavy: the names below are imported when first used, so a
CLI command (or a program that only catches `byokctl.NoKey`) loads no SDK, no database driver
and no cryptography it does not use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name → the module that defines it
_HOMES = {
    "Vault": "byokctl.api.vault", "Call": "byokctl.api.vault", "Recorded": "byokctl.api.records",
    "AsyncVault": "byokctl.api.aio", "AsyncCall": "byokctl.api.aio",
    "Answer": "byokctl.services.ask", "Decision": "byokctl.domain.resolution",
    "KeyRef": "byokctl.domain.resolution", "Tested": "byokctl.services.keytest",
    **{name: "byokctl.errors" for name in (
        "ByokError", "ExitCode", "UsageError", "NotFound", "Denied", "PlanGate", "NoKey",
        "KeyRejected", "RateLimited", "Insufficient", "VaultLocked", "ProviderDown", "Conflict",
        "Integrity")},
}

__all__ = [
    "__version__", "Vault", "Call", "Recorded", "AsyncVault", "AsyncCall", "Answer", "Decision",
    "KeyRef", "Tested", "ByokError", "ExitCode", "UsageError", "NotFound", "Denied", "PlanGate",
    "NoKey", "KeyRejected", "RateLimited", "Insufficient", "VaultLocked", "ProviderDown",
    "Conflict", "Integrity",
]

if TYPE_CHECKING:
    from byokctl.api.aio import AsyncCall, AsyncVault
    from byokctl.api.records import Recorded
    from byokctl.api.vault import Call, Vault
    from byokctl.domain.resolution import Decision, KeyRef
    from byokctl.errors import (
        ByokError,
        Conflict,
        Denied,
        ExitCode,
        Insufficient,
        Integrity,
        KeyRejected,
        NoKey,
        NotFound,
        PlanGate,
        ProviderDown,
        RateLimited,
        UsageError,
        VaultLocked,
    )
    from byokctl.services.ask import Answer
    from byokctl.services.keytest import Tested


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'byokctl' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
