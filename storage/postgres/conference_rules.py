"""Conference rules shared by the PostgreSQL conference repository and its in-memory fake."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

_STORAGE_KEY = re.compile(r"^recordings/conferences/[^/]+/[^/]+$")


def token_digest(token: str) -> str:
    """What is stored of a public-link token: its SHA-256 (the token itself is a bearer secret)."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_reason(reason: str | None) -> None:
    if reason is not None and len(reason) > 255:
        raise ValueError("reason is longer than 255 characters")


def check_storage_key(storage_key: str) -> None:
    if len(storage_key) > 1024 or not _STORAGE_KEY.match(storage_key):
        raise ValueError(
            f"storage_key {storage_key!r:.80} must look like "
            "recordings/conferences/{conf_session_id}/mix.opus"
        )


def check_recording_numbers(duration_ms: int, size_bytes: int) -> None:
    if duration_ms < 0 or size_bytes < 0:
        raise ValueError("duration_ms and size_bytes must not be negative")


def check_retention(retention_until: dt.datetime, at: dt.datetime) -> None:
    if retention_until.tzinfo is None:
        raise ValueError("retention_until has no time zone; pass an aware datetime")
    if retention_until < at:
        raise ValueError("retention_until is in the past")
