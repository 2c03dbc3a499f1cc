"""The data plane (SPEC §8): `Vault` for threads, `AsyncVault` for event loops. The CLI's
`ask`, `resolve` and `key test` are clients of it too."""

from byokctl.api.vault import Call, Recorded, Vault

__all__ = ["Call", "Recorded", "Vault"]
