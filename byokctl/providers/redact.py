"""Scrubbing secrets out of text that came from a provider (error messages echo keys) or a URL."""

from __future__ import annotations

import base64
import re
import string
from urllib.parse import quote

from byokctl.domain.urls import safe_url  # noqa: F401 - providers show URLs through it

MASK = "[redacted]"
MIN_FRAGMENT = 12  # any run of this many characters of a secret, or of an encoding of it, counts
MAX_SCAN = 8192  # a provider's text is cut to this before scrubbing: nothing past it is ever shown

# Things that look like credentials whoever they belong to: provider keys (`sk-…`, `sk-ant-…`,
# masked forms like `sk-abc***wxyz`) and whatever follows `Bearer`.
_TOKEN = r"[A-Za-z0-9_\-.+/=~*]"
_TOKEN_PATTERNS = (
    re.compile(rf"sk-{_TOKEN}{{4,}}"),
    re.compile(rf"(?i)(bearer\s+){_TOKEN}+"),
    re.compile(rf"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?){_TOKEN}+"),
)
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)  # keeps positions


def encodings(secret: str) -> tuple[list[str], list[str]]:
    """The forms a server may echo `secret` in: (case-sensitive ones, case-insensitive ones
    lowered). Base64 is taken at each of the three byte alignments the secret can have inside
    a longer encoded string (`user:KEY`, `Bearer KEY`), without the edge groups it shares with
    its neighbours."""
    raw = secret.encode("utf-8", "surrogatepass")
    exact = [secret]
    for shift in range(3):
        b64 = base64.b64encode(b"\0" * shift + raw + b"\0\0").decode()
        core = b64[4 if shift else 0:-4]
        exact += [core, core.replace("+", "-").replace("/", "_")]
    folded = [raw.hex(), "".join(f"%{b:02x}" for b in raw), quote(secret, safe="").lower(),
              "".join(f"\\u{ord(c):04x}" for c in secret)]
    return exact, folded


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every secret, every ≥12-character run of one or of its base64, hex, percent or
    `\\u` encoding, and key-like tokens masked."""
    spans: list[tuple[int, int]] = []
    lowered = text.translate(_ASCII_LOWER)
    for secret in secrets:
        if not secret:
            continue
        exact, folded = encodings(secret)
        for haystack, forms in ((text, exact), (lowered, folded)):
            for form in forms:
                for fragment in _fragments(form):
                    spans += _occurrences(haystack, fragment)
    text = _mask(text, spans)
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + MASK, text)
    return text


def _fragments(form: str) -> set[str]:
    if len(form) <= MIN_FRAGMENT:
        return {form} if form else set()
    return {form[i:i + MIN_FRAGMENT] for i in range(len(form) - MIN_FRAGMENT + 1)}


def provider_text(text: str, secret: str | None, limit: int = 200) -> str:
    """What a provider said, fit for a message: one line, at most `limit` characters, scrubbed of
    `secret`. Cut before scrubbing too, so a hostile megabyte costs nothing."""
    return one_line(redact(" ".join(str(text)[:MAX_SCAN * 4].split())[:MAX_SCAN], secret), limit)


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


def one_line(text: str, limit: int = 200) -> str:
    """Whitespace collapsed and cut to `limit` characters, so a message stays one sentence."""
    text = " ".join(str(text).split()).rstrip(".")
    return text if len(text) <= limit else text[: limit - 1] + "…"
