"""Time helpers: metadata stores UTC timestamps as ISO 8601 text with nanoseconds dropped."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def now_iso() -> str:
    return now().isoformat()


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)
