"""Testing a key against its provider: one token-free call (list models) where the key will be
used, its result recorded on the key and audited. `ProviderTester` is the tester `key add
--test`, `key rotate` and `apply --test` hand to the key service."""

from __future__ import annotations

import time
from dataclasses import dataclass

from byokctl.domain.keys import status_after
from byokctl.errors import ByokError, KeyRejected, ProviderDown, RateLimited
from byokctl.services import endpoints, integrity, rules
from byokctl.services.context import Context
from byokctl.services.keys import (
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT,
    Key,
    Slot,
    check_limits,
    mark_tested,
    require_key,
    reveal,
)
from byokctl.services.resolution import platform_default

OK, REJECTED, RATE_LIMITED_RESULT, UNREACHABLE = "ok", "rejected", "rate-limited", "unreachable"
_RESULTS: tuple[tuple[type[ByokError], str], ...] = (  # error → the test's result
    (KeyRejected, REJECTED),
    (RateLimited, RATE_LIMITED_RESULT),
    (ProviderDown, UNREACHABLE),  # the key may be fine: the provider never judged it
)


def base_url_for(ctx: Context, owner: Key | Slot) -> str | None:
    """Where calls with this key go: the org's `base_url` if the org's provider is the key's,
    the platform default base URL if the platform's default provider is the key's, else None
    (the provider's own API). A base URL set for one provider never receives another's key:
    it may be a gateway that speaks only that provider's API, or a host that must not see it.
    A member's personal key goes to an org base_url only if its owner (or the operator)
    approved that URL; otherwise Denied, before the secret is even decrypted. Only ever asked
    before a secret is sent there: Integrity (exit 13) if the settings or the approval it reads
    were changed outside byokctl."""
    if owner.scope == "platform":
        integrity.verify_platform(ctx)
        provider, _, url = platform_default(ctx)
    else:
        integrity.verify_org(ctx, owner.org)
        assert owner.org is not None
        provider, url = ctx.store.orgs.provider_and_base_url(owner.org) or (None, None)
    url = url if provider == owner.provider else None
    endpoints.require_approved(ctx, owner, url)
    return url


def explicit_base_url(ctx: Context, owner: Key | Slot, base_url: str) -> str | None:
    """Where `--base-url URL` sends a test: that URL, checked and shaped for the key's SDK as
    `set-provider` does it (http only to this machine; Anthropic's trailing /v1 dropped,
    OpenAI's missing /v1 added: the result shows the URL tried), None if it is the provider's
    official endpoint. Whoever may test a
    key may point it at any endpoint, for any provider, except a member's personal key: it goes
    only where its owner (or the operator) approved (`key approve-endpoint --base-url`), so an
    org admin cannot test a member's key into their own server. Denied before any secret is
    decrypted or typed."""
    from byokctl.providers import catalog

    # The fix names no --allow-insecure, which a test does not take.
    url, _corrected = rules.provider_base_url(
        owner.provider, base_url,
        insecure_fix="give an https URL (plain http only to this machine, e.g. the emulator)")
    official = catalog.load().info[owner.provider]["default_base_url"]
    if endpoints.normalise(url) == endpoints.normalise(official):
        return None
    if owner.scope == "member":
        assert owner.org is not None and owner.member is not None
        if not endpoints.is_approved(ctx.store, owner.org, owner.member, owner.provider, url):
            raise endpoints.not_approved_for(owner.member, getattr(owner, "id", None), url)
        endpoints.require_approved(ctx, owner, url)  # the approval row must be byokctl's own
    return url


@dataclass(frozen=True)
class Probe:
    """What one token-free provider call (list models) said about a secret."""

    result: str  # ok, rejected, rate-limited, unreachable, or the error's code (e.g. not-found)
    models: int  # how many models the key may use (0 unless ok)
    latency_ms: int
    base_url: str | None  # None: the provider's own API
    error: ByokError | None = None  # redacted by the provider layer

    @property
    def status(self) -> str | None:
        """The key's status after this result; None: as it was."""
        return status_after(self.error)


