"""The providers byokctl knows and what it knows of each without its SDK: label, key prefixes,
SDK environment variables, usage page, the adapter that serves it, and the defaults of every
provider call. Importing this module imports no SDK and no adapter: `get` imports the adapter,
and the adapters import their SDK only when they make a call.

A provider is one row here, its adapter module and its catalog rows (models, default model,
default base URL in catalog.json).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from byokctl.errors import NotFound

if TYPE_CHECKING:
    from byokctl.providers.base import Adapter

# Every provider call (`ask`, `key test`, `key add --test`, `apply --test`): the deadline of the
# whole call in seconds, and how many times a 429/5xx/network failure is retried within it.
DEFAULT_TIMEOUT = 60.0
DEFAULT_RETRIES = 2


class Provider:
    """One provider's facts. A plain class, not a NamedTuple: every command reads this module,
    and defining a NamedTuple costs more at start-up than all the rest of it."""

    __slots__ = ("id", "label", "key_prefix", "admin_key_prefix", "custom_headers_env",
                 "usage_page", "sdk", "adapter", "api_host", "version_in_base_url")

    def __init__(self, id: str, label: str, key_prefix: str, admin_key_prefix: str,
                 custom_headers_env: str, usage_page: str, sdk: str, adapter: str,
                 api_host: str, version_in_base_url: bool) -> None:
        self.id = id  # as stored in the vault and named on the command line
        self.label = label  # the provider's own name, for people
        self.key_prefix = key_prefix  # every inference API key of the provider starts so
        self.admin_key_prefix = admin_key_prefix  # refused unless --allow-admin-key
        self.custom_headers_env = custom_headers_env  # the SDK's env var of extra headers (cancelled)
        self.usage_page = usage_page  # where the org sees what its own key was billed
        self.sdk = sdk  # the official SDK's import name, imported by the adapter to make a call
        self.adapter = adapter  # "module:Class", imported by `get` only
        self.api_host = api_host  # the official API's host: never another provider's base_url
        # Whether the SDK's base_url carries the API version: OpenAI's does (…/v1, it appends
        # /chat/completions); Anthropic's does not (it appends /v1/messages itself).
        self.version_in_base_url = version_in_base_url

    def __repr__(self) -> str:
        return f"Provider({self.id!r})"


FACTS: dict[str, Provider] = {p.id: p for p in (
    Provider("anthropic", "Anthropic", "sk-ant-", "sk-ant-admin", "ANTHROPIC_CUSTOM_HEADERS",
             "https://console.anthropic.com/settings/usage", "anthropic",
             "byokctl.providers.anthropic:AnthropicAdapter", "api.anthropic.com", False),
    Provider("openai", "OpenAI", "sk-", "sk-admin-", "OPENAI_CUSTOM_HEADERS",
             "https://platform.openai.com/usage", "openai",
             "byokctl.providers.openai:OpenAIAdapter", "api.openai.com", True),
)}
PROVIDERS = tuple(FACTS)


def facts(provider: str) -> Provider:
    """What byokctl knows of `provider`; NotFound for one it does not know."""
    try:
        return FACTS[provider]
    except KeyError:
        raise NotFound(f"Unknown provider '{provider}'", f"choose one of {', '.join(PROVIDERS)}") from None


def label(provider: str) -> str:
    return facts(provider).label


def prefetch(provider: str) -> None:
    """Start importing `provider`'s SDK in the background (about 0.5-1 s), so that the caller's
    own work before the call (decrypting the key) overlaps with it. Harmless if unused: the
    adapter's own import then waits for this one to finish."""
    import sys
    import threading

    # Imported already (a server's second call): starting a thread would only cost time.
    if provider in FACTS and FACTS[provider].sdk not in sys.modules:
        threading.Thread(target=import_module, args=(FACTS[provider].sdk,), daemon=True).start()


def get(provider: str) -> Adapter:
    """The adapter for `provider` (`anthropic` or `openai`)."""
    module, _, cls = facts(provider).adapter.partition(":")
    return getattr(import_module(module), cls)()
