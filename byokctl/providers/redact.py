"""Scrubbing secrets out of text that came from a provider (error messages echo keys) or a URL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "[redacted]"
MIN_FRAGMENT = 16  # any run of this many characters of a secret counts as the secret

# Things that look like credentials whoever they belong to: provider keys (`sk-…`, `sk-ant-…`,
# masked forms like `sk-abc***wxyz`) and whatever follows `Bearer`.
_TOKEN = r"[A-Za-z0-9_\-.+/=~*]"
_TOKEN_PATTERNS = (
    re.compile(rf"sk-{_TOKEN}{{4,}}"),
    re.compile(rf"(?i)(bearer\s+){_TOKEN}+"),
    re.compile(rf"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?){_TOKEN}+"),
)


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every secret, every ≥16-character piece of one, and key-like tokens masked."""
    spans: list[tuple[int, int]] = []
    for secret in secrets:
        if not secret:
            continue
        if len(secret) <= MIN_FRAGMENT:
            spans += _occurrences(text, secret)
        else:
            for fragment in {secret[i:i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}:
                spans += _occurrences(text, fragment)
    text = _mask(text, spans)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + MASK, text)
    return text


def _occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    spans, start = [], text.find(needle)
    while start >= 0:
        spans.append((start, start + len(needle)))
        start = text.find(needle, start + 1)
    return spans


def _mask(text: str, spans: list[tuple[int, int]]) -> str:
    """Replace each run of overlapping or touching spans with one mask."""
    if not spans:
        return text
    out, pos = [], 0
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    for start, end in merged:
        out += [text[pos:start], MASK]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def safe_url(url: str) -> str:
    """A URL fit for messages: no user:password, no query string (either can hold a credential)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def one_line(text: str, limit: int = 200) -> str:
    """Whitespace collapsed and cut to `limit` characters, so a message stays one sentence."""
    text = " ".join(str(text).split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"