def probe(provider: str, secret: str, *, base_url: str | None, timeout: float = DEFAULT_TIMEOUT,
          retries: int = DEFAULT_RETRIES, key_id: str | None = None) -> Probe:
    """List the models `secret` may use at `base_url` (None: the provider's API), costing no
    tokens. Never raises a provider failure: it comes back in `Probe.error`."""
    from byokctl.providers import registry  # imports no SDK until the call itself

    started = time.monotonic()
    try:
        models = registry.get(provider).list_models(secret, base_url=base_url, timeout=timeout,
                                                    retries=retries, key_id=key_id)
    except ByokError as exc:
        result = next((r for kind, r in _RESULTS if isinstance(exc, kind)), exc.code.label)
        return Probe(result, 0, _ms_since(started), base_url, exc)
    return Probe(OK, len(models), _ms_since(started), base_url)


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class ProviderTester:
    """The real KeyTester: probes the provider where the key will be used (`base_url_for`) and
    keeps the last Probe for the caller to show."""

    def __init__(self, ctx: Context, *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = DEFAULT_RETRIES, base_url: str | None = None) -> None:
        check_limits(timeout, retries)
        self.ctx, self.timeout, self.retries = ctx, timeout, retries
        self.base_url = base_url  # `--base-url`: test there instead of where the key is used
        self.last: Probe | None = None

    def where(self, owner: Key | Slot) -> str | None:
        """The base URL the test goes to (None: the provider's official API)."""
        if self.base_url is not None:
            return explicit_base_url(self.ctx, owner, self.base_url)
        return base_url_for(self.ctx, owner)

    def preflight(self, owner: Key | Slot) -> None:
        """Refuse now (Denied) a test that could not be sent, before anyone types the secret."""
        self.where(owner)

    def __call__(self, owner: Key | Slot, secret: str) -> str:
        self.last = probe(owner.provider, secret, base_url=self.where(owner),
                          timeout=self.timeout, retries=self.retries,
                          key_id=getattr(owner, "id", None))
        if self.last.error is not None:
            raise self.last.error
        return self.last.result


@dataclass(frozen=True)
class Tested:
    """A key test's result, as `byokctl key test --json` prints it (`to_dict`); no secret."""

    key: Key  # after the result was recorded
    probe: Probe

    def to_json(self) -> dict:
        return {**self.key.to_json(), "test_result": self.probe.result,
                "models": self.probe.models, "latency_ms": self.probe.latency_ms,
                "base_url": self.probe.base_url}

    to_dict = to_json


def run_test(ctx: Context, key_id: str, *, timeout: float = DEFAULT_TIMEOUT,
             retries: int = DEFAULT_RETRIES, base_url: str | None = None) -> Tested:
    """`key test`: a token-free call with the stored secret, where the key is used (or at
    `base_url`: `explicit_base_url`). The result is recorded on the key and audited whatever it
    is; then a failure is raised (exit 7, 8, 11...)."""
    check_limits(timeout, retries)
    key = require_key(ctx, key_id, "test")
    integrity.verify_key(ctx, key_id)
    # Denied here for a personal key sent where it is not approved
    where = base_url_for(ctx, key) if base_url is None else explicit_base_url(ctx, key, base_url)
    secret = reveal(ctx, key_id)
    seen = probe(key.provider, secret, base_url=where, timeout=timeout, retries=retries,
                 key_id=key.id)
    # A test somewhere else says nothing of the key where it is used: its status stays.
    status = seen.status if base_url is None or _is_route(ctx, key, where) else None
    after = mark_tested(ctx, key_id, result=seen.result, status=status, version=key.version,
                        base_url=None if base_url is None else where)
    if seen.error is not None:
        raise seen.error
    return Tested(after, seen)


def _is_route(ctx: Context, key: Key, url: str | None) -> bool:
    """Is `url` where calls with `key` go anyway (`base_url_for`)?"""
    try:
        route = base_url_for(ctx, key)
    except ByokError:  # a personal key not approved for its org's base_url: it goes nowhere else
        return url is None
    same = endpoints.normalise
    return (route is None and url is None) or (route is not None and url is not None
                                               and same(route) == same(url))
