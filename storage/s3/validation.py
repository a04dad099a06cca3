"""Argument checks shared by the S3 adapter and the in-memory fake, so both refuse the same input."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from storage.ports import MAX_MULTIPART_PARTS, InvalidPart, LifecycleRule, UploadedPart, check_hot_key

MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's ceiling


def check_part_number(part_number: int) -> None:
    if isinstance(part_number, bool) or not isinstance(part_number, int):
        raise ValueError(f"part number must be an integer, got {part_number!r}")
    if not 1 <= part_number <= MAX_MULTIPART_PARTS:
        raise ValueError(f"part number {part_number} is outside 1..{MAX_MULTIPART_PARTS}")


def check_part_list(parts: Sequence[UploadedPart]) -> None:
    """S3 wants at least one part, in strictly ascending order; say so before a round trip."""
    if not parts:
        raise InvalidPart("a multipart upload needs at least one part", code="InvalidPart")
    numbers = [p.part_number for p in parts]
    if any(a >= b for a, b in itertools.pairwise(numbers)):
        raise InvalidPart(
            f"parts must be in strictly ascending order, got {numbers}", code="InvalidPartOrder"
        )


def check_byte_range(byte_range: tuple[int, int] | None) -> None:
    if byte_range is not None and not 0 <= byte_range[0] <= byte_range[1]:
        raise ValueError(f"byte range must be (first, last) with 0 <= first <= last, got {byte_range}")


def check_presign_expiry(expires_in_seconds: int) -> None:
    if isinstance(expires_in_seconds, bool) or not isinstance(expires_in_seconds, int):
        raise ValueError(f"pre-signed URL expiry must be whole seconds, got {expires_in_seconds!r}")
    if not 1 <= expires_in_seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"pre-signed URL expiry {expires_in_seconds} s is outside 1..{MAX_PRESIGN_SECONDS}")


def check_lifecycle_rules(rules: Sequence[LifecycleRule]) -> None:
    for rule in rules:
        check_hot_key("lifecycle rule id", rule.rule_id)
        if rule.abort_incomplete_multipart_days is None and rule.expiration_days is None:
            raise ValueError(f"lifecycle rule {rule.rule_id!r} has no action")
        for days in (rule.abort_incomplete_multipart_days, rule.expiration_days):
            if days is not None and days < 1:
                raise ValueError(f"lifecycle rule {rule.rule_id!r}: days must be >= 1, got {days}")
    if len({r.rule_id for r in rules}) != len(rules):
        raise ValueError("lifecycle rule ids must be unique")
