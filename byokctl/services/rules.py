"""Input checks (slugs, emails, dates, URLs, secrets on argv) and the domain vocabulary under the
names the services use (the rules themselves live in `byokctl.domain`)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta

from byokctl import clock
from byokctl.domain import BYOK_PLANS, DEFAULT_GRACE_DAYS, FALLBACKS, PLANS, PLATFORM  # noqa: F401
from byokctl.domain.roles import (  # noqa: F401 - the domain's vocabulary, as services name it
    KEY_OWN,
    OPERATOR,
    ORG_MANAGE,
    ORG_VIEW,
    PERMISSION_WORDS,
    ROLE_PERMISSIONS,
    ROLES,
    deny,
    permits,
)
from byokctl.errors import Denied, NotFound, UsageError  # noqa: F401 - services raise them as rules.X
from byokctl.providers.registry import PROVIDERS

BYOK_PROVIDERS = PROVIDERS
PROVIDER_SETTINGS = (PLATFORM, *BYOK_PROVIDERS)
MAX_CREDITS_ADD = 1_000_000_000_000  # one grant; keeps balances far from SQLite's 64-bit limit

SECRET_MIN_LENGTH = 20  # the shortest API key byokctl accepts
SECRET_ON_ARGV = (  # what went wrong, and the fix
    "An API key was given as a command-line argument, where shell history and `ps` can see it",
    "pass it with --from-stdin, --from-env VAR or at the prompt (and rotate that key, since "
    "your shell history now holds it)",
)

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")


def slug(value: str) -> str:
    if not SLUG_RE.fullmatch(value):
        raise UsageError(
            f"'{value}' is not a valid org slug", "use 1-63 lowercase letters, digits and hyphens, "
            "starting with a letter or digit (e.g. acme-eu)"
        )
    return value


def looks_like_secret(text: str) -> bool:
    """True for anything that could be an API key byokctl would accept (refused on argv)."""
    return text.startswith("sk-") and len(text) >= SECRET_MIN_LENGTH


# A key anywhere in a string (`--name=sk-…`, `OPENAI_API_KEY=sk-…`, `"my sk-… key"`), but not the
# `sk-` inside a word (`risk-assessment-…`).
_SECRET_SHAPE = re.compile(rf"(?<![A-Za-z0-9])sk-[A-Za-z0-9_\-.+/=~*]{{{SECRET_MIN_LENGTH - 3},}}")


def secrets_in(text: str) -> list[str]:
    """Every API-key-shaped run in `text`."""
    return _SECRET_SHAPE.findall(text)


def secret_in_argv(args: list[str], allowed: frozenset[int] = frozenset()) -> bool:
    """Does any argument (but those at the `allowed` indices) hold something shaped like an API
    key, whether whole, as `--option=value`, as `NAME=value` or inside a longer text?"""
    return any(secrets_in(a) for i, a in enumerate(args) if i not in allowed)


# What a terminal would act on (C0 but tab/newline are refused too, DEL, C1, bidi and line
# separators): refused in anything byokctl stores and prints back.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def plain_text(value: str, what: str) -> str:
    """`value` unless it holds a control character (never repeated: it may be an escape)."""
    if _CONTROL.search(value):
        raise UsageError(f"{what} holds a control character (such as ESC, a tab or a newline)",
                         "remove it and try again")
    return value


def email(value: str) -> str:
    plain_text(value, "The email address")
    value = value.strip()
    if not EMAIL_RE.fullmatch(value) or len(value) > 254:
        raise UsageError(f"'{value}' is not an email address", "give the member's email (alice@acme.com)")
    return value.lower()


def choice(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise UsageError(f"Unknown {what} '{value}'", f"choose one of {', '.join(allowed)}")
    return value


def parse_when(value: str, *, end_of_day: bool = False) -> datetime:
    """A date (`2026-12-31`) or ISO date-time; a bare date means its start (or its end)."""
    try:
        if len(value) == 10:
            d = datetime.strptime(value, "%Y-%m-%d").date()
            dt = datetime.combine(d, time.max if end_of_day else time.min, tzinfo=UTC)
            return dt.replace(microsecond=0) if end_of_day else dt
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except (ValueError, OverflowError):  # 0001-01-01T00:00+14:00 is before year 1 in UTC
        raise UsageError(
            f"'{value}' is not a date", "use YYYY-MM-DD or an ISO date-time (2026-12-31T18:00Z)"
        ) from None


def days_from_now(days: int) -> datetime:
    return clock.now() + timedelta(days=days)


def positive_int(value: int, what: str) -> int:
    if value < 1:
        raise UsageError(f"{what} must be a positive whole number, not {value}")
    return value


def base_url(value: str, *, allow_insecure: bool = False,
             insecure_fix: str = "pass --allow-insecure") -> str:
    """A provider endpoint fit to send a key to: http(s), no credentials in it, and https unless
    it is this machine (loopback) or the operator passed `allow_insecure` (`insecure_fix`:
    how the caller takes it, an option or an apply file's field)."""
    from urllib.parse import urlsplit

    plain_text(value, "The base URL")
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise UsageError(f"'{value}' is not an http(s) URL", "give e.g. https://eu.api.example.com/v1")
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise UsageError("The base URL has an invalid host or port", "give e.g. "
                         "https://eu.api.example.com/v1") from None
    if "@" in parts.netloc:  # never repeated: what precedes @ is a credential
        raise UsageError("The base URL carries a user name or password (user:password@host)",
                         "remove it: the API key is the only credential byokctl sends")
    if parts.scheme == "http" and not is_loopback(host) and not allow_insecure:
        raise UsageError(f"The base URL is plain http to {host}, which would send the API key "
                         "unencrypted", f"use https, or {insecure_fix} if that network is trusted")
    return value.rstrip("/")


# An API version as a path segment: /v1, /v2, /v1beta (Gemini's OpenAI-compatible endpoint).
_API_VERSION = re.compile(r"/v[0-9]+[a-z0-9]*(?=/|$)", re.IGNORECASE)


def provider_base_url(provider: str, value: str, *, allow_insecure: bool = False,
                      insecure_fix: str = "pass --allow-insecure") -> tuple[str, str | None]:
    """`base_url` checked for `provider`'s SDK too: the URL to store, and a warning when it was
    corrected. Another provider's official host is refused (no correction could be right).
    The version segment is corrected, as each SDK builds its request paths: Anthropic's SDK
    adds /v1 itself, so a trailing /v1 would call …/v1/v1/messages (404) and is dropped;
    OpenAI's appends /chat/completions to the URL, so one with no version segment at all
    (a bare host, the emulator's /openai) gets /v1. Either way the intent is unambiguous."""
    from urllib.parse import urlsplit, urlunsplit

    from byokctl.domain.urls import safe_url
    from byokctl.providers import registry

    url = base_url(value, allow_insecure=allow_insecure, insecure_fix=insecure_fix)
    facts = registry.facts(provider)
    parts = urlsplit(url)
    for other in registry.FACTS.values():
        if other.id != provider and parts.hostname == other.api_host:
            raise UsageError(f"{safe_url(url)} is {other.label}'s API, not {facts.label}'s",
                             f"leave the base URL out to use {facts.label}'s own, or give an "
                             f"endpoint that serves {facts.label}'s API")
    path = parts.path.rstrip("/")
    if not facts.version_in_base_url and path.lower().endswith("/v1"):
        path, why = path[:-3], f"the {facts.label} SDK adds /v1 itself"
    elif facts.version_in_base_url and not _API_VERSION.search(path):
        path, why = path + "/v1", f"the {facts.label} SDK expects the API version (/v1) in it"
    else:
        return url, None
    fixed = urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
    return fixed, f"base URL {safe_url(url)} corrected to {safe_url(fixed)}: {why}"


def is_loopback(host: str) -> bool:
    from byokctl.providers.endpoints import is_loopback as loopback

    return loopback(host)
