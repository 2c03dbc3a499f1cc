"""The data plane (SPEC §8): `vault.Vault` for threads, `aio.AsyncVault` for event loops, what
they return (`records`). The CLI's `ask`, `resolve` and `key test` are clients of it too.
The public names are `byokctl`'s own (`from byokctl import Vault`)."""
