"""Facts about a provider endpoint's address that decide how byokctl may talk to it."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """This machine: `localhost` or a loopback address (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
