"""The only package that imports `cryptography` and `keyring`: master-key sources
(`master`), envelope encryption (`crypto`, `envelope`) and keyed hashes (`macs`, stdlib only).
Bytes in, bytes out: nothing here reads or writes the store (`services.vaultkeys` does).
"""
