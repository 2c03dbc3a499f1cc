"""The one clock: every timestamp byokctl stores or compares comes from here (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def iso(dt: datetime) -> str:
    """Format as the store's timestamp: ISO 8601 UTC with a `Z`, microseconds kept."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def stamp() -> str:
    return iso(now())
