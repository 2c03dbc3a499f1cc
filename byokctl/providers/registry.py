"""Which adapter serves which provider. Importing this module imports no SDK: each adapter
module is imported by `get`, and the adapters import their SDK only when they make a call."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from byokctl.errors import NotFound
from byokctl.providers.catalog import PROVIDERS

if TYPE_CHECKING:
    from byokctl.providers.base import Adapter

_ADAPTERS = {
    "anthropic": ("byokctl.providers.anthropic", "AnthropicAdapter"),
    "openai": ("byokctl.providers.openai", "OpenAIAdapter"),
}


def prefetch(provider: str) -> None:
    """Start importing `provider`'s SDK in the background (about 0.5-1 s), so that the caller's
    own work before the call (decrypting the key) overlaps with it. Harmless if unused: the
    adapter's own import then waits for this one to finish."""
    import threading

    if provider in _ADAPTERS:
        threading.Thread(target=import_module, args=(provider,), daemon=True).start()


def get(provider: str) -> Adapter:
    """The adapter for `provider` (`anthropic` or `openai`)."""
    if provider not in _ADAPTERS:
        raise NotFound(f"Unknown provider '{provider}'; choose one of {', '.join(PROVIDERS)}")
    module, cls = _ADAPTERS[provider]
    return getattr(import_module(module), cls)()
